/*
 * cvlan_glue.h — the VPP-independent part of the CloudVLAN VPP plugin.
 *
 * Depends only on cvlan_fastpath.h and standard C, so CI compiles and drives it without VPP
 * (vpp-plugin/fastpath/tests/vpp_glue.rs). The graph nodes (cvlan_node.c) only move fields
 * between vlib_buffer_t and the arrays below; everything that decides what happens to a
 * packet after the fast path — which next node, which error counter, whether the fast path
 * left the buffer inside its bounds — lives here, where it can be tested.
 */
#ifndef CVLAN_GLUE_H
#define CVLAN_GLUE_H

#include <stddef.h>
#include <stdint.h>

#include "cvlan_fastpath.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Node error counters: the fast path's reasons first (so error index == reason, no table),
 * then the plugin's own. _(NAME, "name", "description")
 */
#define foreach_cvlan_glue_error                                                       \
  _(NOT_ATTACHED, "not_attached", "no table segment attached on this thread")         \
  _(CHAINED, "chained_buffer", "chained buffer (jumbo): not handled by the fast path")  \
  _(GSO, "gso", "GSO packet: disable GSO on tenant interfaces")                        \
  _(BAD_FAMILY, "bad_family", "fast path output is neither IPv4 nor IPv6")             \
  _(OUT_OF_BOUNDS, "out_of_bounds", "fast path moved data outside the buffer")         \
  _(NO_INTERFACE, "no_interface", "local interface id not bound to a VPP interface")

typedef enum {
  CVLAN_GLUE_ERROR_LAST_REASON = CVLAN_FP_REASON_COUNT - 1, /* own errors follow the reasons */
#define _(n, s, d) CVLAN_GLUE_ERROR_##n,
  foreach_cvlan_glue_error
#undef _
  CVLAN_GLUE_N_ERROR
} cvlan_glue_error_t;

/* IP version of a packet's first byte: 0 = IPv4, 1 = IPv6, -1 = neither. */
static inline int cvlan_glue_family(const uint8_t *ip) {
  switch (ip[0] >> 4) {
  case 4:
    return 0;
  case 6:
    return 1;
  default:
    return -1;
  }
}

/* One packet as the host sees it: contiguous bytes with writable room on both sides. The
 * glue rewrites data/len/headroom/tailroom to what the fast path left. */
typedef struct {
  uint8_t *data;
  uint32_t len;
  uint32_t headroom;
  uint32_t tailroom;
  uint32_t ingress; /* CVLAN_FP_INGRESS_UNDERLAY or a tenant slot */
} cvlan_glue_pkt;

/* How one node maps verdicts to its next indices. UNDERLAY and LOCAL are chosen by the IP
 * version of the packet the fast path returned (an IPv4 packet may leave over an IPv6
 * underlay and the other way round). */
typedef struct {
  uint16_t drop;
  uint16_t punt;
  uint16_t underlay[2]; /* [0] IPv4, [1] IPv6 */
  uint16_t local[2];
} cvlan_glue_nexts;

/* Per-batch totals for the node's counters. */
typedef struct {
  uint32_t packets;
  uint32_t next[CVLAN_FP_NEXT_COUNT];
  /* Packets per error index that were NOT dropped but carry a reason (punts): drops are
   * counted by VPP's error-drop node from the buffer's error, these would be invisible. */
  uint32_t passed_with_reason[CVLAN_GLUE_N_ERROR];
  uint32_t dropped[CVLAN_GLUE_N_ERROR];
} cvlan_glue_tally;

/* Scratch for one call, one per thread (no sharing, no locks). */
typedef struct {
  cvlan_fp_buf bufs[CVLAN_FP_MAX_BATCH];
  cvlan_fp_verdict verdicts[CVLAN_FP_MAX_BATCH];
} cvlan_glue_scratch;

/*
 * Runs n packets (any n; the fast path is called once per CVLAN_FP_MAX_BATCH, i.e. once per
 * VPP frame) and writes, per packet: the updated descriptor into pkts[i], the node's next
 * index into nexts[i], the error index into errors[i] (the reason, or a glue error) and the
 * fast path's aux (peer slot or local interface) into aux[i] and the final verdict
 * (CVLAN_FP_NEXT_*, after the glue's own checks) into verdict[i] — UNDERLAY and LOCAL may
 * share a next node but need different buffer metadata. aux and verdict may be NULL. With
 * w == NULL every packet is dropped with CVLAN_GLUE_ERROR_NOT_ATTACHED. The tally is reset
 * first. Returns n.
 */
uint32_t cvlan_glue_process(cvlan_fp_worker *w, cvlan_glue_scratch *s, cvlan_glue_pkt *pkts,
                            uint32_t n, const cvlan_glue_nexts *map, uint16_t *nexts,
                            uint16_t *errors, uint32_t *aux, uint8_t *verdict,
                            cvlan_glue_tally *tally);

/* Name and description of an error index (reasons take the fast path's names). */
const char *cvlan_glue_error_name(uint32_t error);
const char *cvlan_glue_error_desc(uint32_t error);

/*
 * Punt protocol (notes: "Punt protocol vrouter-dpdk <-> vrouterd"): every datagram is a
 * 16-byte little-endian header + payload. Shared by vrouter-dpdk and this plugin, so vrouterd
 * works with either.
 */
#define CVLAN_PUNT_MAGIC 0x54505643u /* "CVPT" as little-endian bytes */
#define CVLAN_PUNT_VERSION 1u
#define CVLAN_PUNT_HDR_LEN 16u
#define CVLAN_PUNT_KIND_PUNT 1u     /* data plane -> vrouterd: received packet */
#define CVLAN_PUNT_KIND_TX 2u       /* vrouterd -> data plane: IP packet to send */
#define CVLAN_PUNT_KIND_STATS_REQ 3u
#define CVLAN_PUNT_KIND_STATS_REP 4u
#define CVLAN_PUNT_PORT_ROUTE 0xffffu /* TX: route by destination */

typedef struct {
  uint8_t kind;
  uint16_t port;
  uint16_t reason;
  uint16_t worker;
} cvlan_punt_hdr;

/* Writes the 16-byte header. */
void cvlan_punt_hdr_write(uint8_t out[CVLAN_PUNT_HDR_LEN], const cvlan_punt_hdr *h);

/* Parses a received datagram; returns the payload offset (CVLAN_PUNT_HDR_LEN) or -1 for a
 * short datagram, -2 for a wrong magic, -3 for a wrong version, -4 for an unknown kind. */
int cvlan_punt_hdr_read(const uint8_t *p, size_t len, cvlan_punt_hdr *out);

#ifdef __cplusplus
}
#endif

#endif /* CVLAN_GLUE_H */
