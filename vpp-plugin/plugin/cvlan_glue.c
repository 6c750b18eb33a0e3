/*
 * cvlan_glue.c — batches for the fast path, verdicts to next indices and error counters,
 * the punt header. Standard C only (see cvlan_glue.h).
 */
#include "cvlan_glue.h"

#include <string.h>

static const char *const own_names[] = {
#define _(n, s, d) s,
    foreach_cvlan_glue_error
#undef _
};

static const char *const own_descs[] = {
#define _(n, s, d) d,
    foreach_cvlan_glue_error
#undef _
};

static const char *const reason_descs[] = {
#define _(n, v, s) s,
    foreach_cvlan_fp_reason
#undef _
};

const char *cvlan_glue_error_name(uint32_t error) {
  if (error < CVLAN_FP_REASON_COUNT) return cvlan_fp_reason_name((uint16_t)error);
  if (error < CVLAN_GLUE_N_ERROR) return own_names[error - CVLAN_FP_REASON_COUNT];
  return "?";
}

const char *cvlan_glue_error_desc(uint32_t error) {
  /* The reason names are the descriptions as well: they are what vrouterctl and
   * vrouter-dpdk print, so `show errors` in VPP reads the same. */
  if (error < CVLAN_FP_REASON_COUNT) return reason_descs[error];
  if (error < CVLAN_GLUE_N_ERROR) return own_descs[error - CVLAN_FP_REASON_COUNT];
  return "?";
}

/* The fast path promises to keep data inside [start, end) of the region it was given; a
 * buffer that breaks it would corrupt VPP's memory further down the graph, so it is checked
 * (two subtractions per packet) and dropped rather than trusted. */
static int inside(const cvlan_glue_pkt *before, const cvlan_fp_buf *after) {
  const uint8_t *start = before->data - before->headroom;
  uint64_t total = (uint64_t)before->headroom + before->len + before->tailroom;
  if (after->data < start) return 0;
  uint64_t head = (uint64_t)(after->data - start);
  return head == after->headroom &&
         head + (uint64_t)after->len + (uint64_t)after->tailroom == total;
}

static void run_chunk(cvlan_fp_worker *w, cvlan_glue_scratch *s, cvlan_glue_pkt *pkts,
                      uint32_t n, const cvlan_glue_nexts *map, uint16_t *nexts,
                      uint16_t *errors, uint32_t *aux, uint8_t *verdict, cvlan_glue_tally *t) {
  for (uint32_t i = 0; i < n; i++) {
    s->bufs[i].data = pkts[i].data;
    s->bufs[i].len = pkts[i].len;
    s->bufs[i].headroom = pkts[i].headroom;
    s->bufs[i].tailroom = pkts[i].tailroom;
    s->bufs[i].ingress = pkts[i].ingress;
  }
  uint32_t done = cvlan_fp_process(w, s->bufs, s->verdicts, n);
  for (uint32_t i = 0; i < n; i++) {
    uint16_t next = CVLAN_FP_NEXT_DROP;
    uint32_t err = CVLAN_FP_REASON_INTERNAL;
    uint32_t a = 0;
    if (i < done) {
      const cvlan_fp_verdict *v = &s->verdicts[i];
      next = v->next;
      err = v->reason < CVLAN_FP_REASON_COUNT ? v->reason : (uint32_t)CVLAN_FP_REASON_INTERNAL;
      a = v->aux;
      if (next >= CVLAN_FP_NEXT_COUNT) {
        next = CVLAN_FP_NEXT_DROP;
        err = CVLAN_FP_REASON_INTERNAL;
      }
      if (next != CVLAN_FP_NEXT_DROP && !inside(&pkts[i], &s->bufs[i])) {
        next = CVLAN_FP_NEXT_DROP;
        err = CVLAN_GLUE_ERROR_OUT_OF_BOUNDS;
      }
    }
    if (next != CVLAN_FP_NEXT_DROP) {
      pkts[i].data = s->bufs[i].data;
      pkts[i].len = s->bufs[i].len;
      pkts[i].headroom = s->bufs[i].headroom;
      pkts[i].tailroom = s->bufs[i].tailroom;
    }
    uint16_t idx = map->drop;
    switch (next) {
    case CVLAN_FP_NEXT_UNDERLAY:
    case CVLAN_FP_NEXT_LOCAL: {
      int fam = pkts[i].len > 0 ? cvlan_glue_family(pkts[i].data) : -1;
      if (fam < 0) {
        next = CVLAN_FP_NEXT_DROP;
        err = CVLAN_GLUE_ERROR_BAD_FAMILY;
        break;
      }
      idx = next == CVLAN_FP_NEXT_UNDERLAY ? map->underlay[fam] : map->local[fam];
      break;
    }
    case CVLAN_FP_NEXT_PUNT:
      idx = map->punt;
      break;
    default:
      break;
    }
    nexts[i] = idx;
    errors[i] = (uint16_t)err;
    if (aux) aux[i] = a;
    if (verdict) verdict[i] = (uint8_t)next;
    t->next[next]++;
    if (next == CVLAN_FP_NEXT_DROP)
      t->dropped[err]++;
    else if (err != CVLAN_FP_REASON_NONE)
      t->passed_with_reason[err]++;
  }
  t->packets += n;
}

uint32_t cvlan_glue_process(cvlan_fp_worker *w, cvlan_glue_scratch *s, cvlan_glue_pkt *pkts,
                            uint32_t n, const cvlan_glue_nexts *map, uint16_t *nexts,
                            uint16_t *errors, uint32_t *aux, uint8_t *verdict,
                            cvlan_glue_tally *tally) {
  memset(tally, 0, sizeof(*tally));
  if (w == NULL) {
    for (uint32_t i = 0; i < n; i++) {
      nexts[i] = map->drop;
      errors[i] = CVLAN_GLUE_ERROR_NOT_ATTACHED;
      if (aux) aux[i] = 0;
      if (verdict) verdict[i] = CVLAN_FP_NEXT_DROP;
    }
    tally->packets = n;
    tally->next[CVLAN_FP_NEXT_DROP] = n;
    tally->dropped[CVLAN_GLUE_ERROR_NOT_ATTACHED] = n;
    return n;
  }
  for (uint32_t off = 0; off < n; off += CVLAN_FP_MAX_BATCH) {
    uint32_t k = n - off < CVLAN_FP_MAX_BATCH ? n - off : CVLAN_FP_MAX_BATCH;
    run_chunk(w, s, pkts + off, k, map, nexts + off, errors + off, aux ? aux + off : NULL,
              verdict ? verdict + off : NULL, tally);
  }
  return n;
}

static void put16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
}

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

void cvlan_punt_hdr_write(uint8_t out[CVLAN_PUNT_HDR_LEN], const cvlan_punt_hdr *h) {
  put16(out, (uint16_t)(CVLAN_PUNT_MAGIC & 0xffff));
  put16(out + 2, (uint16_t)(CVLAN_PUNT_MAGIC >> 16));
  out[4] = CVLAN_PUNT_VERSION;
  out[5] = h->kind;
  put16(out + 6, h->port);
  put16(out + 8, h->reason);
  put16(out + 10, h->worker);
  memset(out + 12, 0, 4);
}

int cvlan_punt_hdr_read(const uint8_t *p, size_t len, cvlan_punt_hdr *out) {
  if (len < CVLAN_PUNT_HDR_LEN) return -1;
  uint32_t magic = (uint32_t)get16(p) | ((uint32_t)get16(p + 2) << 16);
  if (magic != CVLAN_PUNT_MAGIC) return -2;
  if (p[4] != CVLAN_PUNT_VERSION) return -3;
  if (p[5] < CVLAN_PUNT_KIND_PUNT || p[5] > CVLAN_PUNT_KIND_STATS_REP) return -4;
  out->kind = p[5];
  out->port = get16(p + 6);
  out->reason = get16(p + 8);
  out->worker = get16(p + 10);
  return (int)CVLAN_PUNT_HDR_LEN;
}
