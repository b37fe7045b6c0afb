/*
 * commands.c: QEMU_VM_COMMAND records (`0x08, be16 cmd, be16 len, payload`).
 *
 * The table gives each command's name and its length rule: a fixed length,
 * or -1 for the variable ones, whose payload shape is checked here so that
 * a hook only ever sees a well-formed payload:
 *   POSTCOPY_ADVISE       0 or 16
 *   POSTCOPY_RAM_DISCARD  u8 version 0, u8 n, name[n], u8 0, k x 16 bytes
 *   RECV_BITMAP           u8 n, name[n]   (len == n + 1)
 * PACKAGED's be32 length of the nested stream is bounded by
 * FY_MAX_PACKAGED_SIZE.
 */
#include <inttypes.h>

#include "savevm/savevm-int.h"

static const struct {
    const char *name;
    int len; /* -1: variable */
} mig_cmds[MIG_CMD_MAX] = {
    [MIG_CMD_INVALID]              = { "INVALID", -1 },
    [MIG_CMD_OPEN_RETURN_PATH]     = { "OPEN_RETURN_PATH", 0 },
    [MIG_CMD_PING]                 = { "PING", 4 },
    [MIG_CMD_POSTCOPY_ADVISE]      = { "POSTCOPY_ADVISE", -1 },
    [MIG_CMD_POSTCOPY_LISTEN]      = { "POSTCOPY_LISTEN", 0 },
    [MIG_CMD_POSTCOPY_RUN]         = { "POSTCOPY_RUN", 0 },
    [MIG_CMD_POSTCOPY_RAM_DISCARD] = { "POSTCOPY_RAM_DISCARD", -1 },
    [MIG_CMD_PACKAGED]             = { "PACKAGED", 4 },
    [MIG_CMD_ENABLE_COLO]          = { "ENABLE_COLO", 0 },
    [MIG_CMD_POSTCOPY_RESUME]      = { "POSTCOPY_RESUME", 0 },
    [MIG_CMD_RECV_BITMAP]          = { "RECV_BITMAP", -1 },
    [MIG_CMD_SWITCHOVER_START]     = { "SWITCHOVER_START", 0 },
};

const char *fy_mig_cmd_name(unsigned cmd)
{
    return cmd < MIG_CMD_MAX ? mig_cmds[cmd].name : "UNKNOWN";
}

static int check_ram_discard(const uint8_t *p, uint16_t len, FyError **errp)
{
    if (len < 3) {
        fy_error_setg(errp, "payload of %u bytes is too short", len);
        return -1;
    }
    if (p[0] != 0) {
        fy_error_setg(errp, "invalid version %u (expected 0)", p[0]);
        return -1;
    }
    size_t namelen = p[1];
    if (2 + namelen + 1 > len) {
        fy_error_setg(errp, "RAM block name of %zu bytes overruns the %u byte "
                      "payload", namelen, len);
        return -1;
    }
    if (p[2 + namelen] != 0) {
        fy_error_setg(errp, "missing nil after the RAM block name (found 0x%02x)",
                      p[2 + namelen]);
        return -1;
    }
    size_t ranges = len - (3 + namelen);
    if (ranges % 16) {
        fy_error_setg(errp, "%zu bytes of ranges is not a multiple of 16", ranges);
        return -1;
    }
    return 0;
}

int fy_mig_cmd_check_header(uint16_t cmd, uint16_t len, FyError **errp)
{
    if (cmd == MIG_CMD_INVALID || cmd >= MIG_CMD_MAX) {
        fy_error_setg(errp, "MIG_CMD 0x%x unknown (len 0x%x)", cmd, len);
        return -1;
    }
    if (mig_cmds[cmd].len >= 0 && mig_cmds[cmd].len != len) {
        fy_error_setg(errp, "command %s received with bad length - expecting "
                      "%d, got %u", mig_cmds[cmd].name, mig_cmds[cmd].len, len);
        return -1;
    }
    return 0;
}

int fy_mig_cmd_check(uint16_t cmd, const uint8_t *payload, uint16_t len,
                     FyError **errp)
{
    if (fy_mig_cmd_check_header(cmd, len, errp) < 0)
        return -1;
    FyError *err = NULL;
    switch (cmd) {
    case MIG_CMD_POSTCOPY_ADVISE:
        if (len != 0 && len != 16)
            fy_error_setg(&err, "invalid length %u (expected 0 or 16)", len);
        break;
    case MIG_CMD_POSTCOPY_RAM_DISCARD:
        check_ram_discard(payload, len, &err);
        break;
    case MIG_CMD_RECV_BITMAP:
        if (len < 1 || (size_t)payload[0] + 1 != len)
            fy_error_setg(&err, "length %u does not match the RAM block name "
                          "length %d + 1", len, len ? payload[0] : -1);
        break;
    case MIG_CMD_PACKAGED: {
        uint32_t n = (uint32_t)payload[0] << 24 | (uint32_t)payload[1] << 16 |
                     (uint32_t)payload[2] << 8 | payload[3];
        if (n > FY_MAX_PACKAGED_SIZE)
            fy_error_setg(&err, "nested stream of %" PRIu32 " bytes is larger "
                          "than the %u byte limit", n, FY_MAX_PACKAGED_SIZE);
        break;
    }
    default:
        break;
    }
    if (err) {
        fy_error_prepend(&err, "command %s: ", mig_cmds[cmd].name);
        fy_error_propagate(errp, err);
        return -1;
    }
    return 0;
}

void fy_savevm_command_send(FyStream *f, enum MigCmd cmd, uint16_t len,
                            const uint8_t *payload)
{
    FyError *err = NULL;

    /* A malformed command is a bug in the sender: fail the stream rather
     * than send what the destination will refuse. */
    if (fy_mig_cmd_check((uint16_t)cmd, payload, len, &err) < 0) {
        fy_error_prepend(&err, "sending a command: ");
        fy_stream_set_error(f, err);
        return;
    }
    fy_put_byte(f, QEMU_VM_COMMAND);
    fy_put_be16(f, (uint16_t)cmd);
    fy_put_be16(f, len);
    if (len)
        fy_put_buffer(f, payload, len);
    /* Commands synchronise the two sides (PING, LISTEN, RUN): send now. */
    fy_stream_flush(f);
}

void fy_savevm_send_ping(FyStream *f, uint32_t value)
{
    uint8_t b[4] = { value >> 24, value >> 16, value >> 8, value };
    fy_savevm_command_send(f, MIG_CMD_PING, sizeof(b), b);
}

void fy_savevm_send_packaged(FyStream *f, const uint8_t *buf, size_t len)
{
    if (len > FY_MAX_PACKAGED_SIZE) {
        fy_stream_seterr(f, "sending a command: command PACKAGED: nested "
                         "stream of %zu bytes is larger than the %u byte limit",
                         len, FY_MAX_PACKAGED_SIZE);
        return;
    }
    uint32_t n = (uint32_t)len;
    uint8_t b[4] = { n >> 24, n >> 16, n >> 8, n };
    fy_savevm_command_send(f, MIG_CMD_PACKAGED, sizeof(b), b);
    fy_put_buffer(f, buf, len);
}
