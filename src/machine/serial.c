/*
 * serial.c: the 16550-style UART ("serial" device). See serial.h.
 *
 * Transmit model: the FIFO is a plain array with tx_fifo[0] on the line.
 * While it is non-empty, one character leaves every char_ns (host time);
 * fy_serial_transmit() pops the ones whose time has come, so the FIFO fills
 * and drains at the configured baud rate and its level is real state worth
 * migrating.
 */
#include <inttypes.h>
#include <string.h>

#include "machine/serial.h"

#define UART_BASE_BAUD 115200u

void fy_serial_reset(FySerial *s)
{
    memset(s, 0, sizeof(*s));
    s->divider = 0;
    s->iir = UART_IIR_NO_INT;
    s->lsr = UART_LSR_THRE | UART_LSR_TEMT;
    s->msr = 0xb0; /* DCD, DSR, CTS: a cable is plugged in */
}

uint64_t fy_serial_char_ns(const FySerial *s)
{
    uint64_t div = s->divider ? s->divider : 1;
    /* start bit + 8 data + stop bit */
    return 10ull * 1000000000ull * div / UART_BASE_BAUD;
}

/* LSR and IIR follow the FIFO level. */
static void serial_update(FySerial *s)
{
    if (s->tx_count == 0)
        s->lsr |= UART_LSR_THRE | UART_LSR_TEMT;
    else
        s->lsr &= (uint8_t)~(UART_LSR_THRE | UART_LSR_TEMT);
    uint8_t fifo = (s->fcr & UART_FCR_ENABLE) ? UART_IIR_FIFO : 0;
    if ((s->ier & UART_IER_THRI) && (s->lsr & UART_LSR_THRE))
        s->iir = fifo | UART_IIR_THRI;
    else
        s->iir = fifo | UART_IIR_NO_INT;
}

static void serial_push(FySerial *s, uint8_t c, uint64_t host_now)
{
    /* Without the FIFO enabled the UART holds one character. */
    unsigned cap = (s->fcr & UART_FCR_ENABLE) ? FY_UART_FIFO : 1;
    if (s->tx_count >= cap) {
        s->lost++;
        return;
    }
    if (s->tx_count == 0)
        s->tx_next_ns = host_now + fy_serial_char_ns(s);
    s->tx_fifo[s->tx_count++] = c;
    s->thr = c;
    serial_update(s);
}

void fy_serial_write(FySerial *s, unsigned off, uint8_t val, uint64_t host_now)
{
    bool dlab = s->lcr & UART_LCR_DLAB;
    switch (off & 7) {
    case UART_RBR_THR:
        if (dlab)
            s->divider = (uint16_t)((s->divider & 0xff00) | val);
        else
            serial_push(s, val, host_now);
        break;
    case UART_IER:
        if (dlab)
            s->divider = (uint16_t)((s->divider & 0x00ff) | (val << 8));
        else
            s->ier = val & 0x0f;
        break;
    case UART_IIR_FCR:
        if (val & UART_FCR_CLEAR_TX)
            s->tx_count = 0;
        s->fcr = val & (UART_FCR_ENABLE | 0xc0);
        break;
    case UART_LCR:
        s->lcr = val;
        break;
    case UART_MCR:
        s->mcr = val & 0x1f;
        break;
    case UART_LSR:
    case UART_MSR:
        break; /* read-only */
    case UART_SCR:
        s->scr = val;
        break;
    }
    serial_update(s);
}

uint8_t fy_serial_read(FySerial *s, unsigned off)
{
    bool dlab = s->lcr & UART_LCR_DLAB;
    switch (off & 7) {
    case UART_RBR_THR:
        return dlab ? (uint8_t)s->divider : s->rbr;
    case UART_IER:
        return dlab ? (uint8_t)(s->divider >> 8) : s->ier;
    case UART_IIR_FCR:
        return s->iir;
    case UART_LCR:
        return s->lcr;
    case UART_MCR:
        return s->mcr;
    case UART_LSR:
        return s->lsr;
    case UART_MSR:
        return s->msr;
    default:
        return s->scr;
    }
}

size_t fy_serial_transmit(FySerial *s, uint64_t host_now, uint8_t *out, size_t max)
{
    size_t n = 0;
    uint64_t char_ns = fy_serial_char_ns(s);
    while (n < max && s->tx_count > 0 && host_now >= s->tx_next_ns) {
        out[n++] = s->tx_fifo[0];
        memmove(s->tx_fifo, s->tx_fifo + 1, --s->tx_count);
        s->tx_next_ns += char_ns;
    }
    /* Far behind (the host was busy): do not burst to catch up later. */
    if (s->tx_count > 0 && s->tx_next_ns + 16 * char_ns < host_now)
        s->tx_next_ns = host_now;
    s->sent += n;
    serial_update(s);
    return n;
}

uint64_t fy_serial_deadline(const FySerial *s)
{
    return s->tx_count ? s->tx_next_ns : UINT64_MAX;
}

void fy_serial_vm_start(FySerial *s, uint64_t host_now)
{
    s->tx_next_ns = host_now + fy_serial_char_ns(s);
}

/* The stream can say anything: LSR/IIR are derived from the FIFO level, so
 * recompute them rather than trust them (the FIFO count itself is bounded
 * by the VARRAY's capacity in the engine). */
static int serial_post_load(void *opaque, int version_id, FyError **errp)
{
    FySerial *s = opaque;
    if (!(s->fcr & UART_FCR_ENABLE) && s->tx_count > 1) {
        fy_error_setg(errp, "serial: %u bytes queued with the FIFO disabled",
                      s->tx_count);
        return -1;
    }
    serial_update(s);
    return 0;
}

const VMStateDescription vmstate_serial = {
    .name = "serial",
    .version_id = 1,
    .minimum_version_id = 1,
    .post_load = serial_post_load,
    .fields = (const VMStateField[]) {
        VMSTATE_UINT16(divider, FySerial),
        VMSTATE_UINT8(rbr, FySerial),
        VMSTATE_UINT8(thr, FySerial),
        VMSTATE_UINT8(ier, FySerial),
        VMSTATE_UINT8(iir, FySerial),
        VMSTATE_UINT8(lcr, FySerial),
        VMSTATE_UINT8(mcr, FySerial),
        VMSTATE_UINT8(lsr, FySerial),
        VMSTATE_UINT8(msr, FySerial),
        VMSTATE_UINT8(scr, FySerial),
        VMSTATE_UINT8(fcr, FySerial),
        VMSTATE_UINT8(tx_count, FySerial),
        VMSTATE_VARRAY_UINT8(tx_fifo, FySerial, tx_count, vmstate_info_uint8, uint8_t),
        VMSTATE_END_OF_LIST()
    },
};
