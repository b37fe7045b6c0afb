/*
 * iov.c: pages as I/O vectors. Adjacent pages share one entry, so a
 * packet of 128 consecutive pages is a single 512 KiB iovec and the
 * kernel copies it in one go; reading fills vectors until they are full.
 */
#include <limits.h>

#include "multifd/multifd-int.h"

int mfd_page_iov(struct iovec *iov, uint8_t *host, const uint64_t *offsets,
                 uint32_t n)
{
    int cnt = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *p = host + offsets[i];
        if (cnt && (uint8_t *)iov[cnt - 1].iov_base + iov[cnt - 1].iov_len == p) {
            iov[cnt - 1].iov_len += MFD_PAGE;
            continue;
        }
        iov[cnt].iov_base = p;
        iov[cnt].iov_len = MFD_PAGE;
        cnt++;
    }
    return cnt;
}

static size_t iov_total(const struct iovec *iov, int iovcnt)
{
    size_t t = 0;
    for (int i = 0; i < iovcnt; i++)
        t += iov[i].iov_len;
    return t;
}

int mfd_readv_all(FyChannel *c, struct iovec *iov, int iovcnt, FyError **errp)
{
    size_t want = iov_total(iov, iovcnt), done = 0;

    while (iovcnt > 0) {
        if (iov->iov_len == 0) {
            iov++;
            iovcnt--;
            continue;
        }
        ssize_t n = fy_channel_readv(c, iov, iovcnt > IOV_MAX ? IOV_MAX : iovcnt,
                                     errp);
        if (n == FY_IO_AGAIN) {
            if (fy_channel_wait(c, false, -1, errp) < 0)
                return -1;
            continue;
        }
        if (n < 0)
            return -1;
        if (n == 0) {
            if (done == 0)
                return 1;
            fy_error_setg(errp, "%s: end of stream after %zu of %zu bytes",
                          c->name, done, want);
            return -1;
        }
        done += (size_t)n;
        size_t left = (size_t)n;
        while (left) {
            size_t k = left < iov->iov_len ? left : iov->iov_len;
            iov->iov_base = (uint8_t *)iov->iov_base + k;
            iov->iov_len -= k;
            left -= k;
            if (iov->iov_len == 0) {
                iov++;
                iovcnt--;
            }
        }
    }
    return 0;
}
