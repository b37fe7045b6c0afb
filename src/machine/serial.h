/*
 * serial.h: a 16550-style UART ("serial" device) with a 16-byte transmit
 * FIFO, driven by the guest through its eight registers and drained by the
 * machine's I/O thread at the line rate (10 bits per character at
 * 115200 / divisor baud) to a character backend.
 *
 * Registers (offset: read / write): 0 RBR / THR (DLL when LCR.DLAB),
 * 1 IER (DLM when DLAB), 2 IIR / FCR, 3 LCR, 4 MCR, 5 LSR, 6 MSR, 7 SCR.
 * LSR.THRE and LSR.TEMT are set exactly when the FIFO is empty; a THR write
 * with the FIFO full is lost (counted in `lost`), so the guest driver waits
 * for THRE and then writes up to 16 bytes, as a 16550 FIFO driver does.
 *
 * Locking: every function runs under the machine's device lock.
 */
#ifndef FERRY_MACHINE_SERIAL_H
#define FERRY_MACHINE_SERIAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry/vmstate.h"

#define FY_UART_FIFO 16

enum {
    UART_RBR_THR = 0, UART_IER = 1, UART_IIR_FCR = 2, UART_LCR = 3,
    UART_MCR = 4, UART_LSR = 5, UART_MSR = 6, UART_SCR = 7,
};
#define UART_LCR_DLAB  0x80
#define UART_LSR_DR    0x01
#define UART_LSR_THRE  0x20
#define UART_LSR_TEMT  0x40
#define UART_IER_THRI  0x02
#define UART_IIR_NO_INT 0x01
#define UART_IIR_THRI  0x02
#define UART_IIR_FIFO  0xc0
#define UART_FCR_ENABLE 0x01
#define UART_FCR_CLEAR_TX 0x04

typedef struct FySerial {
    /* migrated */
    uint16_t divider;
    uint8_t rbr, thr, ier, iir, lcr, mcr, lsr, msr, scr, fcr;
    uint8_t tx_count;               /* bytes in tx_fifo, 0..16 */
    uint8_t tx_fifo[FY_UART_FIFO];  /* tx_fifo[0] leaves first */
    /* host side */
    uint64_t tx_next_ns;    /* host time the character in tx_fifo[0] is out */
    uint64_t sent;          /* characters handed to the backend */
    uint64_t lost;          /* THR writes with a full FIFO */
} FySerial;

extern const VMStateDescription vmstate_serial;

/* Power-on state: no divisor latch, FIFO off, empty. */
void fy_serial_reset(FySerial *s);
void fy_serial_write(FySerial *s, unsigned off, uint8_t val, uint64_t host_now);
uint8_t fy_serial_read(FySerial *s, unsigned off);
/* Time one character takes on the line, in ns. */
uint64_t fy_serial_char_ns(const FySerial *s);
/* Move the characters whose transmit time has come (at most max) into out;
 * returns how many. */
size_t fy_serial_transmit(FySerial *s, uint64_t host_now, uint8_t *out, size_t max);
/* Host time the next character is due, or UINT64_MAX with an empty FIFO. */
uint64_t fy_serial_deadline(const FySerial *s);
/* The destination's transmitter starts afresh: the first queued character
 * is due one character time after start. */
void fy_serial_vm_start(FySerial *s, uint64_t host_now);

#endif
