/*
 * cvlan_node.c — the decrypt nodes (UDP dispatch on the WireGuard port) and the encrypt
 * features (ip4-unicast / ip6-unicast on tenant interfaces), IPv4 and IPv6, one body.
 *
 * Per frame: gather descriptors from the vlib buffers, ONE fast-path call (through the glue)
 * for the whole frame, scatter the results back into the buffers, enqueue by next index.
 * No locks: each thread uses its own fast-path worker; attach/detach swap them under the
 * worker barrier.
 */
#include "cvlan.h"

#include <vnet/interface_output.h>

typedef struct {
  u32 ingress;
  u32 aux;
  u16 next;    /* CVLAN_NEXT_* */
  u16 error;   /* reason or glue error */
  u16 len_in;
  u16 len_out;
  u8 is_decrypt;
} cvlan_trace_t;

/* This file is also compiled once per CPU variant (MULTIARCH_SOURCES): what is not the node
 * function itself is defined in the default variant only. */
#ifndef CLIB_MARCH_VARIANT
u8 *format_cvlan_trace (u8 *s, va_list *args)
{
  CLIB_UNUSED (vlib_main_t * vm) = va_arg (*args, vlib_main_t *);
  CLIB_UNUSED (vlib_node_t * node) = va_arg (*args, vlib_node_t *);
  cvlan_trace_t *t = va_arg (*args, cvlan_trace_t *);
  static const char *const nexts[] = {
#define _(n, s) s,
    foreach_cvlan_next
#undef _
  };

  if (t->ingress == CVLAN_FP_INGRESS_UNDERLAY)
    s = format (s, "cvlan %s: from underlay", t->is_decrypt ? "decrypt" : "encrypt");
  else
    s = format (s, "cvlan %s: from tenant %u", t->is_decrypt ? "decrypt" : "encrypt",
                t->ingress);
  s = format (s, " -> %s reason %s aux %u len %u -> %u",
              t->next < CVLAN_N_NEXT ? nexts[t->next] : "?", cvlan_glue_error_name (t->error),
              t->aux, t->len_in, t->len_out);
  return s;
}

static vlib_error_desc_t cvlan_error_counters[] = {
#define _(n, v, s) { .name = s, .desc = s, .severity = VL_COUNTER_SEVERITY_INFO },
  foreach_cvlan_fp_reason
#undef _
#define _(n, s, d) { .name = s, .desc = d, .severity = VL_COUNTER_SEVERITY_ERROR },
  foreach_cvlan_glue_error
#undef _
};

STATIC_ASSERT (ARRAY_LEN (cvlan_error_counters) == CVLAN_GLUE_N_ERROR,
               "one counter per reason and glue error");
#endif /* CLIB_MARCH_VARIANT */

static const cvlan_glue_nexts cvlan_node_nexts = {
  .drop = CVLAN_NEXT_DROP,
  .punt = CVLAN_NEXT_PUNT,
  .underlay = { CVLAN_NEXT_IP4_LOOKUP, CVLAN_NEXT_IP6_LOOKUP },
  .local = { CVLAN_NEXT_IP4_LOOKUP, CVLAN_NEXT_IP6_LOOKUP },
};

/* Flags that describe the packet the buffer held before the fast path rewrote it. */
#define CVLAN_STALE_FLAGS                                                              \
  (VNET_BUFFER_F_L4_CHECKSUM_COMPUTED | VNET_BUFFER_F_L4_CHECKSUM_CORRECT |            \
   VNET_BUFFER_F_L2_HDR_OFFSET_VALID | VNET_BUFFER_F_L3_HDR_OFFSET_VALID |             \
   VNET_BUFFER_F_L4_HDR_OFFSET_VALID | VNET_BUFFER_F_IS_IP4 | VNET_BUFFER_F_IS_IP6)

static_always_inline uword
cvlan_node_inline (vlib_main_t *vm, vlib_node_runtime_t *node, vlib_frame_t *frame,
                   int is_ip4, int is_decrypt)
{
  cvlan_main_t *cm = &cvlan_main;
  u32 thread_index = vm->thread_index;
  u32 *from = vlib_frame_vector_args (frame);
  u32 n = frame->n_vectors;
  vlib_buffer_t *bufs[VLIB_FRAME_SIZE];
  u16 nexts[VLIB_BUFFER_ENQUEUE_MIN_SIZE (VLIB_FRAME_SIZE)];
  const i32 data_size = (i32) vlib_buffer_get_default_data_size (vm);
  u32 k = 0;

  vlib_get_buffers (vm, from, bufs, n);

  if (PREDICT_FALSE (thread_index >= vec_len (cm->per_thread)))
    {
      /* Before the main loop set up per-thread state: nothing can be processed. */
      for (u32 i = 0; i < n; i++)
        {
          bufs[i]->error = node->errors[CVLAN_GLUE_ERROR_NOT_ATTACHED];
          nexts[i] = CVLAN_NEXT_DROP;
        }
      vlib_buffer_enqueue_to_next (vm, node, from, nexts, n);
      return n;
    }
  cvlan_per_thread_t *pt = vec_elt_at_index (cm->per_thread, thread_index);

  /* Gather. Buffers the fast path cannot take (chained, GSO) are dropped here and left
   * out of the batch. */
  for (u32 i = 0; i < n; i++)
    {
      vlib_buffer_t *b = bufs[i];
      u32 ingress = CVLAN_FP_INGRESS_UNDERLAY;

      if (is_decrypt)
        /* udp-local advanced past the IP and UDP headers; the fast path parses from the
         * outer IP header, whose offset ip4-local / ip6-local recorded. */
        vlib_buffer_advance (b, vnet_buffer (b)->l3_hdr_offset - b->current_data);
      else
        {
          u32 sw = vnet_buffer (b)->sw_if_index[VLIB_RX];
          ingress = sw < vec_len (cm->tenant_by_sw_if_index) ? cm->tenant_by_sw_if_index[sw] :
                                                                ~0u;
        }

      if (PREDICT_FALSE (b->flags & VLIB_BUFFER_NEXT_PRESENT))
        {
          b->error = node->errors[CVLAN_GLUE_ERROR_CHAINED];
          nexts[i] = CVLAN_NEXT_DROP;
          continue;
        }
      if (!is_decrypt)
        {
          if (PREDICT_FALSE (b->flags & VNET_BUFFER_F_GSO))
            {
              b->error = node->errors[CVLAN_GLUE_ERROR_GSO];
              nexts[i] = CVLAN_NEXT_DROP;
              continue;
            }
          /* Checksums left to the NIC must be written before the payload is sealed. */
          vnet_calc_checksums_inline (vm, b, is_ip4, !is_ip4);
        }

      cvlan_glue_pkt *p = &pt->pkts[k];
      p->data = vlib_buffer_get_current (b);
      p->len = b->current_length;
      p->headroom = (u32) (VLIB_BUFFER_PRE_DATA_SIZE + b->current_data);
      i32 tail = data_size - b->current_data - (i32) b->current_length;
      p->tailroom = tail > 0 ? (u32) tail : 0;
      p->ingress = ingress;
      pt->slot_of[k++] = (u16) i;
    }

  /* One call into the fast path for the whole frame (n ≤ VLIB_FRAME_SIZE = 256). */
  cvlan_glue_process (pt->worker, &pt->scratch, pt->pkts, k, &cvlan_node_nexts, pt->nexts,
                      pt->errors, pt->aux, pt->verdict, &pt->tally);

  /* Scatter. */
  for (u32 j = 0; j < k; j++)
    {
      u32 i = pt->slot_of[j];
      vlib_buffer_t *b = bufs[i];
      cvlan_glue_pkt *p = &pt->pkts[j];
      u16 next = pt->nexts[j];
      u16 err = pt->errors[j];
      u16 len_in = (u16) b->current_length;

      switch (pt->verdict[j])
        {
        case CVLAN_FP_NEXT_UNDERLAY:
        case CVLAN_FP_NEXT_LOCAL:
          /* The glue checked that data stayed inside [pre_data, data + data_size). */
          b->current_data += (i16) (p->data - (u8 *) vlib_buffer_get_current (b));
          b->current_length = p->len;
          b->flags &= ~CVLAN_STALE_FLAGS;
          if (pt->verdict[j] == CVLAN_FP_NEXT_UNDERLAY)
            {
              /* Sealed for a peer: look the outer destination up in the underlay table,
               * whatever interface (tenant or underlay) the packet came in on. */
              int fam = next == CVLAN_NEXT_IP6_LOOKUP;
              vnet_buffer (b)->sw_if_index[VLIB_TX] = cm->underlay_fib_index[fam];
            }
          else
            {
              /* Decrypted for the tenant's own network: enter it as if received on the
               * tenant interface, so ip4-lookup / ip6-lookup use that interface's table. */
              u32 li = pt->aux[j];
              u32 sw = li < vec_len (cm->sw_if_index_by_local_iface) ?
                         cm->sw_if_index_by_local_iface[li] :
                         ~0u;
              if (PREDICT_FALSE (sw == ~0u))
                {
                  next = CVLAN_NEXT_DROP;
                  err = CVLAN_GLUE_ERROR_NO_INTERFACE;
                  b->error = node->errors[err];
                  break;
                }
              vnet_buffer (b)->sw_if_index[VLIB_RX] = sw;
              vnet_buffer (b)->sw_if_index[VLIB_TX] = ~0u;
            }
          break;
        case CVLAN_FP_NEXT_PUNT:
          /* Left as received (decrypt: outer IP header; encrypt: the inner packet). The
           * punt node reads the reason back from the error code. */
          b->current_data += (i16) (p->data - (u8 *) vlib_buffer_get_current (b));
          b->current_length = p->len;
          b->error = node->errors[err];
          break;
        default:
          b->error = node->errors[err];
          break;
        }
      nexts[i] = next;

      if (PREDICT_FALSE ((node->flags & VLIB_NODE_FLAG_TRACE) &&
                         (b->flags & VLIB_BUFFER_IS_TRACED)))
        {
          cvlan_trace_t *t = vlib_add_trace (vm, node, b, sizeof (*t));
          t->ingress = p->ingress;
          t->aux = pt->aux[j];
          t->next = next;
          t->error = err;
          t->len_in = len_in;
          t->len_out = (u16) b->current_length;
          t->is_decrypt = (u8) is_decrypt;
        }
    }

  /* Punts are not drops, so error-drop does not count them: count them per reason here. */
  for (u32 e = 0; e < CVLAN_GLUE_N_ERROR; e++)
    if (pt->tally.passed_with_reason[e])
      vlib_node_increment_counter (vm, node->node_index, e, pt->tally.passed_with_reason[e]);

  vlib_buffer_enqueue_to_next (vm, node, from, nexts, n);
  return n;
}

VLIB_NODE_FN (cvlan4_decrypt_node)
(vlib_main_t *vm, vlib_node_runtime_t *node, vlib_frame_t *frame)
{
  return cvlan_node_inline (vm, node, frame, /* is_ip4 */ 1, /* is_decrypt */ 1);
}

VLIB_NODE_FN (cvlan6_decrypt_node)
(vlib_main_t *vm, vlib_node_runtime_t *node, vlib_frame_t *frame)
{
  return cvlan_node_inline (vm, node, frame, 0, 1);
}

VLIB_NODE_FN (cvlan4_encrypt_node)
(vlib_main_t *vm, vlib_node_runtime_t *node, vlib_frame_t *frame)
{
  return cvlan_node_inline (vm, node, frame, 1, 0);
}

VLIB_NODE_FN (cvlan6_encrypt_node)
(vlib_main_t *vm, vlib_node_runtime_t *node, vlib_frame_t *frame)
{
  return cvlan_node_inline (vm, node, frame, 0, 0);
}

#ifndef CLIB_MARCH_VARIANT
#define cvlan_node_common                                                              \
  .vector_size = sizeof (u32), .format_trace = format_cvlan_trace,                     \
  .type = VLIB_NODE_TYPE_INTERNAL, .n_errors = CVLAN_GLUE_N_ERROR,                     \
  .error_counters = cvlan_error_counters, .n_next_nodes = CVLAN_N_NEXT,                \
  .next_nodes = {                                                                      \
    [CVLAN_NEXT_DROP] = "error-drop",                                                  \
    [CVLAN_NEXT_PUNT] = "cvlan-punt",                                                  \
    [CVLAN_NEXT_IP4_LOOKUP] = "ip4-lookup",                                            \
    [CVLAN_NEXT_IP6_LOOKUP] = "ip6-lookup",                                            \
  }

VLIB_REGISTER_NODE (cvlan4_decrypt_node) = {
  .name = "cvlan4-decrypt",
  cvlan_node_common,
};

VLIB_REGISTER_NODE (cvlan6_decrypt_node) = {
  .name = "cvlan6-decrypt",
  cvlan_node_common,
};

VLIB_REGISTER_NODE (cvlan4_encrypt_node) = {
  .name = "cvlan4-encrypt",
  cvlan_node_common,
};

VLIB_REGISTER_NODE (cvlan6_encrypt_node) = {
  .name = "cvlan6-encrypt",
  cvlan_node_common,
};

/* Enabled per tenant interface by `cvlan interface … tenant …`. */
VNET_FEATURE_INIT (cvlan4_encrypt_feature, static) = {
  .arc_name = "ip4-unicast",
  .node_name = "cvlan4-encrypt",
};

VNET_FEATURE_INIT (cvlan6_encrypt_feature, static) = {
  .arc_name = "ip6-unicast",
  .node_name = "cvlan6-encrypt",
};
#endif /* CLIB_MARCH_VARIANT */
