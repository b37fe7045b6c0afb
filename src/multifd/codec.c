/*
 * codec.c: picking a compression method for a channel. The methods
 * themselves are codec-zlib.c and codec-zstd.c; "none" has no codec, its
 * pages go from and to guest memory directly (send.c, recv.c).
 */
#include <stdlib.h>
#include <string.h>

#include "multifd/multifd-int.h"

int mfd_codec_init(MfdCodec *c, FyMultifdCompression kind, bool sender,
                   int level, FyError **errp)
{
    memset(c, 0, sizeof(*c));
    c->sender = sender;
    switch (kind) {
    case FY_MULTIFD_COMPRESSION_NONE:
        return 0;
    case FY_MULTIFD_COMPRESSION_ZLIB:
        c->ops = &mfd_codec_zlib;
        break;
    case FY_MULTIFD_COMPRESSION_ZSTD:
        c->ops = &mfd_codec_zstd;
        break;
    default:
        fy_error_setg(errp, "multifd-compression %d is not supported", (int)kind);
        return -1;
    }
    if (c->ops->init(c, sender, level, errp) < 0) {
        c->ops->fini(c);
        c->ops = NULL;
        return -1;
    }
    return 0;
}

void mfd_codec_fini(MfdCodec *c)
{
    if (c->ops)
        c->ops->fini(c);
    free(c->buf);
    free(c->page);
    memset(c, 0, sizeof(*c));
}
