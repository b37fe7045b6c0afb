/*
 * analyze-int.h: the pieces of `ferry analyze`, a reader of QEMU-format
 * migration streams (format v3) that decodes device state with the JSON VM
 * description the stream carries after its EOF marker.
 *
 * Files:
 *   analyze.c          the command line: modes, options, exit codes
 *   analyze-reader.c   AnRd, a buffered reader over an fd or a memory block
 *                      that knows the stream offset of every byte
 *   analyze-stream.c   the walk: header, records to EOF, the description
 *                      after it, decoding what had to wait for it
 *   analyze-section.c  one section record: header, body, footer
 *   analyze-command.c  QEMU_VM_COMMAND records, PACKAGED sub-streams
 *   analyze-config.c   the configuration section
 *   analyze-scan.c     finding where an opaque section ends (its footer)
 *   analyze-desc.c     locating and validating the VM description
 *   analyze-vmsd.c     decoding a device section field by field from the
 *                      description (the output shape of QEMU's
 *                      scripts/analyze-migration.py)
 *   analyze-ram.c      the "ram" section: records, XBZRLE, page index
 *   analyze-store.c    where page contents go: -x files or a temp store
 *   analyze-json.c     JSON output byte-compatible with python's json.dumps
 *   analyze-report.c   --summary and the state/desc printers
 *   analyze-diff.c     --diff of two streams' device state
 *
 * One An holds everything about one stream; nothing is global, so --diff
 * runs two in one process.
 *
 * Errors: the first problem stops the walk. It is kept as a message that
 * starts "stream offset N: " and names the section and field, in the form
 * "expected X, found Y" where there is an expectation.
 */
#ifndef FERRY_ANALYZE_INT_H
#define FERRY_ANALYZE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "ferry/error.h"

/* ---------------------------------------------------------------- reader */

#define AN_BUF_SIZE (4u << 20)  /* read in big chunks: page-cache speed */
#define AN_LOOKAHEAD 300        /* bytes a footer check may peek past it */

typedef struct AnRd {
    int fd;             /* -1: memory only */
    uint8_t *buf;
    size_t cap, pos, len;
    uint64_t base;      /* stream offset of buf[0] */
    bool src_end;       /* the source has nothing more */
    bool own_buf;
    int err;            /* errno of a failed read(), or 0 */
} AnRd;

/* Reader over an fd (not closed by rd_free). */
int rd_init_fd(AnRd *r, int fd);
/* Reader over bytes already in memory; base = stream offset of data[0]. */
void rd_init_mem(AnRd *r, const void *data, size_t len, uint64_t base);
void rd_free(AnRd *r);
bool rd_fill_slow(AnRd *r, size_t n);

static inline size_t rd_avail(const AnRd *r) { return r->len - r->pos; }
static inline uint64_t rd_off(const AnRd *r) { return r->base + r->pos; }
/* Make n (<= AN_BUF_SIZE) bytes available at buf + pos; false at end. */
static inline bool rd_need(AnRd *r, size_t n)
{
    return r->len - r->pos >= n || rd_fill_slow(r, n);
}
static inline const uint8_t *rd_cur(const AnRd *r) { return r->buf + r->pos; }
static inline uint16_t ld_be16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}
static inline uint32_t ld_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t ld_be64(const uint8_t *p)
{
    return (uint64_t)ld_be32(p) << 32 | ld_be32(p + 4);
}
/* Byte i ahead (needs i < AN_BUF_SIZE), or -1 past the end. */
int rd_peek(AnRd *r, size_t i);
/* Skip n bytes; returns the bytes actually skipped (less at the end). */
uint64_t rd_skip(AnRd *r, uint64_t n);
/* Copy n bytes; false (with what there was consumed) at the end. */
bool rd_copy(AnRd *r, void *dst, size_t n);
/* Bytes left before the end of the source, when that is known (memory). */
bool rd_is_mem(const AnRd *r);

/* ---------------------------------------------------------------- options */

typedef enum { AN_DUMP_STATE, AN_DUMP_DESC, AN_DUMP_NONE } AnDump;

typedef struct AnOpts {
    AnDump dump;              /* what the default output is */
    bool dump_memory;         /* -m: page contents in the state */
    const char *extract_dir;  /* -x DIR */
    bool summary;             /* --summary */
    bool check;               /* --check */
    bool quiet;               /* no notes on stderr */
    json_t *desc_override;    /* --desc FILE (borrowed) */
    uint32_t page_size;       /* --page-size, 0 = from the stream */
    uint64_t value_budget;    /* decoded values allowed, 0 = AN_VALUE_BUDGET */
} AnOpts;

/* No real device has a million values; a description asking for more
 * (huge array_len of zero-size elements) is hostile. Values that take no
 * stream bytes at all (empty structs, size-0 fields) cost memory for
 * nothing, so they have a budget of their own. */
#define AN_VALUE_BUDGET (1u << 21)
#define AN_FREE_VALUE_BUDGET (1u << 16)

/* --------------------------------------------------------------- sections */

typedef enum {
    SEC_RAM, SEC_DEVICE, SEC_HTAB, SEC_S390, SEC_OPAQUE,
} AnSecKind;

enum { AN_ST_START, AN_ST_PART, AN_ST_END, AN_ST_FULL, AN_ST_N };

typedef struct AnSection {
    uint32_t id;
    char name[256];          /* idstr as sent (NUL-terminated; may hold odd bytes) */
    char label[300];         /* printable form for messages */
    uint32_t instance, version;
    AnSecKind kind;
    json_t *desc;            /* the description's device entry (borrowed) */
    json_t *value;           /* decoded state (owned), NULL until decoded */
    /* an opaque section's last body, kept to decode once a description comes */
    uint8_t *raw;
    size_t raw_len;
    uint64_t raw_off;
    bool raw_kept;
    char *why;               /* why it is undecoded (owned) */
    /* accounting */
    uint64_t bytes;          /* header + body + footer, all records */
    uint64_t downtime_bytes; /* of which after the switchover */
    uint64_t first_off;
    unsigned count[AN_ST_N];
    int order;               /* position among sections in first-seen order */
} AnSection;

/* ---------------------------------------------------------------- RAM */

#define AN_IDX_LEAF_BITS 12
#define AN_MAX_BLOCKS 4096
#define AN_MAX_RAM (1ull << 44)   /* 16 TiB: bigger MEM_SIZE totals are refused */

typedef struct AnBlock {
    int index;
    char name[256];
    char label[300];
    uint64_t length;         /* used_length */
    uint64_t npages;
    uint64_t mr_addr;
    uint64_t remote_page_size;
    bool has_mr_addr, has_remote_page_size;
    /* page index: per page (pass << 16 | kind << 8 | fill); 2-level, lazy */
    uint64_t **leaf;
    size_t nleaves;
    int store_fd;            /* page contents (extract file or temp), or -1 */
    char *store_path;        /* for messages */
    /* counters */
    uint64_t zero, normal, xbzrle, compressed, mapped;
    /* mapped-ram */
    uint64_t mr_bitmap_off, mr_pages_off;
    bool mapped_ram;
} AnBlock;

enum { PG_NONE = 0, PG_ZERO = 1, PG_DATA = 2 };

#define AN_BLOCK_HASH 8192      /* buckets of the block-name index */

typedef struct AnRam {
    uint32_t ps;             /* target page size */
    AnBlock *blocks[AN_MAX_BLOCKS];
    int nblocks;
    /* block names -> index + 1, chained: a record names its block in O(1) */
    int16_t bhead[AN_BLOCK_HASH];
    int16_t bnext[AN_MAX_BLOCKS];
    AnBlock *last;           /* for CONTINUE */
    uint64_t total;          /* MEM_SIZE total */
    bool have_mem_size;
    /* counters */
    uint64_t zero, normal, xbzrle, compressed, mapped;
    uint64_t xbzrle_bytes, compressed_bytes, header_bytes, data_bytes;
    uint64_t resent, passes, eos, flushes, hooks, sections;
    uint64_t zero_nonzero_fill;
    uint64_t xbzrle_nobase;  /* XBZRLE pages with no earlier version */
    /* -m: pages in first-seen order (block index, page index) */
    uint64_t (*order)[2];
    size_t norder, order_cap;
    /* scratch */
    uint8_t *page, *page2;
    /* pending contiguous write run for the store */
    AnBlock *run_blk;
    uint64_t run_addr;
    uint8_t *run_buf;
    size_t run_len;
} AnRam;

/* ---------------------------------------------------------------- analysis */

#define AN_CMD_MAX 16

typedef struct An {
    AnOpts o;
    const char *path;
    int fd;
    bool own_fd;
    AnRd rd;
    bool seekable;
    uint64_t file_size;

    /* description */
    json_t *vmdesc;          /* the one used for decoding (owned) */
    json_t *vmdesc_index;    /* "instance:name" -> its device entry (owned) */
    json_t *stream_vmdesc;   /* what the stream carried (owned, may equal vmdesc) */
    uint64_t vmdesc_off;     /* offset of its 0x06 */
    uint64_t vmdesc_len;
    bool vmdesc_early;       /* known before the walk (tail of a file, --desc) */
    bool vmdesc_external;    /* from --desc */
    char *vmdesc_problem;    /* why the stream's description could not be used */

    /* header and configuration */
    uint32_t version;
    bool has_config;
    json_t *config;          /* decoded configuration (owned) */
    char machine[256];
    bool cap_ignore_shared, cap_mapped_ram;
    int target_page_bits;
    uint64_t config_bytes;

    /* sections */
    AnSection **secs;
    size_t nsecs, secs_cap;
    AnSection **sec_hash;    /* by section id, open addressing, 2x nsecs */
    size_t sec_hash_cap;
    int footers;             /* -1 unknown, 0 off, 1 on */
    AnRam ram;
    bool ps_guessed;         /* RAM decoded with a page size the stream did not state */

    /* commands */
    uint64_t cmd_count[AN_CMD_MAX];
    uint64_t cmd_bytes;
    uint64_t discard_ranges, discard_bytes;  /* POSTCOPY_RAM_DISCARD */
    bool postcopy_advised;
    int depth;               /* PACKAGED nesting */

    /* layout */
    bool in_downtime;
    uint64_t downtime_off;   /* first END/FULL section (postcopy: the first
                                discard or the package) */
    bool postcopy;           /* the package is out: the destination runs */
    uint64_t postcopy_off;   /* where the postcopy phase starts */
    bool saw_eof;
    uint64_t eof_off;
    uint64_t end_off;        /* bytes read in all */
    uint64_t trailing;       /* bytes after the description */
    uint64_t deferred_bytes; /* opaque bodies kept for later decoding */

    /* errors and notes */
    bool failed;
    char err[2048];
    size_t err_plain;        /* where the message after "stream offset N: " starts */
    uint64_t err_off;
    char ctx[400];           /* "section 'cpu' (id 3): " while inside one */
    char **notes;
    size_t nnotes;
    uint64_t budget;         /* decoded values left before we call it hostile */
    uint64_t free_budget;    /* of which may take no stream bytes */
    bool desc_written;       /* -x: desc.json is out */
} An;

/* analyze-stream.c */
An *an_new(const AnOpts *o);
void an_free(An *a);
/* Open a path ("-" = stdin). Returns 0, or -1 with a->err set. */
int an_open(An *a, const char *path);
/* Analyze bytes in memory (tests, fuzzing); seekable says whether to
 * look for the description at the end first, as for a file. */
int an_open_mem(An *a, const void *data, size_t len, bool seekable);
/* Walk the whole stream. Returns 0, or -1 with a->err set. */
int an_run(An *a);
void an_fail(An *a, uint64_t off, const char *fmt, ...) FY_PRINTF(3, 4);
const char *an_cmd_name(unsigned cmd);
void an_note(An *a, const char *fmt, ...) FY_PRINTF(2, 3);
AnSection *an_section_by_id(An *a, uint32_t id);
/* The description's entry for (name, instance) in a->vmdesc, via an index
 * built on first use (a description may list many thousands of devices). */
json_t *an_find_device(An *a, const char *name, uint32_t instance);
/* Walk records until EOF (0x00, consumed). 0, or -1 with a->err set. */
int an_walk(An *a, AnRd *r);
/* "section 'name' (id N): " in front of errors while inside s (NULL: none) */
void an_set_ctx(An *a, AnSection *s);

/* analyze-section.c: the record whose type byte is at off (not consumed) */
int an_start_full(An *a, AnRd *r, int type, uint64_t off);
int an_part_end(An *a, AnRd *r, int type, uint64_t off);
/* A device body decoded with s->desc into s->value. */
int an_device_body(An *a, AnRd *r, AnSection *s);
void an_set_why(AnSection *s, const char *fmt, ...) FY_PRINTF(2, 3);

/* analyze-command.c: the command whose 0x08 is at off (not consumed).
 * 0, 1 for POSTCOPY_RUN (which ends a package, as QEMU's loader quits its
 * loop there), or -1 with a->err set. */
int an_command(An *a, AnRd *r, uint64_t off);

/* analyze-config.c: the 0x07 byte and the configuration after it */
int an_configuration(An *a, AnRd *r);
/* A printable, quoted-safe copy of up to len bytes of s. */
void an_printable(char *dst, size_t dstsz, const uint8_t *s, size_t len);
/* "0x%02x" or "end of stream" for the byte at i ahead. */
const char *an_found(AnRd *r, size_t i, char buf[32]);

/* analyze-scan.c */
/* Consume an opaque section body up to (not including) its footer. Keeps
 * up to keep_max bytes in *keep (malloc'd). Returns 0 when the footer was
 * found, -1 when the stream ended first or the body went on too long
 * (a->err set). */
int an_scan_body(An *a, AnRd *r, AnSection *s, uint64_t keep_max,
                 uint8_t **keep, size_t *keep_len, bool *kept_all);

/* analyze-desc.c */
/* Find the description at the end of a seekable fd: `00 06 be32 len {...}`
 * ending exactly at the end of the file. Returns 1 found, 0 not there, -1
 * on a read error (a->err). *json_out owned by caller. */
int an_desc_from_tail(An *a, int fd, uint64_t size, json_t **json_out,
                      uint64_t *off_out, uint64_t *len_out);
/* The same, in the last len bytes of a stream that ends at offset end. */
int an_desc_in_buf(An *a, const uint8_t *buf, size_t len, uint64_t end,
                   json_t **json_out, uint64_t *off_out, uint64_t *len_out);
/* Parse and check a description's shape. NULL with a->err on failure. */
json_t *an_desc_parse(An *a, const char *text, size_t len, uint64_t off,
                      const char *where);
json_t *an_desc_find_device(json_t *desc, const char *name, uint32_t instance);
json_t *an_desc_load_file(const char *path, char *err, size_t errsz);

/* analyze-vmsd.c */
/* Decode one vmstate (fields + subsections) described by `desc`. Returns a
 * new object, or NULL with a->err set. path prefixes field names in errors. */
json_t *an_vmsd_decode(An *a, AnRd *r, json_t *desc, const char *path, int depth);

/* analyze-ram.c */
int an_ram_init(An *a);
void an_ram_free(An *a);
/* One "ram" section body, up to and including its EOS. */
int an_ram_section(An *a, AnRd *r, AnSection *s);
/* The block MEM_SIZE listed under this name, or NULL. */
AnBlock *an_ram_block(An *a, const uint8_t *name, size_t len);
/* Flush pending writes; call before reading page contents back. */
int an_ram_finish(An *a);
json_t *an_ram_sizes(An *a);
/* -m: the "memory" object members, in first-seen order, printed directly. */
int an_ram_print_memory(An *a, FILE *out, int indent);
/* XBZRLE: decode src[0..slen) over dst[0..dlen). Returns 0, or -1 with a
 * reason in why (QEMU's rules: ULEB128 lengths of at most 14 bits, no empty
 * runs but the first zero run, nothing past the page). */
int an_xbzrle_decode(const uint8_t *src, size_t slen, uint8_t *dst, size_t dlen,
                     char *why, size_t whysz);

/* analyze-store.c */
int an_store_open(An *a, AnBlock *b);
int an_store_write(An *a, AnBlock *b, uint64_t addr, const uint8_t *p, size_t n);
int an_store_read(An *a, AnBlock *b, uint64_t addr, uint8_t *p, size_t n);
int an_store_flush(An *a);
/* Write a small file under the -x directory (desc.json, state.json). */
int an_extract_write_file(An *a, const char *name, const char *data, size_t len);
/* The same, with JSON printed as analyze-migration.py writes it. */
int an_extract_write_json(An *a, const char *name, json_t *j);
/* Make `name` a relative path under a directory: no "..", no leading "/". */
int an_safe_relpath(const char *name, char *out, size_t outsz);

/* analyze-json.c */
/* Print like python's json.dumps(indent=4, separators=(',', ': ')). */
void an_json_print(FILE *out, json_t *v, int indent);
void an_json_print_string(FILE *out, const char *s, size_t len);
/* A JSON string from arbitrary bytes (invalid UTF-8 becomes U+FFFD). */
json_t *an_json_bytes_string(const uint8_t *s, size_t len);

/* analyze-report.c */
/* The state as analyze-migration.py prints it (-d state). */
int an_print_state(An *a, FILE *out);
/* The state tree (sections keyed "name (id)"), without memory, new ref. */
json_t *an_state_tree(An *a);
void an_print_summary(An *a, FILE *out);
void an_print_check_ok(An *a, FILE *out);

/* analyze-diff.c */
/* Compare the device state of two analyzed streams; prints differences.
 * Returns the number of differences. */
size_t an_diff(An *a, An *b, FILE *out);

#endif
