/*
 * cvlan_fastpath.h — C ABI of the CloudVLAN gateway fast path (Rust crate cvlan-fastpath).
 *
 * Hand-written; tests/c_driver.rs compiles tests/c/driver.c against it and checks every
 * size, offset and constant below against the Rust definitions.
 *
 * Model: a worker (one per core/thread) is attached to a shared-memory table segment
 * written by the vrouterd sidecar. The caller hands it batches of its own packet buffers;
 * each buffer comes back with a verdict (drop / to underlay / to local / punt) and its
 * descriptor updated in place. No call blocks, allocates per packet, or unwinds into C.
 */
#ifndef CVLAN_FASTPATH_H
#define CVLAN_FASTPATH_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CVLAN_FP_ABI_VERSION 1u

/* Return codes of the int-returning functions. */
#define CVLAN_FP_OK 0
#define CVLAN_FP_ERR_INVAL (-1)
#define CVLAN_FP_ERR_SEGMENT (-2)
#define CVLAN_FP_ERR_WORKER (-3)
#define CVLAN_FP_ERR_PANIC (-4)

/* cvlan_fp_buf.ingress for datagrams received on the underlay. */
#define CVLAN_FP_INGRESS_UNDERLAY 0xffffffffu
/* Calls are processed in batches of at most this many buffers. */
#define CVLAN_FP_MAX_BATCH 256u

/* cvlan_fp_verdict.next */
#define CVLAN_FP_NEXT_DROP 0
#define CVLAN_FP_NEXT_UNDERLAY 1 /* data = outer IP header; aux = peer slot */
#define CVLAN_FP_NEXT_LOCAL 2    /* data = inner IP packet; aux = local interface */
#define CVLAN_FP_NEXT_PUNT 3     /* untouched; hand to the sidecar */
#define CVLAN_FP_NEXT_COUNT 4

/* cvlan_fp_verdict.reason (X-macro: _(NAME, value, "name")) */
#define foreach_cvlan_fp_reason                                                        \
  _(NONE, 0, "none")                                                                   \
  _(MALFORMED, 1, "malformed")                                                         \
  _(NOT_WIREGUARD, 2, "not_wireguard")                                                 \
  _(HANDSHAKE_INIT, 3, "handshake_init")                                               \
  _(HANDSHAKE_RESPONSE, 4, "handshake_response")                                       \
  _(COOKIE_REPLY, 5, "cookie_reply")                                                   \
  _(KEEPALIVE, 6, "keepalive")                                                         \
  _(UNKNOWN_MESSAGE, 7, "unknown_message")                                             \
  _(UNKNOWN_RECEIVER, 8, "unknown_receiver")                                           \
  _(REPLAY, 9, "replay")                                                               \
  _(AUTH_FAILED, 10, "auth_failed")                                                    \
  _(SOURCE_NOT_ALLOWED, 11, "source_not_allowed")                                      \
  _(ACL_DENY, 12, "acl_deny")                                                          \
  _(NO_ROUTE, 13, "no_route")                                                          \
  _(NO_KEYPAIR, 14, "no_keypair")                                                      \
  _(NO_ENDPOINT, 15, "no_endpoint")                                                    \
  _(KEYPAIR_EXHAUSTED, 16, "keypair_exhausted")                                        \
  _(NO_HEADROOM, 17, "no_headroom")                                                    \
  _(NO_TAILROOM, 18, "no_tailroom")                                                    \
  _(UNKNOWN_TENANT, 19, "unknown_tenant")                                              \
  _(NO_TABLES, 20, "no_tables")                                                        \
  _(INTERNAL, 21, "internal")

typedef enum {
#define _(n, v, s) CVLAN_FP_REASON_##n = v,
  foreach_cvlan_fp_reason
#undef _
  CVLAN_FP_REASON_COUNT = 22
} cvlan_fp_reason_t;

/* One caller-owned packet buffer. The fast path may move `data` anywhere inside
 * [data - headroom, data + len + tailroom) and rewrites the four fields accordingly. */
typedef struct {
  uint8_t *data;     /* outer IP header (underlay ingress) or inner IP header (local) */
  uint32_t len;
  uint32_t headroom; /* writable bytes before data: ≥ 64 for encryption to IPv6 peers */
  uint32_t tailroom; /* writable bytes after data + len: ≥ 31 for padding and tag */
  uint32_t ingress;  /* CVLAN_FP_INGRESS_UNDERLAY or the tenant slot of a local interface */
} cvlan_fp_buf;

typedef struct {
  uint16_t next;   /* CVLAN_FP_NEXT_* */
  uint16_t reason; /* cvlan_fp_reason_t */
  uint32_t aux;    /* peer slot (UNDERLAY) or interface (LOCAL) */
} cvlan_fp_verdict;

/* Per-peer / per-tenant counters of one worker. */
typedef struct {
  uint64_t rx_packets;
  uint64_t rx_bytes;
  uint64_t tx_packets;
  uint64_t tx_bytes;
  uint64_t drops;
} cvlan_fp_counters;

/* Worker totals. */
typedef struct {
  uint64_t batches;
  uint64_t packets;
  uint64_t next[CVLAN_FP_NEXT_COUNT];
  uint64_t reason[32];
  uint64_t generation;    /* table generation used by the last batch */
  uint64_t node_ticks[4]; /* TSC ticks in wg-decrypt, acl, route, wg-encrypt */
} cvlan_fp_stats;

typedef struct cvlan_fp_worker cvlan_fp_worker;

/* ABI version of the library (compare with CVLAN_FP_ABI_VERSION). */
uint32_t cvlan_fp_abi_version(void);

/* Opens worker `worker_id` (< the segment's max_workers) on the segment file at `path`.
 * Safety: path NUL-terminated; out writable. Release with cvlan_fp_worker_close. A worker is
 * used by one thread at a time. */
int cvlan_fp_worker_open(const char *path, uint32_t worker_id, cvlan_fp_worker **out);

/* As cvlan_fp_worker_open, from an open descriptor (memfd or file), which is duplicated. */
int cvlan_fp_worker_open_fd(int fd, uint32_t worker_id, cvlan_fp_worker **out);

/* Releases a worker; NULL is ignored. */
void cvlan_fp_worker_close(cvlan_fp_worker *w);

/* Processes n buffers, writes n verdicts, returns n (0 on invalid arguments).
 * Safety: bufs/verdicts point to n elements; each buffer region is writable and not used by
 * anyone else during the call. */
uint32_t cvlan_fp_process(cvlan_fp_worker *w, cvlan_fp_buf *bufs, cvlan_fp_verdict *verdicts,
                          uint32_t n);

/* Counters (not concurrently with cvlan_fp_process on the same worker). */
int cvlan_fp_worker_stats(const cvlan_fp_worker *w, cvlan_fp_stats *out);
int cvlan_fp_peer_counters(const cvlan_fp_worker *w, uint32_t peer, cvlan_fp_counters *out);
int cvlan_fp_tenant_counters(const cvlan_fp_worker *w, uint32_t tenant, cvlan_fp_counters *out);

/* Static name of a reason ("?" when out of range). */
const char *cvlan_fp_reason_name(uint16_t reason);

#ifdef __cplusplus
}
#endif

#endif /* CVLAN_FASTPATH_H */
