/* shim.c — see shim.h. */
#include <rte_config.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>

#include "shim.h"

uint16_t cvd_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n) {
  return rte_eth_rx_burst(port, queue, pkts, n);
}

uint16_t cvd_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n) {
  return rte_eth_tx_burst(port, queue, pkts, n);
}

struct rte_mbuf *cvd_pktmbuf_alloc(struct rte_mempool *pool) { return rte_pktmbuf_alloc(pool); }

int cvd_pktmbuf_alloc_bulk(struct rte_mempool *pool, struct rte_mbuf **pkts, unsigned n) {
  return rte_pktmbuf_alloc_bulk(pool, pkts, n);
}

void cvd_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }

void cvd_mbuf_get(const struct rte_mbuf *m, cvd_mbuf_view *out) {
  out->data = rte_pktmbuf_mtod(m, uint8_t *);
  out->len = m->data_len;
  out->headroom = rte_pktmbuf_headroom(m);
  out->tailroom = rte_pktmbuf_tailroom(m);
  out->nb_segs = m->nb_segs;
}

int cvd_mbuf_set(struct rte_mbuf *m, const uint8_t *data, uint32_t len) {
  const uint8_t *base = (const uint8_t *)m->buf_addr;
  if (data < base) return -1;
  uintptr_t off = (uintptr_t)(data - base);
  if (off > UINT16_MAX || off + len > m->buf_len) return -1;
  m->data_off = (uint16_t)off;
  m->data_len = (uint16_t)len;
  m->pkt_len = len;
  return 0;
}

unsigned cvd_lcore_id(void) { return rte_lcore_id(); }

int cvd_errno(void) { return rte_errno; }
