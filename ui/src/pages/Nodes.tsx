import { useMemo, useState } from "react";
import { cvlans, keys, nodes, type Node } from "../api/entities";
import { useAll, useConfirmed, useInvalidate, usePagedList } from "../api/hooks";
import { useSession } from "../auth/session";
import { Badge, Mono, PageHeader, Time } from "../components/bits";
import { FormDialog, joinList, splitList, str } from "../components/forms";
import { Table } from "../components/Table";
import { useTenant } from "../tenant";

/** How often the node list is refreshed while on screen (online state, endpoints). */
export const NODE_REFRESH_MS = 5000;

export function nodeStatus(n: Node, now = Date.now()): { label: string; tone: "ok" | "warn" | "bad" | "neutral" } {
  if (n.expiresAt && Date.parse(n.expiresAt) <= now) return { label: "expired", tone: "bad" };
  if (n.online) return { label: "online", tone: "ok" };
  return { label: "offline", tone: "neutral" };
}

export function NodesPage() {
  const t = useTenant();
  const { caps } = useSession();
  const key = keys.t(t.id, "nodes");
  const list = usePagedList(key, (tok) => nodes.list(t.id, tok), { refetchInterval: NODE_REFRESH_MS });
  const cv = useAll(keys.t(t.id, "cvlans"), (tok) => cvlans.list(t.id, tok));
  const cvName = useMemo(() => new Map((cv.data?.items ?? []).map((c) => [c.id ?? "", c.name ?? ""])), [cv.data]);
  const confirmed = useConfirmed();
  const invalidate = useInvalidate();
  const [editing, setEditing] = useState<Node | null>(null);
  const [filter, setFilter] = useState({ cvlan: "", text: "", onlineOnly: false });
  const canWrite = caps.can("node", "write", t.id);

  const rows = list.items.filter((n) => {
    if (filter.cvlan && n.cvlanId !== filter.cvlan) return false;
    if (filter.onlineOnly && !n.online) return false;
    const q = filter.text.trim().toLowerCase();
    if (!q) return true;
    return [n.name, n.ipv4, n.ipv6, n.os, ...(n.tags ?? [])].some((s) => (s ?? "").toLowerCase().includes(q));
  });
  const online = list.items.filter((n) => n.online).length;

  return (
    <>
      <PageHeader
        title="Nodes"
        subtitle={
          <>
            {list.items.length} node{list.items.length === 1 ? "" : "s"}, {online} online · refreshed every {NODE_REFRESH_MS / 1000} s
            {list.isFetching && !list.isLoading ? " · updating…" : ""}
          </>
        }
      />
      <div className="filters">
        <input aria-label="Search nodes" placeholder="Search name, address, tag…" value={filter.text} onChange={(e) => setFilter({ ...filter, text: e.target.value })} />
        <select aria-label="CVLAN" value={filter.cvlan} onChange={(e) => setFilter({ ...filter, cvlan: e.target.value })}>
          <option value="">All CVLANs</option>
          {(cv.data?.items ?? []).map((c) => (
            <option key={c.id} value={c.id}>
              {c.name}
            </option>
          ))}
        </select>
        <label className="check">
          <input type="checkbox" checked={filter.onlineOnly} onChange={(e) => setFilter({ ...filter, onlineOnly: e.target.checked })} /> Online only
        </label>
      </div>
      <Table
        label="Nodes"
        rows={rows}
        rowKey={(n) => n.id ?? ""}
        isLoading={list.isLoading}
        error={list.error}
        empty={list.items.length ? "No node matches the filter" : "No nodes yet"}
        emptyHint={list.items.length ? undefined : "Create a registration token and run `cvlan up --server https://CONTROL:8443 --auth-key …` on a machine to add it."}
        hasMore={list.hasNextPage}
        loadingMore={list.isFetchingNextPage}
        onMore={() => list.fetchNextPage()}
        columns={[
          {
            header: "Node",
            cell: (n) => (
              <>
                <strong>{n.name}</strong>
                <div className="muted small-text">
                  {n.os || "unknown OS"}
                  {n.ephemeral ? " · ephemeral" : ""}
                </div>
              </>
            ),
          },
          {
            header: "Status",
            cell: (n) => {
              const s = nodeStatus(n);
              return <Badge tone={s.tone}>{s.label}</Badge>;
            },
          },
          { header: "Last seen", cell: (n) => (n.online ? <span className="muted">now</span> : <Time iso={n.lastSeen} empty="never" />) },
          { header: "CVLAN", cell: (n) => cvName.get(n.cvlanId ?? "") ?? <Mono>{n.cvlanId}</Mono> },
          {
            header: "Addresses",
            cell: (n) => (
              <div className="stack">
                <Mono>{n.ipv4}</Mono>
                <Mono>{n.ipv6}</Mono>
              </div>
            ),
          },
          {
            header: "Endpoints",
            cell: (n) =>
              (n.endpoints ?? []).length === 0 ? (
                <span className="muted">—</span>
              ) : (
                <div className="stack">
                  {(n.endpoints ?? []).map((e) => (
                    <Mono key={`${e.kind}-${e.address}`} title={e.kind}>
                      {e.address}
                    </Mono>
                  ))}
                </div>
              ),
          },
          {
            header: "Tags",
            cell: (n) => (
              <div className="chips">
                {(n.tags ?? []).map((tag) => (
                  <span key={tag} className="chip">
                    {tag}
                  </span>
                ))}
              </div>
            ),
          },
          { header: "Expires", cell: (n) => <Time iso={n.expiresAt} empty="never" /> },
          {
            header: "",
            className: "row-actions",
            cell: (n) =>
              canWrite && (
                <>
                  <button type="button" className="small" onClick={() => setEditing(n)}>
                    Edit
                  </button>
                  <button
                    type="button"
                    className="small"
                    onClick={() =>
                      confirmed({
                        title: `Expire node ${n.name}?`,
                        message: "It leaves every peer's map now and must register again with a new token.",
                        confirmLabel: "Expire node",
                        run: () => nodes.expire(t.id, n.id ?? ""),
                        invalidate: [key],
                        success: `Node ${n.name} expired`,
                      })
                    }
                  >
                    Expire
                  </button>
                  <button
                    type="button"
                    className="small danger"
                    onClick={() =>
                      confirmed({
                        title: `Delete node ${n.name}?`,
                        message: "The node is logged out and its addresses are released.",
                        confirmLabel: "Delete node",
                        run: () => nodes.remove(t.id, n.id ?? ""),
                        invalidate: [key, keys.t(t.id, "cvlans")],
                        success: `Node ${n.name} deleted`,
                      })
                    }
                  >
                    Delete
                  </button>
                </>
              ),
          },
        ]}
      />
      {editing && (
        <FormDialog
          title={`Edit node ${editing.name}`}
          submitLabel="Save"
          success="Node saved"
          initial={{ name: editing.name ?? "", tags: joinList(editing.tags) }}
          fields={[
            { name: "name", label: "Name", kind: "text", required: true },
            { name: "tags", label: "Tags", kind: "list", placeholder: "web, prod", help: "Comma separated; policies and groups select nodes by tag." },
          ]}
          onClose={() => setEditing(null)}
          onSubmit={async (v) => {
            await nodes.update(t.id, editing.id ?? "", { name: str(v, "name"), tags: splitList(str(v, "tags")) });
            await invalidate(key);
          }}
        />
      )}
    </>
  );
}
