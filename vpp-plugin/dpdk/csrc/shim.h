/*
 * shim.h — the few DPDK entry points that are `static inline` in the headers (and so have
 * no symbol to link against), wrapped as real functions for Rust. Everything else is bound
 * directly by bindgen. One function per concern; no logic beyond what the inline does.
 */
#ifndef CVD_SHIM_H
#define CVD_SHIM_H

#include <stdint.h>

struct rte_mbuf;
struct rte_mempool;

/* The packet window of a single-segment mbuf. */
typedef struct {
  uint8_t *data;
  uint32_t len;
  uint32_t headroom;
  uint32_t tailroom;
  uint16_t nb_segs;
} cvd_mbuf_view;

uint16_t cvd_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t cvd_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
struct rte_mbuf *cvd_pktmbuf_alloc(struct rte_mempool *pool);
int cvd_pktmbuf_alloc_bulk(struct rte_mempool *pool, struct rte_mbuf **pkts, unsigned n);
void cvd_pktmbuf_free(struct rte_mbuf *m);
void cvd_mbuf_get(const struct rte_mbuf *m, cvd_mbuf_view *out);
/* Sets the packet window to [data, data + len); data must lie inside the mbuf's buffer and
 * data + len inside its data room. Returns 0, or -1 (mbuf unchanged) when it does not fit. */
int cvd_mbuf_set(struct rte_mbuf *m, const uint8_t *data, uint32_t len);
unsigned cvd_lcore_id(void);
int cvd_errno(void);

#endif
