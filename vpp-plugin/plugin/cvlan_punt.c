/*
 * cvlan_punt.c — the slow path's door: packets the fast path punts (handshakes, cookies,
 * keepalives, unknown receivers, no keypair yet) go to vrouterd over a Unix datagram socket
 * with the punt header vrouter-dpdk uses too, and IP packets vrouterd sends back (kind TX:
 * handshake responses, cookie replies, keepalives) are injected into the underlay lookup.
 */
#include "cvlan.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <vlib/unix/unix.h>
/* file_main moved from vlib/unix/unix.h (24.10) to vlib/file.h (26.x). */
#if __has_include(<vlib/file.h>)
#include <vlib/file.h>
#endif

static vlib_error_desc_t cvlan_punt_error_counters[] = {
#define _(n, s, d) { .name = s, .desc = d, .severity = VL_COUNTER_SEVERITY_INFO },
  foreach_cvlan_punt_error
#undef _
};

typedef struct {
  u16 reason;
  u16 len;
  u8 sent;
} cvlan_punt_trace_t;

static u8 *format_cvlan_punt_trace (u8 *s, va_list *args)
{
  CLIB_UNUSED (vlib_main_t * vm) = va_arg (*args, vlib_main_t *);
  CLIB_UNUSED (vlib_node_t * node) = va_arg (*args, vlib_node_t *);
  cvlan_punt_trace_t *t = va_arg (*args, cvlan_punt_trace_t *);
  return format (s, "cvlan punt: reason %s len %u %s", cvlan_glue_error_name (t->reason),
                 t->len, t->sent ? "sent" : "not sent");
}

/* Punts are rare (handshakes every two minutes per peer, the first packets of a flow
 * without a session): one non-blocking sendmsg per packet from the thread that received
 * it is cheaper than handing them to the main thread. The datagram socket is shared; the
 * kernel serialises concurrent sends. */
VLIB_NODE_FN (cvlan_punt_node)
(vlib_main_t *vm, vlib_node_runtime_t *node, vlib_frame_t *frame)
{
  cvlan_main_t *cm = &cvlan_main;
  u32 *from = vlib_frame_vector_args (frame);
  u32 n = frame->n_vectors;
  u32 thread_index = vm->thread_index;
  u32 n_sent = 0, n_failed = 0;
  vlib_buffer_t *bufs[VLIB_FRAME_SIZE];

  vlib_get_buffers (vm, from, bufs, n);
  for (u32 i = 0; i < n; i++)
    {
      vlib_buffer_t *b = bufs[i];
      u8 hdr[CVLAN_PUNT_HDR_LEN];
      struct iovec iov[1 + 8];
      u32 n_iov = 0;
      u32 sw = vnet_buffer (b)->sw_if_index[VLIB_RX];
      cvlan_punt_hdr h = {
        .kind = CVLAN_PUNT_KIND_PUNT,
        .port = sw < 0xffff ? (u16) sw : 0xfffe,
        .reason = (u16) vlib_error_get_code (&vm->node_main, b->error),
        .worker = (u16) thread_index,
      };
      int ok = 0;

      cvlan_punt_hdr_write (hdr, &h);
      iov[n_iov].iov_base = hdr;
      iov[n_iov++].iov_len = sizeof (hdr);
      for (vlib_buffer_t *s = b; s && n_iov < ARRAY_LEN (iov);
           s = s->flags & VLIB_BUFFER_NEXT_PRESENT ? vlib_get_buffer (vm, s->next_buffer) : 0)
        {
          iov[n_iov].iov_base = vlib_buffer_get_current (s);
          iov[n_iov++].iov_len = s->current_length;
        }
      if (cm->punt_fd >= 0)
        {
          struct msghdr m = {
            .msg_name = &cm->sidecar_addr,
            .msg_namelen = cm->sidecar_addr_len,
            .msg_iov = iov,
            .msg_iovlen = n_iov,
          };
          ok = sendmsg (cm->punt_fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0;
        }
      n_sent += ok;
      n_failed += !ok;

      if (PREDICT_FALSE ((node->flags & VLIB_NODE_FLAG_TRACE) &&
                         (b->flags & VLIB_BUFFER_IS_TRACED)))
        {
          cvlan_punt_trace_t *t = vlib_add_trace (vm, node, b, sizeof (*t));
          t->reason = h.reason;
          t->len = (u16) b->current_length;
          t->sent = (u8) ok;
        }
    }

  if (thread_index < vec_len (cm->per_thread))
    {
      cm->per_thread[thread_index].punt_sent += n_sent;
      cm->per_thread[thread_index].punt_failed += n_failed;
    }
  vlib_node_increment_counter (vm, node->node_index, CVLAN_PUNT_ERROR_SENT, n_sent);
  vlib_node_increment_counter (vm, node->node_index,
                               cm->punt_fd >= 0 ? CVLAN_PUNT_ERROR_SEND_FAILED :
                                                  CVLAN_PUNT_ERROR_NO_SOCKET,
                               n_failed);
  vlib_buffer_free (vm, from, n);
  return n;
}

VLIB_REGISTER_NODE (cvlan_punt_node) = {
  .name = "cvlan-punt",
  .vector_size = sizeof (u32),
  .format_trace = format_cvlan_punt_trace,
  .type = VLIB_NODE_TYPE_INTERNAL,
  .n_errors = CVLAN_PUNT_N_ERROR,
  .error_counters = cvlan_punt_error_counters,
  .n_next_nodes = 0,
};

/* vrouterd -> us, kind TX: a complete IP packet from the underlay address; route it in the
 * underlay table. Main thread only (file handler). */
static void cvlan_inject (vlib_main_t *vm, cvlan_main_t *cm, const u8 *pkt, u32 len)
{
  int fam = len ? cvlan_glue_family (pkt) : -1;
  u32 bi;

  if (fam < 0 || len < 20 || len > vlib_buffer_get_default_data_size (vm) ||
      vlib_buffer_alloc (vm, &bi, 1) != 1)
    {
      cm->tx_dropped++;
      return;
    }
  vlib_buffer_t *b = vlib_get_buffer (vm, bi);
  clib_memcpy_fast (b->data, pkt, len);
  b->current_data = 0;
  b->current_length = len;
  b->flags |= VNET_BUFFER_F_LOCALLY_ORIGINATED;
  vnet_buffer (b)->sw_if_index[VLIB_RX] = 0;
  vnet_buffer (b)->sw_if_index[VLIB_TX] = cm->underlay_fib_index[fam];

  u32 node_index = fam ? cm->ip6_lookup_index : cm->ip4_lookup_index;
  vlib_frame_t *f = vlib_get_frame_to_node (vm, node_index);
  u32 *to = vlib_frame_vector_args (f);
  to[0] = bi;
  f->n_vectors = 1;
  vlib_put_frame_to_node (vm, node_index, f);
  cm->tx_injected++;
}

static void cvlan_stats_reply (vlib_main_t *vm, cvlan_main_t *cm, struct sockaddr_un *to,
                               socklen_t to_len)
{
  u8 *s;
  /* Worker counters may only be read while no worker runs. */
  vlib_worker_thread_barrier_sync (vm);
  s = format (0, "%U", format_cvlan_stats_json, cm);
  vlib_worker_thread_barrier_release (vm);

  u8 hdr[CVLAN_PUNT_HDR_LEN];
  cvlan_punt_hdr h = { .kind = CVLAN_PUNT_KIND_STATS_REP };
  cvlan_punt_hdr_write (hdr, &h);
  struct iovec iov[2] = { { hdr, sizeof (hdr) }, { s, vec_len (s) } };
  struct msghdr m = {
    .msg_name = to, .msg_namelen = to_len, .msg_iov = iov, .msg_iovlen = 2
  };
  if (sendmsg (cm->punt_fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
    cm->rx_bad++;
  vec_free (s);
}

static clib_error_t *cvlan_punt_read (clib_file_t *uf)
{
  vlib_main_t *vm = vlib_get_main ();
  cvlan_main_t *cm = &cvlan_main;
  static u8 buf[65536];

  /* Bounded per wake-up so a flood from the socket cannot starve the main thread. */
  for (int i = 0; i < 64; i++)
    {
      struct sockaddr_un from;
      socklen_t from_len = sizeof (from);
      ssize_t r = recvfrom (uf->file_descriptor, buf, sizeof (buf), MSG_DONTWAIT,
                            (struct sockaddr *) &from, &from_len);
      if (r < 0)
        break;
      cvlan_punt_hdr h;
      int off = cvlan_punt_hdr_read (buf, (size_t) r, &h);
      if (off < 0)
        {
          cm->rx_bad++;
          continue;
        }
      switch (h.kind)
        {
        case CVLAN_PUNT_KIND_TX:
          cvlan_inject (vm, cm, buf + off, (u32) (r - off));
          break;
        case CVLAN_PUNT_KIND_STATS_REQ:
          if (from_len > sizeof (sa_family_t))
            cvlan_stats_reply (vm, cm, &from, from_len);
          else
            cm->rx_bad++;
          break;
        default:
          cm->rx_bad++;
        }
    }
  return 0;
}

clib_error_t *cvlan_punt_socket_open (cvlan_main_t *cm)
{
  struct sockaddr_un a = { .sun_family = AF_UNIX };
  const char *path = (char *) cm->socket_path;
  const char *peer = (char *) cm->sidecar_path;

  if (strlen (path) >= sizeof (a.sun_path) || strlen (peer) >= sizeof (a.sun_path))
    return clib_error_return (0, "cvlan: punt socket path too long");
  cvlan_punt_socket_close (cm);

  int fd = socket (AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return clib_error_return_unix (0, "cvlan: socket");
  /* A stale path from a previous run would make bind fail; the directory is ours. */
  unlink (path);
  strcpy (a.sun_path, path);
  if (bind (fd, (struct sockaddr *) &a, sizeof (a)) < 0)
    {
      clib_error_t *e = clib_error_return_unix (0, "cvlan: bind %s", path);
      close (fd);
      return e;
    }
  /* Punted handshakes are bursty: room for a few thousand in the kernel queue. */
  int sz = 4 << 20;
  setsockopt (fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof (sz));
  setsockopt (fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof (sz));

  clib_memset (&cm->sidecar_addr, 0, sizeof (cm->sidecar_addr));
  cm->sidecar_addr.sun_family = AF_UNIX;
  strcpy (cm->sidecar_addr.sun_path, peer);
  cm->sidecar_addr_len = sizeof (cm->sidecar_addr);
  cm->punt_fd = fd;

  clib_file_t t = {
    .read_function = cvlan_punt_read,
    .file_descriptor = (u32) fd,
    .description = format (0, "cvlan punt socket %s", path),
  };
  cm->punt_file_index = clib_file_add (&file_main, &t);
  cvlan_log_notice ("punt socket %s -> vrouterd at %s", path, peer);
  return 0;
}

void cvlan_punt_socket_close (cvlan_main_t *cm)
{
  if (cm->punt_file_index != ~0u)
    {
      /* clib_file_del closes the descriptor. */
      clib_file_del_by_index (&file_main, cm->punt_file_index);
      cm->punt_file_index = ~0u;
      cm->punt_fd = -1;
    }
  else if (cm->punt_fd >= 0)
    {
      close (cm->punt_fd);
      cm->punt_fd = -1;
    }
}
