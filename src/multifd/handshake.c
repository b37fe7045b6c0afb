/*
 * handshake.c: the 64 bytes each multifd channel starts with
 * (QEMU's MultiFDInit_t), and telling a multifd channel from the main one.
 *
 *   0 be32 magic 0x11223344   4 be32 version 1   8 uuid[16]
 *  24 u8 id   25 u8 unused1[7]   32 u64 unused2[4]
 *
 * The unused bytes are sent as zero and ignored on receipt (QEMU does not
 * look at them either, so a future QEMU may use them).
 */
#include <stdio.h>
#include <string.h>

#include "multifd/multifd-int.h"

void fy_multifd_init_encode(uint8_t out[FY_MULTIFD_INIT_LEN],
                            const uint8_t uuid[16], uint8_t id)
{
    memset(out, 0, FY_MULTIFD_INIT_LEN);
    mfd_put_be32(out, FY_MULTIFD_MAGIC);
    mfd_put_be32(out + 4, FY_MULTIFD_VERSION);
    memcpy(out + 8, uuid, 16);
    out[24] = id;
}

/* QEMU's qemu_uuid_unparse: 8-4-4-4-12 lowercase hex. */
static void uuid_str(const uint8_t u[16], char out[37])
{
    snprintf(out, 37,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
             "%02x%02x%02x%02x%02x%02x",
             u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9],
             u[10], u[11], u[12], u[13], u[14], u[15]);
}

int fy_multifd_init_decode(const uint8_t in[FY_MULTIFD_INIT_LEN],
                           const uint8_t expected_uuid[16], int channels,
                           FyError **errp)
{
    uint32_t magic = mfd_get_be32(in), version = mfd_get_be32(in + 4);
    uint8_t id = in[24];

    if (magic != FY_MULTIFD_MAGIC) {
        fy_error_setg(errp, "multifd handshake: field 'magic' = 0x%08x, "
                      "expected 0x%08x", magic, FY_MULTIFD_MAGIC);
        return -1;
    }
    if (version != FY_MULTIFD_VERSION) {
        fy_error_setg(errp, "multifd handshake: field 'version' = %u, "
                      "expected %u", version, FY_MULTIFD_VERSION);
        return -1;
    }
    if (memcmp(in + 8, expected_uuid, 16) != 0) {
        char got[37], want[37];
        uuid_str(in + 8, got);
        uuid_str(expected_uuid, want);
        fy_error_setg(errp, "multifd handshake: received uuid '%s' and "
                      "expected uuid '%s' for channel %u", got, want, id);
        return -1;
    }
    if ((int)id >= channels) {
        fy_error_setg(errp, "multifd handshake: field 'id' = %u, but there "
                      "are only %d channels", id, channels);
        return -1;
    }
    return id;
}

int fy_multifd_read_init(FyChannel *c, const void *prefix, size_t prefix_len,
                         const uint8_t expected_uuid[16], int channels,
                         FyError **errp)
{
    uint8_t buf[FY_MULTIFD_INIT_LEN];

    if (prefix_len > sizeof(buf)) {
        fy_error_setg(errp, "%s: multifd handshake: %zu bytes already read, "
                      "more than the %d it has", c->name, prefix_len,
                      FY_MULTIFD_INIT_LEN);
        return -1;
    }
    if (prefix_len)
        memcpy(buf, prefix, prefix_len);
    int r = fy_channel_read_all(c, buf + prefix_len, sizeof(buf) - prefix_len,
                                errp);
    if (r == 1) {
        fy_error_setg(errp, "%s: multifd handshake: end of stream after %zu "
                      "of %d bytes", c->name, prefix_len, FY_MULTIFD_INIT_LEN);
        return -1;
    }
    if (r < 0) {
        fy_error_prepend(errp, "multifd handshake: ");
        return -1;
    }
    int id = fy_multifd_init_decode(buf, expected_uuid, channels, errp);
    if (id < 0)
        fy_error_prepend(errp, "%s: ", c->name);
    return id;
}

int fy_multifd_write_init(FyChannel *c, const uint8_t uuid[16], uint8_t id,
                          FyError **errp)
{
    uint8_t buf[FY_MULTIFD_INIT_LEN];
    fy_multifd_init_encode(buf, uuid, id);
    if (fy_channel_write_all(c, buf, sizeof(buf), errp) < 0) {
        fy_error_prepend(errp, "multifd channel %u: handshake: ", id);
        return -1;
    }
    return 0;
}

bool fy_multifd_is_multifd_magic(const uint8_t first4[4])
{
    return mfd_get_be32(first4) == FY_MULTIFD_MAGIC;
}
