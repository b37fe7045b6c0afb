/*
 * chardev.h: where the UART's bytes go: "none", "stdio", "file:PATH"
 * (created if needed, appended to, so a source and a destination can share
 * one log) or "unix:PATH" (connect to a listening AF_UNIX stream socket).
 *
 * Writes come from the machine's I/O thread only. A backend that fails
 * (peer gone, disk full) keeps its first error and drops later output: the
 * guest's UART never blocks on a broken host side.
 */
#ifndef FERRY_MACHINE_CHARDEV_H
#define FERRY_MACHINE_CHARDEV_H

#include <stddef.h>

#include "ferry/error.h"

typedef struct FyChardev FyChardev;

FyChardev *fy_chardev_open(const char *spec, FyError **errp);
/* Write all of buf, or record the error and drop. */
void fy_chardev_write(FyChardev *c, const void *buf, size_t len);
/* The first write error, or NULL. */
const FyError *fy_chardev_error(const FyChardev *c);
/* Unblock a write stuck on a full socket (before joining the writer). */
void fy_chardev_shutdown(FyChardev *c);
void fy_chardev_close(FyChardev *c);

#endif
