/*
 * cvlan.h — CloudVLAN gateway plugin for VPP: shared state of the nodes, CLI and punt path.
 *
 * The plugin is a thin shell around the Rust fast path (cvlan_fastpath.h): graph nodes hand
 * each frame to it in one call through the glue (cvlan_glue.h) and move buffers on by the
 * verdicts. vrouterd writes the tables into a shared-memory segment and runs the WireGuard
 * handshakes it receives over the punt socket.
 */
#ifndef included_cvlan_h
#define included_cvlan_h

#include <sys/socket.h>
#include <sys/un.h>

#include <vlib/vlib.h>
#include <vnet/vnet.h>
#include <vnet/ip/ip.h>

#include "cvlan_glue.h"

/* Next nodes of the decrypt and encrypt nodes (the same four for all of them). */
#define foreach_cvlan_next                                                             \
  _(DROP, "error-drop")                                                                \
  _(PUNT, "cvlan-punt")                                                                \
  _(IP4_LOOKUP, "ip4-lookup")                                                          \
  _(IP6_LOOKUP, "ip6-lookup")

typedef enum {
#define _(n, s) CVLAN_NEXT_##n,
  foreach_cvlan_next
#undef _
  CVLAN_N_NEXT,
} cvlan_next_t;

/* Errors of the punt node. */
#define foreach_cvlan_punt_error                                                       \
  _(SENT, "sent", "punted to vrouterd")                                                \
  _(NO_SOCKET, "no_socket", "punt socket not open")                                    \
  _(SEND_FAILED, "send_failed", "vrouterd not listening or its queue is full")

typedef enum {
#define _(n, s, d) CVLAN_PUNT_ERROR_##n,
  foreach_cvlan_punt_error
#undef _
  CVLAN_PUNT_N_ERROR,
} cvlan_punt_error_t;

/* Per VPP thread: its fast-path worker and scratch. Only that thread touches it, except
 * under the worker barrier (CLI, attach). */
typedef struct {
  CLIB_CACHE_LINE_ALIGN_MARK (cacheline0);
  cvlan_fp_worker *worker;
  u64 punt_sent;
  u64 punt_failed;
  cvlan_glue_tally tally;
  cvlan_glue_pkt pkts[VLIB_FRAME_SIZE];
  u16 slot_of[VLIB_FRAME_SIZE]; /* packet k of the batch is buffer slot_of[k] of the frame */
  u16 nexts[VLIB_FRAME_SIZE];
  u16 errors[VLIB_FRAME_SIZE];
  u32 aux[VLIB_FRAME_SIZE];
  u8 verdict[VLIB_FRAME_SIZE];
  cvlan_glue_scratch scratch;
} cvlan_per_thread_t;

typedef struct {
  cvlan_per_thread_t *per_thread; /* vec, one per vlib thread */

  /* Segment: wanted (config or CLI) and attached. */
  u8 *segment_path; /* vec, NUL-terminated */
  u32 want_workers; /* 0 = one per thread */
  u32 n_attached;
  int last_attach_rc;
  u8 attach_wanted;

  /* Underlay. */
  u16 wg_port;
  u8 port_registered;
  u32 underlay_table_id;
  u32 underlay_fib_index[2]; /* [0] IPv4, [1] IPv6 */

  /* Tenant interfaces: rx sw_if_index -> tenant slot (~0 = none) for the encrypt feature,
   * and the tables' local interface ids -> sw_if_index for decrypted local delivery. */
  u32 *tenant_by_sw_if_index;
  u32 *sw_if_index_by_local_iface;

  /* Punt socket (Unix datagram): bound at socket_path, sends to sidecar_path. */
  int punt_fd;
  u8 *socket_path;  /* vec, NUL-terminated */
  u8 *sidecar_path; /* vec, NUL-terminated */
  struct sockaddr_un sidecar_addr;
  socklen_t sidecar_addr_len;
  u32 punt_file_index;
  u64 tx_injected;
  u64 tx_dropped;
  u64 rx_bad;

  u32 ip4_lookup_index;
  u32 ip6_lookup_index;
  vlib_log_class_t log_class;
} cvlan_main_t;

extern cvlan_main_t cvlan_main;

extern vlib_node_registration_t cvlan4_decrypt_node;
extern vlib_node_registration_t cvlan6_decrypt_node;
extern vlib_node_registration_t cvlan4_encrypt_node;
extern vlib_node_registration_t cvlan6_encrypt_node;
extern vlib_node_registration_t cvlan_punt_node;
extern vlib_node_registration_t cvlan_attach_process_node;

/* Opens one fast-path worker per thread (worker id = thread index; at most n_workers, 0 =
 * all) on the segment and swaps them in. Caller holds the worker barrier. Returns a
 * CVLAN_FP_* code; on failure the previous workers stay. */
int cvlan_attach (cvlan_main_t *cm, const char *path, u32 n_workers);
/* Closes every worker (barrier held). */
void cvlan_detach (cvlan_main_t *cm);
const char *cvlan_fp_rc_str (int rc);

/* Binds an interface to a tenant slot (and local interface id) and enables the encrypt
 * feature on it, or undoes it. */
clib_error_t *cvlan_interface_bind (cvlan_main_t *cm, u32 sw_if_index, u32 tenant,
                                    u32 local_iface, int is_add);

/* Punt socket: open/close (main thread). */
clib_error_t *cvlan_punt_socket_open (cvlan_main_t *cm);
void cvlan_punt_socket_close (cvlan_main_t *cm);

format_function_t format_cvlan_trace;
format_function_t format_cvlan_stats_json;

#define cvlan_log_err(...) vlib_log_err (cvlan_main.log_class, __VA_ARGS__)
#define cvlan_log_notice(...) vlib_log_notice (cvlan_main.log_class, __VA_ARGS__)

#endif /* included_cvlan_h */
