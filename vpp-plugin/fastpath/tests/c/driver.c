/*
 * C test driver for the fast-path ABI: compiled by build.rs (cc crate) against
 * include/cvlan_fastpath.h and called from tests/c_driver.rs. It uses the ABI exactly as the
 * VPP plugin or the DPDK host would: open a worker on a segment, own the buffers (with head
 * and tail room), process a batch, read verdicts and counters, close.
 */
#include "cvlan_fastpath.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define HEADROOM 128u
#define BUFSZ 2048u

/* Sizes, offsets and constants as the C compiler sees them (compared in Rust). */
size_t cvlan_c_layout(int64_t *out, size_t cap) {
  int64_t v[] = {
      (int64_t)sizeof(cvlan_fp_buf),
      (int64_t)offsetof(cvlan_fp_buf, data),
      (int64_t)offsetof(cvlan_fp_buf, len),
      (int64_t)offsetof(cvlan_fp_buf, headroom),
      (int64_t)offsetof(cvlan_fp_buf, tailroom),
      (int64_t)offsetof(cvlan_fp_buf, ingress),
      (int64_t)sizeof(cvlan_fp_verdict),
      (int64_t)offsetof(cvlan_fp_verdict, next),
      (int64_t)offsetof(cvlan_fp_verdict, reason),
      (int64_t)offsetof(cvlan_fp_verdict, aux),
      (int64_t)sizeof(cvlan_fp_counters),
      (int64_t)offsetof(cvlan_fp_counters, rx_packets),
      (int64_t)offsetof(cvlan_fp_counters, rx_bytes),
      (int64_t)offsetof(cvlan_fp_counters, tx_packets),
      (int64_t)offsetof(cvlan_fp_counters, tx_bytes),
      (int64_t)offsetof(cvlan_fp_counters, drops),
      (int64_t)sizeof(cvlan_fp_stats),
      (int64_t)offsetof(cvlan_fp_stats, batches),
      (int64_t)offsetof(cvlan_fp_stats, packets),
      (int64_t)offsetof(cvlan_fp_stats, next),
      (int64_t)offsetof(cvlan_fp_stats, reason),
      (int64_t)offsetof(cvlan_fp_stats, generation),
      (int64_t)offsetof(cvlan_fp_stats, node_ticks),
      (int64_t)CVLAN_FP_ABI_VERSION,
      (int64_t)CVLAN_FP_INGRESS_UNDERLAY,
      (int64_t)CVLAN_FP_MAX_BATCH,
      CVLAN_FP_NEXT_DROP,
      CVLAN_FP_NEXT_UNDERLAY,
      CVLAN_FP_NEXT_LOCAL,
      CVLAN_FP_NEXT_PUNT,
      CVLAN_FP_NEXT_COUNT,
      CVLAN_FP_OK,
      CVLAN_FP_ERR_INVAL,
      CVLAN_FP_ERR_SEGMENT,
      CVLAN_FP_ERR_WORKER,
      CVLAN_FP_ERR_PANIC,
      CVLAN_FP_REASON_COUNT,
  };
  size_t n = sizeof(v) / sizeof(v[0]);
  for (size_t i = 0; i < n && i < cap; i++) out[i] = v[i];
  return n;
}

/* Number of reasons whose library name differs from the header's X-macro name. */
int cvlan_c_reason_name_mismatches(void) {
  int bad = 0;
#define _(n, v, s)                                                                     \
  if (strcmp(cvlan_fp_reason_name(v), s) != 0) bad++;
  foreach_cvlan_fp_reason
#undef _
  if (strcmp(cvlan_fp_reason_name(999), "?") != 0) bad++;
  return bad;
}

typedef struct {
  const uint8_t *pkt;
  uint32_t len;
  uint32_t ingress;
} cvlan_c_input;

typedef struct {
  uint8_t data[BUFSZ];
  uint32_t len;
  uint16_t next;
  uint16_t reason;
  uint32_t aux;
} cvlan_c_output;

/* Drives one batch end to end. Returns 0, or the negative number of the failed check. */
int cvlan_c_driver_run(const char *segment_path, uint32_t worker_id, const cvlan_c_input *in,
                       uint32_t n, cvlan_c_output *out, cvlan_fp_counters *peer0,
                       cvlan_fp_stats *stats) {
  cvlan_fp_worker *w = NULL;
  if (cvlan_fp_abi_version() != CVLAN_FP_ABI_VERSION) return -1;
  if (cvlan_fp_worker_open(NULL, 0, &w) != CVLAN_FP_ERR_INVAL) return -2;
  if (cvlan_fp_worker_open("/nonexistent/cvlan-segment", 0, &w) != CVLAN_FP_ERR_SEGMENT)
    return -3;
  if (cvlan_fp_worker_open(segment_path, 63, &w) != CVLAN_FP_ERR_WORKER) return -4;
  if (cvlan_fp_worker_open(segment_path, worker_id, &w) != CVLAN_FP_OK || w == NULL) return -5;
  if (cvlan_fp_process(w, NULL, NULL, 0) != 0) return -6;

  uint8_t *mem = calloc(n ? n : 1, BUFSZ);
  cvlan_fp_buf *bufs = calloc(n ? n : 1, sizeof(cvlan_fp_buf));
  cvlan_fp_verdict *verdicts = calloc(n ? n : 1, sizeof(cvlan_fp_verdict));
  if (!mem || !bufs || !verdicts) return -7;
  for (uint32_t i = 0; i < n; i++) {
    uint8_t *b = mem + (size_t)i * BUFSZ;
    if (in[i].len > BUFSZ - HEADROOM - 32) return -8;
    memcpy(b + HEADROOM, in[i].pkt, in[i].len);
    bufs[i].data = b + HEADROOM;
    bufs[i].len = in[i].len;
    bufs[i].headroom = HEADROOM;
    bufs[i].tailroom = BUFSZ - HEADROOM - in[i].len;
    bufs[i].ingress = in[i].ingress;
  }
  if (cvlan_fp_process(w, bufs, verdicts, n) != n) return -9;
  for (uint32_t i = 0; i < n; i++) {
    uint8_t *b = mem + (size_t)i * BUFSZ;
    /* The descriptor must still describe the same buffer. */
    if (bufs[i].data - bufs[i].headroom != b) return -10;
    if ((size_t)bufs[i].headroom + bufs[i].len + bufs[i].tailroom != BUFSZ) return -11;
    memcpy(out[i].data, bufs[i].data, bufs[i].len);
    out[i].len = bufs[i].len;
    out[i].next = verdicts[i].next;
    out[i].reason = verdicts[i].reason;
    out[i].aux = verdicts[i].aux;
  }
  if (cvlan_fp_worker_stats(w, stats) != CVLAN_FP_OK) return -12;
  if (cvlan_fp_peer_counters(w, 0, peer0) != CVLAN_FP_OK) return -13;
  if (cvlan_fp_peer_counters(NULL, 0, peer0) != CVLAN_FP_ERR_INVAL) return -14;
  if (stats->packets != n) return -15;
  free(mem);
  free(bufs);
  free(verdicts);
  cvlan_fp_worker_close(w);
  cvlan_fp_worker_close(NULL);
  return 0;
}
