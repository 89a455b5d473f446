/* A 16550 UART reduced to what a console needs: THR writes collected into lines, LSR always
 * "transmitter empty", the other registers stored so a driver's set-up reads back. Input is
 * not supported (our guests never read the console). */
#include "engine/vm/serial.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/common/util.h"
#include "engine/vm/device_bus.h"

#define LCR_DLAB 0x80
#define LSR_THRE 0x20
#define LSR_TEMT 0x40

struct serial {
    struct gw_device dev;
    int console_fd;
    bool capped;            /* console_fd is a regular file: kept under GW_SERIAL_LOG_MAX */
    uint64_t size;          /* its size as we wrote it */
    uint8_t ier, lcr, mcr, scr, dll, dlm, fcr;
    char line[256];
    size_t len;
    Godwit__V1__SerialState saved; /* what the last save handed out */
};

static void flush_line(struct serial *s)
{
    if (s->console_fd >= 0 && s->len) {
        /* A guest writes as much as it likes: the log starts over past its limit, so a chatty
         * or hostile guest cannot fill the disk the daemon's database lives on. */
        if (s->capped && s->size + s->len > GW_SERIAL_LOG_MAX && ftruncate(s->console_fd, 0) == 0) {
            static const char mark[] = "[godwit: console log over its limit: earlier output dropped]\n";
            s->size = gw_write_full(s->console_fd, mark, sizeof mark - 1) ? 0 : sizeof mark - 1;
        }
        if (!gw_write_full(s->console_fd, s->line, s->len)) s->size += s->len;
    }
    s->len = 0;
}

static int serial_access(struct gw_device *d, uint64_t off, bool is_write, uint8_t *data, uint32_t len)
{
    struct serial *s = (struct serial *)d;
    if (len != 1) { if (!is_write) memset(data, 0xff, len); return 0; }
    bool dlab = s->lcr & LCR_DLAB;
    if (is_write) {
        uint8_t v = data[0];
        switch (off) {
        case 0:
            if (dlab) { s->dll = v; break; }
            if (s->len < sizeof s->line) s->line[s->len++] = (char)v;
            if (v == '\n' || s->len == sizeof s->line) flush_line(s);
            break;
        case 1: if (dlab) s->dlm = v; else s->ier = v & 0x0f; break;
        case 2: s->fcr = v; break;
        case 3: s->lcr = v; break;
        case 4: s->mcr = v & 0x1f; break;
        case 7: s->scr = v; break;
        default: break;
        }
        return 0;
    }
    uint8_t v = 0;
    switch (off) {
    case 0: v = dlab ? s->dll : 0; break;
    case 1: v = dlab ? s->dlm : s->ier; break;
    case 2: v = 0x01; break; /* IIR: no interrupt pending */
    case 3: v = s->lcr; break;
    case 4: v = s->mcr; break;
    case 5: v = LSR_THRE | LSR_TEMT; break;
    case 6: v = 0xb0; break; /* MSR: CTS, DSR, DCD */
    case 7: v = s->scr; break;
    }
    data[0] = v;
    return 0;
}

static int serial_save(struct gw_device *d, Godwit__V1__DeviceState *out)
{
    struct serial *s = (struct serial *)d;
    Godwit__V1__SerialState *st = &s->saved;
    godwit__v1__serial_state__init(st);
    st->ier = s->ier; st->lcr = s->lcr; st->mcr = s->mcr; st->scr = s->scr;
    st->dll = s->dll; st->dlm = s->dlm; st->fcr = s->fcr;
    out->kind_case = GODWIT__V1__DEVICE_STATE__KIND_SERIAL;
    out->serial = st;
    return 0;
}

static int serial_load(struct gw_device *d, const Godwit__V1__DeviceState *in)
{
    struct serial *s = (struct serial *)d;
    if (in->kind_case != GODWIT__V1__DEVICE_STATE__KIND_SERIAL || !in->serial) return -EINVAL;
    const Godwit__V1__SerialState *st = in->serial;
    s->ier = (uint8_t)st->ier; s->lcr = (uint8_t)st->lcr; s->mcr = (uint8_t)st->mcr;
    s->scr = (uint8_t)st->scr; s->dll = (uint8_t)st->dll; s->dlm = (uint8_t)st->dlm;
    s->fcr = (uint8_t)st->fcr;
    return 0;
}

static void serial_destroy(struct gw_device *d)
{
    struct serial *s = (struct serial *)d;
    flush_line(s);
    free(s);
}

static const struct gw_device_ops serial_ops = {
    .access = serial_access, .save = serial_save, .load = serial_load, .destroy = serial_destroy,
};

int gw_serial_create(uint16_t base, int console_fd, struct gw_device **out)
{
    struct serial *s = calloc(1, sizeof *s);
    if (!s) return -ENOMEM;
    gw_device_init(&s->dev, &serial_ops, "serial0", GW_DEV_PIO, base, 8);
    s->console_fd = console_fd;
    struct stat st;
    if (console_fd >= 0 && fstat(console_fd, &st) == 0 && S_ISREG(st.st_mode)) {
        s->capped = true;
        s->size = (uint64_t)st.st_size;
    }
    *out = &s->dev;
    return 0;
}
