/*
 * cvlan.c — plugin registration, startup configuration, attaching to the table segment,
 * tenant interface bindings.
 *
 * startup.conf:
 *   cvlan {
 *     segment /dev/shm/cvlan-tables     # written by vrouterd; attached when it appears
 *     workers 0                         # fast-path workers to open (0 = one per thread)
 *     port 51820                        # WireGuard UDP port of the underlay address
 *     underlay-table 0                  # IP table (VRF) of the underlay
 *     socket /run/cvlan/vpp-cvlan.sock  # our punt socket (vrouterd --dpdk-socket)
 *     sidecar-socket /run/cvlan/vrouterd-punt.sock  # vrouterd --punt-socket
 *   }
 */
#include "cvlan.h"

#include <vnet/plugin/plugin.h>
#include <vnet/feature/feature.h>
#include <vnet/fib/fib_table.h>
#include <vnet/udp/udp_local.h>
#include <vpp/app/version.h>

cvlan_main_t cvlan_main;

const char *cvlan_fp_rc_str (int rc)
{
  switch (rc)
    {
    case CVLAN_FP_OK:
      return "ok";
    case CVLAN_FP_ERR_INVAL:
      return "invalid argument";
    case CVLAN_FP_ERR_SEGMENT:
      return "segment missing, corrupt or of another ABI version";
    case CVLAN_FP_ERR_WORKER:
      return "worker id beyond the segment's max_workers";
    case CVLAN_FP_ERR_PANIC:
      return "fast path panicked (bug)";
    default:
      return "unknown error";
    }
}

int cvlan_attach (cvlan_main_t *cm, const char *path, u32 n_workers)
{
  u32 n_threads = vec_len (cm->per_thread);
  cvlan_fp_worker **opened = 0;
  int rc = CVLAN_FP_OK;

  if (cvlan_fp_abi_version () != CVLAN_FP_ABI_VERSION)
    return CVLAN_FP_ERR_SEGMENT;
  if (n_workers == 0 || n_workers > n_threads)
    n_workers = n_threads;

  /* Open everything first: a failure leaves the running workers untouched. */
  for (u32 t = 0; t < n_workers; t++)
    {
      cvlan_fp_worker *w = 0;
      rc = cvlan_fp_worker_open (path, t, &w);
      if (rc != CVLAN_FP_OK)
        break;
      vec_add1 (opened, w);
    }
  if (rc != CVLAN_FP_OK)
    {
      for (u32 t = 0; t < vec_len (opened); t++)
        cvlan_fp_worker_close (opened[t]);
      vec_free (opened);
      cm->last_attach_rc = rc;
      return rc;
    }

  /* Swap (the caller holds the barrier: no node is running). */
  for (u32 t = 0; t < n_threads; t++)
    {
      cvlan_per_thread_t *pt = vec_elt_at_index (cm->per_thread, t);
      cvlan_fp_worker *old = pt->worker;
      pt->worker = t < vec_len (opened) ? opened[t] : 0;
      cvlan_fp_worker_close (old);
    }
  cm->n_attached = vec_len (opened);
  cm->last_attach_rc = CVLAN_FP_OK;
  vec_free (opened);
  return CVLAN_FP_OK;
}

void cvlan_detach (cvlan_main_t *cm)
{
  cvlan_per_thread_t *pt;
  vec_foreach (pt, cm->per_thread)
    {
      cvlan_fp_worker_close (pt->worker);
      pt->worker = 0;
    }
  cm->n_attached = 0;
}

clib_error_t *cvlan_interface_bind (cvlan_main_t *cm, u32 sw_if_index, u32 tenant,
                                    u32 local_iface, int is_add)
{
  /* Direct-indexed in the nodes: keep the local interface ids small. */
  if (local_iface != ~0u && local_iface >= (1 << 16))
    return clib_error_return (0, "local-iface id %u too large (< 65536)", local_iface);

  vec_validate_init_empty (cm->tenant_by_sw_if_index, sw_if_index, ~0u);
  if (is_add)
    {
      cm->tenant_by_sw_if_index[sw_if_index] = tenant;
      if (local_iface != ~0u)
        {
          vec_validate_init_empty (cm->sw_if_index_by_local_iface, local_iface, ~0u);
          cm->sw_if_index_by_local_iface[local_iface] = sw_if_index;
        }
    }
  else
    {
      cm->tenant_by_sw_if_index[sw_if_index] = ~0u;
      for (u32 i = 0; i < vec_len (cm->sw_if_index_by_local_iface); i++)
        if (cm->sw_if_index_by_local_iface[i] == sw_if_index)
          cm->sw_if_index_by_local_iface[i] = ~0u;
    }
  vnet_feature_enable_disable ("ip4-unicast", "cvlan4-encrypt", sw_if_index, is_add, 0, 0);
  vnet_feature_enable_disable ("ip6-unicast", "cvlan6-encrypt", sw_if_index, is_add, 0, 0);
  return 0;
}

static clib_error_t *cvlan_config (CLIB_UNUSED (vlib_main_t *vm), unformat_input_t *input)
{
  cvlan_main_t *cm = &cvlan_main;
  u8 *s = 0;
  u32 v;

  while (unformat_check_input (input) != (uword) UNFORMAT_END_OF_INPUT)
    {
      if (unformat (input, "segment %s", &s))
        {
          vec_free (cm->segment_path);
          cm->segment_path = s;
          vec_add1 (cm->segment_path, 0);
          cm->attach_wanted = 1;
          s = 0;
        }
      else if (unformat (input, "workers %u", &v))
        cm->want_workers = v;
      else if (unformat (input, "port %u", &v) && v > 0 && v < 65536)
        cm->wg_port = (u16) v;
      else if (unformat (input, "underlay-table %u", &v))
        cm->underlay_table_id = v;
      else if (unformat (input, "socket %s", &s))
        {
          vec_free (cm->socket_path);
          cm->socket_path = s;
          vec_add1 (cm->socket_path, 0);
          s = 0;
        }
      else if (unformat (input, "sidecar-socket %s", &s))
        {
          vec_free (cm->sidecar_path);
          cm->sidecar_path = s;
          vec_add1 (cm->sidecar_path, 0);
          s = 0;
        }
      else
        return clib_error_return (0, "cvlan: unknown input '%U'", format_unformat_error,
                                  input);
    }
  return 0;
}

VLIB_CONFIG_FUNCTION (cvlan_config, "cvlan");

static clib_error_t *cvlan_init (CLIB_UNUSED (vlib_main_t *vm))
{
  cvlan_main_t *cm = &cvlan_main;

  cm->wg_port = 51820;
  cm->punt_fd = -1;
  cm->punt_file_index = ~0u;
  cm->segment_path = format (0, "/dev/shm/cvlan-tables%c", 0);
  cm->socket_path = format (0, "/run/cvlan/vpp-cvlan.sock%c", 0);
  cm->sidecar_path = format (0, "/run/cvlan/vrouterd-punt.sock%c", 0);
  cm->log_class = vlib_log_register_class ("cvlan", 0);
  return 0;
}

VLIB_INIT_FUNCTION (cvlan_init);

/* After configuration and thread setup, before packets flow: per-thread state, the UDP port,
 * the punt socket. */
static clib_error_t *cvlan_main_loop_enter (vlib_main_t *vm)
{
  cvlan_main_t *cm = &cvlan_main;
  clib_error_t *err;

  vec_validate_aligned (cm->per_thread, vlib_get_thread_main ()->n_vlib_mains - 1,
                        CLIB_CACHE_LINE_BYTES);

  cm->underlay_fib_index[0] = fib_table_find (FIB_PROTOCOL_IP4, cm->underlay_table_id);
  cm->underlay_fib_index[1] = fib_table_find (FIB_PROTOCOL_IP6, cm->underlay_table_id);
  if (cm->underlay_fib_index[0] == ~0u || cm->underlay_fib_index[1] == ~0u)
    return clib_error_return (0, "cvlan: underlay-table %u does not exist",
                              cm->underlay_table_id);

  cm->ip4_lookup_index = vlib_get_node_by_name (vm, (u8 *) "ip4-lookup")->index;
  cm->ip6_lookup_index = vlib_get_node_by_name (vm, (u8 *) "ip6-lookup")->index;

  udp_register_dst_port (vm, cm->wg_port, cvlan4_decrypt_node.index, /* is_ip4 */ 1);
  udp_register_dst_port (vm, cm->wg_port, cvlan6_decrypt_node.index, /* is_ip4 */ 0);
  cm->port_registered = 1;

  if ((err = cvlan_punt_socket_open (cm)))
    {
      /* Forwarding works without it; handshakes wait until `cvlan punt-socket reopen`. */
      cvlan_log_err ("%U", format_clib_error, err);
      clib_error_free (err);
    }

  /* cvlan-attach-process attaches within a second of the main loop starting. */
  return 0;
}

VLIB_MAIN_LOOP_ENTER_FUNCTION (cvlan_main_loop_enter);

/* Retries attaching every second until the segment exists (vrouterd may start later), and
 * says why it cannot, once per distinct reason. */
static uword cvlan_attach_process (vlib_main_t *vm, CLIB_UNUSED (vlib_node_runtime_t *rt),
                                   CLIB_UNUSED (vlib_frame_t *f))
{
  cvlan_main_t *cm = &cvlan_main;
  int last_logged = 1;

  while (1)
    {
      vlib_process_wait_for_event_or_clock (vm, 1.0);
      vlib_process_get_events (vm, 0);
      if (!cm->attach_wanted || cm->n_attached || !vec_len (cm->per_thread))
        continue;
      vlib_worker_thread_barrier_sync (vm);
      int rc = cvlan_attach (cm, (char *) cm->segment_path, cm->want_workers);
      vlib_worker_thread_barrier_release (vm);
      if (rc == CVLAN_FP_OK)
        {
          cvlan_log_notice ("attached to %s with %u workers", cm->segment_path,
                            cm->n_attached);
          last_logged = 1;
        }
      else if (rc != last_logged)
        {
          cvlan_log_err ("cannot attach to %s: %s (retrying every second)", cm->segment_path,
                         cvlan_fp_rc_str (rc));
          last_logged = rc;
        }
    }
  return 0;
}

VLIB_REGISTER_NODE (cvlan_attach_process_node) = {
  .function = cvlan_attach_process,
  .type = VLIB_NODE_TYPE_PROCESS,
  .name = "cvlan-attach-process",
};

VLIB_PLUGIN_REGISTER () = {
  .version = VPP_BUILD_VER,
  .description = "CloudVLAN gateway: WireGuard, per-tenant ACLs and routes in a Rust fast path",
};
