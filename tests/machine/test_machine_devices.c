/*
 * test_machine_devices.c: the clock, the UART and ferry-timer, on their own
 * (machine/ internals) and inside a running machine: the clock stops with
 * the VM and resumes without a jump, the UART model and its backends, the
 * timer's versions, subsection and load-time checks.
 */
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "machine-test.h"
#include "machine/clock.h"
#include "machine/serial.h"
#include "machine/timer.h"

/* ---- clock ---- */

static void test_clock_stops_with_vm(void)
{
    FyMachineConfig c = mt_config(FY_WORKLOAD_IDLE, 1, 4, 1);
    FyMachine *m = mt_new(&c);
    T_ASSERT(m);
    if (!m)
        return;
    T_EQ_INT(fy_machine_clock_ns(m), 0);
    mt_sleep_ms(20);
    T_EQ_INT(fy_machine_clock_ns(m), 0);
    fy_machine_start(m, NULL);
    mt_sleep_ms(30);
    uint64_t a = fy_machine_clock_ns(m);
    T_ASSERT(a >= 25000000ull);
    fy_machine_stop(m, NULL);
    uint64_t b = fy_machine_clock_ns(m);
    T_ASSERT(b >= a);
    mt_sleep_ms(40);
    T_EQ_INT(fy_machine_clock_ns(m), b);
    fy_machine_start(m, NULL);
    uint64_t c2 = fy_machine_clock_ns(m);
    T_ASSERT(c2 >= b && c2 - b < 20000000ull); /* no 40 ms jump */
    fy_machine_stop(m, NULL);
    fy_machine_free(m);
}

static void test_clock_migrates(void)
{
    FyClock src, dst;
    fy_clock_init(&src);
    fy_clock_init(&dst);
    fy_clock_start(&src);
    mt_sleep_ms(20);
    fy_clock_stop(&src);
    uint64_t t = fy_clock_get_ns(&src);
    size_t len;
    uint8_t *bytes = mt_save_vmsd(&vmstate_clock, &src, &len);
    T_ASSERT(bytes && len == 8);
    /* The destination's own clock had run for a while: the load wins. */
    fy_clock_start(&dst);
    mt_sleep_ms(50);
    fy_clock_stop(&dst);
    char msg[256];
    T_EQ_INT(mt_load_vmsd(&vmstate_clock, &dst, 1, bytes, len, msg, sizeof(msg)), 0);
    T_EQ_INT(fy_clock_get_ns(&dst), t);
    mt_sleep_ms(10);
    T_EQ_INT(fy_clock_get_ns(&dst), t);
    fy_clock_start(&dst);
    uint64_t u = fy_clock_get_ns(&dst);
    T_ASSERT(u >= t && u - t < 10000000ull);
    free(bytes);
    fy_clock_destroy(&src);
    fy_clock_destroy(&dst);
}

/* ---- UART ---- */

static void test_uart_registers(void)
{
    FySerial s;
    fy_serial_reset(&s);
    T_EQ_INT(fy_serial_read(&s, UART_LSR) & (UART_LSR_THRE | UART_LSR_TEMT),
             UART_LSR_THRE | UART_LSR_TEMT);
    fy_serial_write(&s, UART_LCR, 0x83, 0);
    fy_serial_write(&s, UART_RBR_THR, 0x0c, 0);   /* DLL */
    fy_serial_write(&s, UART_IER, 0x00, 0);       /* DLM */
    T_EQ_INT(fy_serial_read(&s, UART_RBR_THR), 0x0c);
    fy_serial_write(&s, UART_LCR, 0x03, 0);
    T_EQ_INT(s.divider, 12);                      /* 9600 baud */
    T_EQ_INT(fy_serial_char_ns(&s), 10ull * 1000000000ull * 12 / 115200);
    fy_serial_write(&s, UART_SCR, 0x5a, 0);
    T_EQ_INT(fy_serial_read(&s, UART_SCR), 0x5a);

    /* FIFO off: one byte of holding register, the next is lost. */
    fy_serial_write(&s, UART_RBR_THR, 'a', 0);
    fy_serial_write(&s, UART_RBR_THR, 'b', 0);
    T_EQ_INT(s.tx_count, 1);
    T_EQ_INT(s.lost, 1);
    T_EQ_INT(fy_serial_read(&s, UART_LSR) & UART_LSR_THRE, 0);

    /* FIFO on (and cleared): 16 bytes, the 17th is lost. */
    fy_serial_write(&s, UART_IIR_FCR, UART_FCR_ENABLE | UART_FCR_CLEAR_TX, 0);
    T_EQ_INT(s.tx_count, 0);
    T_EQ_INT(fy_serial_read(&s, UART_IIR_FCR) & 0xc0, 0xc0);
    fy_serial_write(&s, UART_IER, UART_IER_THRI, 0);
    T_EQ_INT(fy_serial_read(&s, UART_IIR_FCR) & 0x0f, UART_IIR_THRI);
    uint64_t t0 = 1000000;
    for (int i = 0; i < 17; i++)
        fy_serial_write(&s, UART_RBR_THR, (uint8_t)('A' + i), t0);
    T_EQ_INT(s.tx_count, 16);
    T_EQ_INT(s.lost, 2);
    T_EQ_INT(fy_serial_read(&s, UART_IIR_FCR) & 0x0f, UART_IIR_NO_INT);

    /* The line rate decides what has left. */
    uint64_t cn = fy_serial_char_ns(&s);
    uint8_t out[32];
    T_EQ_INT(fy_serial_transmit(&s, t0 + cn - 1, out, sizeof(out)), 0);
    T_EQ_INT(fy_serial_transmit(&s, t0 + 3 * cn, out, sizeof(out)), 3);
    T_EQ_MEM(out, "ABC", 3);
    T_EQ_INT(s.tx_count, 13);
    T_EQ_INT(fy_serial_deadline(&s), t0 + 4 * cn);
    T_EQ_INT(fy_serial_transmit(&s, t0 + 16 * cn, out, sizeof(out)), 13);
    T_EQ_MEM(out, "DEFGHIJKLMNOP", 13);
    T_EQ_INT(fy_serial_deadline(&s), UINT64_MAX);
    T_EQ_INT(fy_serial_read(&s, UART_LSR) & UART_LSR_TEMT, UART_LSR_TEMT);
    T_EQ_INT(s.sent, 16);
}

static void test_uart_vmstate(void)
{
    FySerial s, d;
    fy_serial_reset(&s);
    fy_serial_reset(&d);
    fy_serial_write(&s, UART_IIR_FCR, UART_FCR_ENABLE, 0);
    fy_serial_write(&s, UART_SCR, 0x77, 0);
    for (int i = 0; i < 5; i++)
        fy_serial_write(&s, UART_RBR_THR, (uint8_t)('v' + i), 0);
    size_t len;
    uint8_t *b = mt_save_vmsd(&vmstate_serial, &s, &len);
    T_ASSERT(b != NULL);
    if (!b)
        return;
    T_EQ_INT(len, 2 + 10 + 1 + 5); /* divider, 10 registers, count, FIFO */
    char msg[256];
    T_EQ_INT(mt_load_vmsd(&vmstate_serial, &d, 1, b, len, msg, sizeof(msg)), 0);
    T_EQ_INT(d.tx_count, 5);
    T_EQ_MEM(d.tx_fifo, "vwxyz", 5);
    T_EQ_INT(d.scr, 0x77);
    T_EQ_INT(d.lsr & UART_LSR_THRE, 0);
    json_t *js = vmstate_to_json(&vmstate_serial, &s), *jd = vmstate_to_json(&vmstate_serial, &d);
    T_ASSERT(json_equal(js, jd));
    json_decref(js);
    json_decref(jd);

    /* Hostile: 17 bytes in a 16-byte FIFO; bytes queued with the FIFO off. */
    b[len - 6] = 17;
    T_EQ_INT(mt_load_vmsd(&vmstate_serial, &d, 1, b, len, msg, sizeof(msg)), -1);
    T_CONTAINS(msg, "tx_fifo");
    b[len - 6] = 5;
    b[2 + 9] = 0; /* fcr */
    T_EQ_INT(mt_load_vmsd(&vmstate_serial, &d, 1, b, len, msg, sizeof(msg)), -1);
    T_CONTAINS(msg, "5 bytes queued with the FIFO disabled");
    free(b);
}

/* Lines "ferry guest: step N time S.MMMs", N increasing. */
static int check_lines(const char *text, uint64_t every)
{
    int lines = 0;
    uint64_t last = 0;
    const char *p = text;
    while (*p) {
        unsigned long long step, sec, ms;
        if (sscanf(p, "ferry guest: step %llu time %llu.%llus", &step, &sec, &ms) != 3) {
            T_FAIL("bad line at '%.40s'", p);
            return lines;
        }
        T_ASSERT(step >= every && step > last);
        last = step;
        lines++;
        const char *nl = strchr(p, '\n');
        if (!nl)
            break;
        p = nl + 1;
    }
    return lines;
}

static void test_serial_file(void)
{
    char path[] = "/tmp/ferry-serial-XXXXXX";
    int fd = mkstemp(path);
    T_ASSERT(fd >= 0);
    close(fd);
    FyMachineConfig c = mt_config(FY_WORKLOAD_SWEEP, 2, 8, 1);
    snprintf(c.serial, sizeof(c.serial), "file:%s", path);
    c.serial_every = 25600;
    FyMachine *m = mt_new(&c);
    T_ASSERT(m);
    if (!m)
        return;
    uint64_t t0 = mt_now_ns();
    fy_machine_start(m, NULL);
    mt_sleep_ms(150);
    /* Enough steps for a few lines, however loaded the host is. */
    T_ASSERT(mt_wait_steps(m, 0, 4 * 25600));
    fy_machine_stop(m, NULL);
    uint64_t ms = (mt_now_ns() - t0) / 1000000 + 1;
    FyMachineStats st;
    fy_machine_get_stats(m, &st);
    char buf[16384] = { 0 };
    fd = open(path, O_RDONLY);
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    T_EQ_INT(n, st.serial_bytes);
    /* ~115200 baud: about 11.5 bytes per ms at most, some 1.7 KB in
     * 150 ms; the run's own length bounds it on a slow host. */
    T_ASSERT(n > 100 && (uint64_t)n < 12 * ms + 64);
    /* The last line may be cut where the stop caught the UART. */
    char *lastnl = strrchr(buf, '\n');
    if (lastnl)
        lastnl[1] = '\0';
    int lines = check_lines(buf, 25600);
    printf("# %zd bytes, %d whole lines\n", n, lines);
    T_ASSERT(lines >= 2);
    json_t *j = fy_machine_state_json(m);
    T_ASSERT(json_integer_value(json_object_get(json_object_get(j, "serial"), "divider")) == 1);
    T_ASSERT(json_integer_value(json_object_get(json_object_get(j, "serial"), "lcr")) == 3);
    json_decref(j);
    fy_machine_free(m);
    unlink(path);
}

static void test_serial_unix(void)
{
    char path[64];
    snprintf(path, sizeof(path), "/tmp/ferry-serial-%d.sock", (int)getpid());
    unlink(path);
    int ls = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    T_EQ_INT(bind(ls, (struct sockaddr *)&sa, sizeof(sa)), 0);
    T_EQ_INT(listen(ls, 1), 0);
    FyMachineConfig c = mt_config(FY_WORKLOAD_SWEEP, 1, 8, 1);
    snprintf(c.serial, sizeof(c.serial), "unix:%s", path);
    c.serial_every = 25600;
    FyMachine *m = mt_new(&c);
    T_ASSERT(m);
    int cs = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
    T_ASSERT(cs >= 0);
    if (!m || cs < 0)
        goto out;
    fy_machine_start(m, NULL);
    char buf[4096] = { 0 };
    size_t got = 0;
    uint64_t t0 = mt_now_ns();
    while (got < 200 && mt_now_ns() - t0 < 5000000000ull) {
        ssize_t n = recv(cs, buf + got, sizeof(buf) - 1 - got, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    T_ASSERT(got >= 200);
    T_EQ_MEM(buf, "ferry guest: step ", 18);
    /* The listener goes away: the guest runs on, output is dropped. */
    close(cs);
    cs = -1;
    mt_sleep_ms(100);
    fy_machine_stop(m, NULL);
    uint64_t s = fy_machine_vcpu_steps(m, 0);
    fy_machine_start(m, NULL);
    mt_sleep_ms(20);
    fy_machine_stop(m, NULL);
    T_ASSERT(fy_machine_vcpu_steps(m, 0) > s);
out:
    if (cs >= 0)
        close(cs);
    fy_machine_free(m);
    close(ls);
    unlink(path);
}

/* ---- ferry-timer ---- */

static void timer_v2_stream(MtBuf *b, uint32_t ctrl, uint64_t period, uint64_t expire,
                            uint64_t fired, int pending)
{
    b->len = 0;
    mt_be32(b, ctrl);
    mt_be64(b, period);
    mt_be64(b, expire);
    mt_be64(b, fired);
    if (pending >= 0) {
        mt_u8(b, 0x05);
        mt_str(b, "ferry-timer/pending");
        mt_be32(b, 1);
        mt_be32(b, (uint32_t)pending);
        mt_be64(b, 4242);
    }
}

static void test_timer_versions(void)
{
    FyClock clk;
    fy_clock_init(&clk);
    clk.ns = 5000000; /* guest time 5 ms, stopped */
    FyTimer t;
    fy_timer_init(&t, &clk);
    MtBuf b;
    char msg[512];

    /* A version 2 stream has no count: post_load derives it. */
    timer_v2_stream(&b, FY_TIMER_EN | FY_TIMER_PERIODIC, 1000000, 5300000, 7, -1);
    t.pending = 9;
    T_EQ_INT(mt_load_vmsd(&vmstate_ferry_timer, &t, 2, b.d, b.len, msg, sizeof(msg)), 0);
    T_EQ_INT(t.count, 300000);
    T_EQ_INT(t.fired, 7);
    T_EQ_INT(t.pending, 0); /* no subsection: nothing pending */

    timer_v2_stream(&b, FY_TIMER_EN, 1000000, 5300000, 7, 3);
    T_EQ_INT(mt_load_vmsd(&vmstate_ferry_timer, &t, 2, b.d, b.len, msg, sizeof(msg)), 0);
    T_EQ_INT(t.pending, 3);
    T_EQ_INT(t.pending_since_ns, 4242);

    /* Versions outside [2, 3] are refused, naming both. */
    T_EQ_INT(mt_load_vmsd(&vmstate_ferry_timer, &t, 1, b.d, b.len, msg, sizeof(msg)), -1);
    T_CONTAINS(msg, "ferry-timer");
    T_CONTAINS(msg, "1");
    T_EQ_INT(mt_load_vmsd(&vmstate_ferry_timer, &t, 4, b.d, b.len, msg, sizeof(msg)), -1);
    T_CONTAINS(msg, "4");

    /* Hostile values are refused by post_load. */
    timer_v2_stream(&b, 0x80 | FY_TIMER_EN, 1000000, 5300000, 0, -1);
    T_EQ_INT(mt_load_vmsd(&vmstate_ferry_timer, &t, 2, b.d, b.len, msg, sizeof(msg)), -1);
    T_CONTAINS(msg, "unknown ctrl bits 0x81");
    timer_v2_stream(&b, FY_TIMER_EN | FY_TIMER_PERIODIC, 0, 5300000, 0, -1);
    T_EQ_INT(mt_load_vmsd(&vmstate_ferry_timer, &t, 2, b.d, b.len, msg, sizeof(msg)), -1);
    T_CONTAINS(msg, "periodic with period 0 ns");
    timer_v2_stream(&b, FY_TIMER_EN, 1000, UINT64_MAX, 0, -1);
    T_EQ_INT(mt_load_vmsd(&vmstate_ferry_timer, &t, 2, b.d, b.len, msg, sizeof(msg)), -1);
    T_CONTAINS(msg, "more than an hour past the guest clock");

    /* Version 3 round trip: count is latched by pre_save. */
    fy_timer_init(&t, &clk);
    fy_timer_program(&t, clk.ns, 2000000, true);
    fy_timer_run(&t, clk.ns + 4500000);   /* two expiries */
    T_EQ_INT(t.fired, 2);
    T_EQ_INT(t.pending, 2);
    T_EQ_INT(t.expire_ns, clk.ns + 6000000);
    clk.ns += 5000000;
    size_t len;
    uint8_t *bytes = mt_save_vmsd(&vmstate_ferry_timer, &t, &len);
    T_EQ_INT(t.count, 1000000);
    FyTimer u;
    fy_timer_init(&u, &clk);
    T_EQ_INT(mt_load_vmsd(&vmstate_ferry_timer, &u, 3, bytes, len, msg, sizeof(msg)), 0);
    json_t *jt = vmstate_to_json(&vmstate_ferry_timer, &t);
    json_t *ju = vmstate_to_json(&vmstate_ferry_timer, &u);
    T_ASSERT(json_equal(jt, ju));
    T_ASSERT(json_object_get(jt, "ferry-timer/pending") != NULL);
    json_decref(jt);
    json_decref(ju);
    free(bytes);

    /* Acknowledged: the subsection is not needed and not sent. */
    T_EQ_INT(fy_timer_ack(&t), 2);
    bytes = mt_save_vmsd(&vmstate_ferry_timer, &t, &len);
    T_EQ_INT(len, 4 + 8 * 4);
    jt = vmstate_to_json(&vmstate_ferry_timer, &t);
    T_ASSERT(json_object_get(jt, "ferry-timer/pending") == NULL);
    json_decref(jt);
    u.pending = 5;
    T_EQ_INT(mt_load_vmsd(&vmstate_ferry_timer, &u, 3, bytes, len, msg, sizeof(msg)), 0);
    T_EQ_INT(u.pending, 0);
    free(bytes);

    /* One-shot: fires once and disarms. */
    fy_timer_program(&t, 0, 50000, false);
    fy_timer_run(&t, 10000000);
    T_EQ_INT(t.ctrl & FY_TIMER_EN, 0);
    T_EQ_INT(fy_timer_deadline(&t), UINT64_MAX);
    fy_clock_destroy(&clk);
}

/* In a machine, the guest leaves expiries pending now and then, so the
 * subsection travels some of the time and not always. */
static void test_timer_in_machine(void)
{
    FyMachineConfig c = mt_config(FY_WORKLOAD_HOTSPOT, 1, 8, 1);
    c.timer_period_ns = 20000;
    FyMachine *m = mt_new(&c);
    T_ASSERT(m);
    if (!m)
        return;
    int with = 0;
    json_int_t ticks = 0;
    for (int i = 0; i < 50 && !(with && ticks > 0); i++) {
        fy_machine_start(m, NULL);
        mt_sleep_ms(3 + i % 4);
        fy_machine_stop(m, NULL);
        json_t *j = fy_machine_state_json(m);
        json_t *t = json_object_get(j, "ferry-timer");
        T_EQ_INT(json_integer_value(json_object_get(t, "ctrl")), 3);
        with += json_object_get(t, "ferry-timer/pending") != NULL;
        ticks = json_integer_value(json_object_get(json_array_get(json_object_get(j, "cpu"), 0),
                                                   "ticks"));
        json_decref(j);
    }
    FyMachineStats st;
    fy_machine_get_stats(m, &st);
    printf("# timer fired %" PRIu64 " times, the guest saw %lld\n", st.timer_fired,
           (long long)ticks);
    T_ASSERT(st.timer_fired > 10);
    T_ASSERT(with > 0);
    T_ASSERT(ticks > 0);
    fy_machine_free(m);
}

/* The JSON dump has every device and refuses while running. */
static void test_state_json(void)
{
    FyMachineConfig c = mt_config(FY_WORKLOAD_RANDOM, 3, 8, 1);
    FyMachine *m = mt_new(&c);
    T_ASSERT(m);
    if (!m)
        return;
    T_EQ_INT(mt_run_until(m, 1000), 0);
    json_t *j = fy_machine_state_json(m);
    T_ASSERT(j != NULL);
    T_EQ_INT(json_array_size(json_object_get(j, "cpu")), 3);
    json_t *c1 = json_array_get(json_object_get(j, "cpu"), 1);
    T_EQ_INT(json_integer_value(json_object_get(c1, "index")), 1);
    T_EQ_INT(json_integer_value(json_object_get(c1, "steps")), 1000);
    T_EQ_INT(json_array_size(json_object_get(c1, "regs")), 16);
    T_ASSERT(json_object_get(j, "serial") && json_object_get(j, "clock") &&
             json_object_get(j, "ferry-timer"));
    json_decref(j);
    fy_machine_start(m, NULL);
    T_ASSERT(fy_machine_state_json(m) == NULL);
    fy_machine_free(m);
}

int main(void)
{
    T_RUN(test_clock_stops_with_vm);
    T_RUN(test_clock_migrates);
    T_RUN(test_uart_registers);
    T_RUN(test_uart_vmstate);
    T_RUN(test_serial_file);
    T_RUN(test_serial_unix);
    T_RUN(test_timer_versions);
    T_RUN(test_timer_in_machine);
    T_RUN(test_state_json);
    return t_done();
}
