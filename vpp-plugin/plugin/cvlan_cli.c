/*
 * cvlan_cli.c — `cvlan attach|detach|interface|punt-socket`, `show cvlan tables|peers|
 * counters`, and the JSON of STATS_REP. None of these commands is mp-safe, so VPP runs them
 * with the workers stopped at the barrier: reading a fast-path worker's counters or
 * swapping workers never races a node.
 */
#include "cvlan.h"

static const char *const next_names[CVLAN_FP_NEXT_COUNT] = { "drop", "underlay", "local",
                                                             "punt" };

static clib_error_t *cvlan_attach_command_fn (vlib_main_t *vm, unformat_input_t *input,
                                              CLIB_UNUSED (vlib_cli_command_t *cmd))
{
  cvlan_main_t *cm = &cvlan_main;
  u8 *path = 0;
  u32 workers = 0;

  while (unformat_check_input (input) != (uword) UNFORMAT_END_OF_INPUT)
    {
      if (unformat (input, "segment %s", &path))
        ;
      else if (unformat (input, "workers %u", &workers))
        ;
      else
        {
          vec_free (path);
          return clib_error_return (0, "unknown input '%U'", format_unformat_error, input);
        }
    }
  if (!path)
    return clib_error_return (0, "usage: cvlan attach segment <path> [workers <n>]");
  vec_add1 (path, 0);
  if (!vec_len (cm->per_thread))
    {
      vec_free (path);
      return clib_error_return (0, "cvlan: not initialised yet");
    }
  int rc = cvlan_attach (cm, (char *) path, workers);
  if (rc != CVLAN_FP_OK)
    {
      clib_error_t *e =
        clib_error_return (0, "cannot attach to %s: %s", path, cvlan_fp_rc_str (rc));
      vec_free (path);
      return e;
    }
  vec_free (cm->segment_path);
  cm->segment_path = path;
  cm->want_workers = workers;
  cm->attach_wanted = 1;
  vlib_cli_output (vm, "attached to %s: %u workers", path, cm->n_attached);
  return 0;
}

VLIB_CLI_COMMAND (cvlan_attach_command, static) = {
  .path = "cvlan attach",
  .short_help = "cvlan attach segment <path> [workers <n>]",
  .function = cvlan_attach_command_fn,
};

static clib_error_t *cvlan_detach_command_fn (CLIB_UNUSED (vlib_main_t *vm),
                                              CLIB_UNUSED (unformat_input_t *input),
                                              CLIB_UNUSED (vlib_cli_command_t *cmd))
{
  cvlan_main_t *cm = &cvlan_main;
  cvlan_detach (cm);
  cm->attach_wanted = 0;
  return 0;
}

VLIB_CLI_COMMAND (cvlan_detach_command, static) = {
  .path = "cvlan detach",
  .short_help = "cvlan detach",
  .function = cvlan_detach_command_fn,
};

static clib_error_t *cvlan_interface_command_fn (CLIB_UNUSED (vlib_main_t *vm),
                                                 unformat_input_t *input,
                                                 CLIB_UNUSED (vlib_cli_command_t *cmd))
{
  cvlan_main_t *cm = &cvlan_main;
  vnet_main_t *vnm = vnet_get_main ();
  u32 sw_if_index = ~0u, tenant = ~0u, local_iface = ~0u;
  int is_add = 1;

  while (unformat_check_input (input) != (uword) UNFORMAT_END_OF_INPUT)
    {
      if (unformat (input, "%U", unformat_vnet_sw_interface, vnm, &sw_if_index))
        ;
      else if (unformat (input, "tenant %u", &tenant))
        ;
      else if (unformat (input, "local-iface %u", &local_iface))
        ;
      else if (unformat (input, "del"))
        is_add = 0;
      else
        return clib_error_return (0, "unknown input '%U'", format_unformat_error, input);
    }
  if (sw_if_index == ~0u || (is_add && tenant == ~0u))
    return clib_error_return (
      0, "usage: cvlan interface <interface> tenant <slot> [local-iface <id>] [del]");
  /* vrouterd numbers each tenant's local interface by its tenant slot. */
  if (is_add && local_iface == ~0u)
    local_iface = tenant;
  return cvlan_interface_bind (cm, sw_if_index, tenant, local_iface, is_add);
}

VLIB_CLI_COMMAND (cvlan_interface_command, static) = {
  .path = "cvlan interface",
  .short_help = "cvlan interface <interface> tenant <slot> [local-iface <id>] [del]",
  .function = cvlan_interface_command_fn,
};

static clib_error_t *cvlan_punt_socket_command_fn (CLIB_UNUSED (vlib_main_t *vm),
                                                   CLIB_UNUSED (unformat_input_t *input),
                                                   CLIB_UNUSED (vlib_cli_command_t *cmd))
{
  return cvlan_punt_socket_open (&cvlan_main);
}

VLIB_CLI_COMMAND (cvlan_punt_socket_command, static) = {
  .path = "cvlan punt-socket reopen",
  .short_help = "cvlan punt-socket reopen",
  .function = cvlan_punt_socket_command_fn,
};

static clib_error_t *show_cvlan_tables_fn (vlib_main_t *vm, CLIB_UNUSED (unformat_input_t *input),
                                           CLIB_UNUSED (vlib_cli_command_t *cmd))
{
  cvlan_main_t *cm = &cvlan_main;
  vnet_main_t *vnm = vnet_get_main ();
  cvlan_per_thread_t *pt;

  vlib_cli_output (vm, "segment %s: %s, %u of %u threads attached (last attach: %s)",
                   cm->segment_path, cm->n_attached ? "attached" : "not attached",
                   cm->n_attached, vec_len (cm->per_thread),
                   cvlan_fp_rc_str (cm->last_attach_rc));
  vlib_cli_output (vm, "fast path ABI %u (plugin built for %u), WireGuard port %u%s",
                   cvlan_fp_abi_version (), CVLAN_FP_ABI_VERSION, cm->wg_port,
                   cm->port_registered ? "" : " (not registered)");
  vlib_cli_output (vm, "underlay table %u (fib index ip4 %u ip6 %u)", cm->underlay_table_id,
                   cm->underlay_fib_index[0], cm->underlay_fib_index[1]);
  vec_foreach (pt, cm->per_thread)
    {
      cvlan_fp_stats st;
      if (pt->worker && cvlan_fp_worker_stats (pt->worker, &st) == CVLAN_FP_OK)
        vlib_cli_output (vm, "  thread %u: table generation %lu", (u32) (pt - cm->per_thread),
                         st.generation);
      else
        vlib_cli_output (vm, "  thread %u: no worker", (u32) (pt - cm->per_thread));
    }
  for (u32 sw = 0; sw < vec_len (cm->tenant_by_sw_if_index); sw++)
    if (cm->tenant_by_sw_if_index[sw] != ~0u)
      vlib_cli_output (vm, "  interface %U: tenant slot %u", format_vnet_sw_if_index_name,
                       vnm, sw, cm->tenant_by_sw_if_index[sw]);
  for (u32 li = 0; li < vec_len (cm->sw_if_index_by_local_iface); li++)
    if (cm->sw_if_index_by_local_iface[li] != ~0u)
      vlib_cli_output (vm, "  local interface %u -> %U", li, format_vnet_sw_if_index_name,
                       vnm, cm->sw_if_index_by_local_iface[li]);
  return 0;
}

VLIB_CLI_COMMAND (show_cvlan_tables_command, static) = {
  .path = "show cvlan tables",
  .short_help = "show cvlan tables",
  .function = show_cvlan_tables_fn,
};

/* Sum of one peer's (or tenant's) counters over all workers. */
static int sum_counters (cvlan_main_t *cm, int tenant, u32 slot, cvlan_fp_counters *sum)
{
  cvlan_per_thread_t *pt;
  int any = 0;
  clib_memset (sum, 0, sizeof (*sum));
  vec_foreach (pt, cm->per_thread)
    {
      cvlan_fp_counters c;
      if (!pt->worker)
        continue;
      int rc = tenant ? cvlan_fp_tenant_counters (pt->worker, slot, &c) :
                        cvlan_fp_peer_counters (pt->worker, slot, &c);
      if (rc != CVLAN_FP_OK)
        continue;
      sum->rx_packets += c.rx_packets;
      sum->rx_bytes += c.rx_bytes;
      sum->tx_packets += c.tx_packets;
      sum->tx_bytes += c.tx_bytes;
      sum->drops += c.drops;
      any |= c.rx_packets || c.tx_packets || c.drops;
    }
  return any;
}

static clib_error_t *show_cvlan_peers_fn (vlib_main_t *vm, unformat_input_t *input,
                                          CLIB_UNUSED (vlib_cli_command_t *cmd))
{
  cvlan_main_t *cm = &cvlan_main;
  u32 max = 65536, shown = 0;
  int tenants = 0;

  while (unformat_check_input (input) != (uword) UNFORMAT_END_OF_INPUT)
    {
      if (unformat (input, "max %u", &max))
        ;
      else if (unformat (input, "tenants"))
        tenants = 1;
      else
        return clib_error_return (0, "unknown input '%U'", format_unformat_error, input);
    }
  if (!cm->n_attached)
    return clib_error_return (0, "not attached to a segment");
  /* The ABI does not say how many slots a generation has; slots that never saw a packet
   * read as zero and are skipped. Keys and endpoints are vrouterd's (`vrouterctl peers`). */
  vlib_cli_output (vm, "%-8s %14s %16s %14s %16s %12s", tenants ? "tenant" : "peer",
                   "rx packets", "rx bytes", "tx packets", "tx bytes", "drops");
  for (u32 slot = 0; slot < max; slot++)
    {
      cvlan_fp_counters c;
      if (!sum_counters (cm, tenants, slot, &c))
        continue;
      vlib_cli_output (vm, "%-8u %14lu %16lu %14lu %16lu %12lu", slot, c.rx_packets,
                       c.rx_bytes, c.tx_packets, c.tx_bytes, c.drops);
      shown++;
    }
  vlib_cli_output (vm, "%u %s with traffic", shown, tenants ? "tenants" : "peers");
  return 0;
}

VLIB_CLI_COMMAND (show_cvlan_peers_command, static) = {
  .path = "show cvlan peers",
  .short_help = "show cvlan peers [tenants] [max <slots>]",
  .function = show_cvlan_peers_fn,
};

static clib_error_t *show_cvlan_counters_fn (vlib_main_t *vm,
                                             CLIB_UNUSED (unformat_input_t *input),
                                             CLIB_UNUSED (vlib_cli_command_t *cmd))
{
  cvlan_main_t *cm = &cvlan_main;
  cvlan_per_thread_t *pt;
  static const char *const node_names[4] = { "wg-decrypt", "acl", "route", "wg-encrypt" };

  vec_foreach (pt, cm->per_thread)
    {
      cvlan_fp_stats st;
      u32 t = (u32) (pt - cm->per_thread);
      if (!pt->worker || cvlan_fp_worker_stats (pt->worker, &st) != CVLAN_FP_OK)
        {
          vlib_cli_output (vm, "thread %u: no worker; punt sent %lu failed %lu", t,
                           pt->punt_sent, pt->punt_failed);
          continue;
        }
      vlib_cli_output (vm, "thread %u: %lu packets in %lu batches (%.1f per batch), "
                           "generation %lu",
                       t, st.packets, st.batches,
                       st.batches ? (f64) st.packets / (f64) st.batches : 0.0,
                       st.generation);
      for (u32 i = 0; i < CVLAN_FP_NEXT_COUNT; i++)
        vlib_cli_output (vm, "  %-10s %lu", next_names[i], st.next[i]);
      for (u32 r = 0; r < CVLAN_FP_REASON_COUNT; r++)
        if (r != CVLAN_FP_REASON_NONE && st.reason[r])
          vlib_cli_output (vm, "  reason %-20s %lu", cvlan_fp_reason_name ((u16) r),
                           st.reason[r]);
      for (u32 i = 0; i < 4; i++)
        vlib_cli_output (vm, "  %-10s %.1f clocks/packet", node_names[i],
                         st.packets ? (f64) st.node_ticks[i] / (f64) st.packets : 0.0);
      vlib_cli_output (vm, "  punt sent %lu failed %lu", pt->punt_sent, pt->punt_failed);
    }
  vlib_cli_output (vm, "punt socket: %s; from vrouterd: %lu injected, %lu dropped, %lu bad",
                   cm->punt_fd >= 0 ? "open" : "closed", cm->tx_injected, cm->tx_dropped,
                   cm->rx_bad);
  return 0;
}

VLIB_CLI_COMMAND (show_cvlan_counters_command, static) = {
  .path = "show cvlan counters",
  .short_help = "show cvlan counters",
  .function = show_cvlan_counters_fn,
};

/* STATS_REP payload, the same shape vrouter-dpdk answers (notes: "Punt protocol"); VPP's
 * interfaces are not the plugin's ports, so "ports" is empty (use `show interface`).
 * Barrier held by the caller. */
u8 *format_cvlan_stats_json (u8 *s, va_list *args)
{
  cvlan_main_t *cm = va_arg (*args, cvlan_main_t *);
  cvlan_per_thread_t *pt;
  u64 sent = 0, failed = 0;
  int first = 1;

  s = format (s, "{\"ports\":[],\"workers\":[");
  vec_foreach (pt, cm->per_thread)
    {
      cvlan_fp_stats st;
      sent += pt->punt_sent;
      failed += pt->punt_failed;
      if (!pt->worker || cvlan_fp_worker_stats (pt->worker, &st) != CVLAN_FP_OK)
        continue;
      s = format (s, "%s{\"worker\":%u,\"batches\":%lu,\"packets\":%lu,\"next\":{", first ? "" : ",",
                  (u32) (pt - cm->per_thread), st.batches, st.packets);
      first = 0;
      for (u32 i = 0; i < CVLAN_FP_NEXT_COUNT; i++)
        s = format (s, "%s\"%s\":%lu", i ? "," : "", next_names[i], st.next[i]);
      s = format (s, "},\"reasons\":{");
      int rf = 1;
      for (u32 r = 0; r < CVLAN_FP_REASON_COUNT; r++)
        if (st.reason[r])
          {
            s = format (s, "%s\"%s\":%lu", rf ? "" : ",", cvlan_fp_reason_name ((u16) r),
                        st.reason[r]);
            rf = 0;
          }
      s = format (s, "},\"generation\":%lu,\"peers\":{},\"tenants\":{}}", st.generation);
    }
  s = format (s,
              "],\"punt\":{\"sent\":%lu,\"dropped\":%lu,\"tx_injected\":%lu},"
              "\"arp\":{\"entries\":0,\"misses\":0},"
              "\"segment\":{\"path\":\"%s\",\"attached\":%s,\"error\":",
              sent, failed, cm->tx_injected, cm->segment_path,
              cm->n_attached ? "true" : "false");
  if (cm->last_attach_rc == CVLAN_FP_OK)
    s = format (s, "null}}");
  else
    s = format (s, "\"%s\"}}", cvlan_fp_rc_str (cm->last_attach_rc));
  return s;
}
