import { useMemo, useState } from "react";
import { cvlans, externalPeers, keys, nodes, type ExternalPeer } from "../api/entities";
import { useAll, useConfirmed, useInvalidate, usePagedList } from "../api/hooks";
import { useSession } from "../auth/session";
import { Mono, PageHeader, Time } from "../components/bits";
import { FormDialog, joinList, splitList, str } from "../components/forms";
import { Table } from "../components/Table";
import { useTenant } from "../tenant";

export function ExternalPeersPage() {
  const t = useTenant();
  const { caps } = useSession();
  const key = keys.t(t.id, "external-peers");
  const list = usePagedList(key, (tok) => externalPeers.list(t.id, tok));
  const cv = useAll(keys.t(t.id, "cvlans"), (tok) => cvlans.list(t.id, tok));
  const ns = useAll(keys.t(t.id, "nodes"), (tok) => nodes.list(t.id, tok));
  const cvItems = useMemo(() => cv.data?.items ?? [], [cv.data]);
  const cvName = useMemo(() => new Map(cvItems.map((c) => [c.id ?? "", c.name ?? ""])), [cvItems]);
  const nodeName = useMemo(() => new Map((ns.data?.items ?? []).map((n) => [n.id ?? "", n.name ?? ""])), [ns.data]);
  const confirmed = useConfirmed();
  const invalidate = useInvalidate();
  const [editing, setEditing] = useState<ExternalPeer | "new" | null>(null);
  const [nodeIds, setNodeIds] = useState<string[]>([]);
  const canWrite = caps.can("externalPeer", "write", t.id);

  const open = (p: ExternalPeer | "new") => {
    setNodeIds(p === "new" ? [] : [...(p.nodeIds ?? [])]);
    setEditing(p);
  };

  return (
    <>
      <PageHeader title="External peers" subtitle="Plain WireGuard peers (site routers, phones with the stock app) that nodes of a CVLAN tunnel to directly.">
        {canWrite && (
          <button type="button" className="primary" onClick={() => open("new")} disabled={!cv.isSuccess || cvItems.length === 0}>
            New external peer
          </button>
        )}
      </PageHeader>
      <Table
        label="External peers"
        rows={list.items}
        rowKey={(p) => p.id ?? ""}
        isLoading={list.isLoading}
        error={list.error}
        empty="No external peers"
        hasMore={list.hasNextPage}
        loadingMore={list.isFetchingNextPage}
        onMore={() => list.fetchNextPage()}
        columns={[
          {
            header: "Name",
            cell: (p) => (
              <>
                <strong>{p.name}</strong>
                {p.description && <div className="muted small-text">{p.description}</div>}
              </>
            ),
          },
          { header: "CVLAN", cell: (p) => cvName.get(p.cvlanId ?? "") ?? p.cvlanId },
          { header: "Public key", cell: (p) => <Mono title={p.wgPublicKey}>{(p.wgPublicKey ?? "").slice(0, 12)}…</Mono> },
          { header: "Endpoint", cell: (p) => (p.endpoint ? <Mono>{p.endpoint}</Mono> : <span className="muted">dials in</span>) },
          { header: "Allowed IPs", cell: (p) => <div className="stack">{(p.allowedIps ?? []).map((a) => <Mono key={a}>{a}</Mono>)}</div> },
          { header: "Keepalive", cell: (p) => (p.persistentKeepaliveSeconds ? `${p.persistentKeepaliveSeconds} s` : "off") },
          {
            header: "Peers with",
            cell: (p) => ((p.nodeIds ?? []).length === 0 ? "every node" : (p.nodeIds ?? []).map((n) => nodeName.get(n) ?? n).join(", ")),
          },
          { header: "Updated", cell: (p) => <Time iso={p.updatedAt ?? p.createdAt} /> },
          {
            header: "",
            className: "row-actions",
            cell: (p) =>
              canWrite && (
                <>
                  <button type="button" className="small" onClick={() => open(p)}>
                    Edit
                  </button>
                  <button
                    type="button"
                    className="small danger"
                    onClick={() =>
                      confirmed({
                        title: `Remove external peer ${p.name}?`,
                        message: "Nodes drop the tunnel to it.",
                        confirmLabel: "Remove peer",
                        run: () => externalPeers.remove(t.id, p.id ?? ""),
                        invalidate: [key],
                        success: `External peer ${p.name} removed`,
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
          wide
          title={editing === "new" ? "New external peer" : `Edit external peer ${editing.name}`}
          submitLabel={editing === "new" ? "Add peer" : "Save"}
          success={editing === "new" ? "External peer added" : "External peer saved"}
          initial={
            editing === "new"
              ? { cvlan: cvItems[0]?.id ?? "", name: "", description: "", wgPublicKey: "", endpoint: "", allowedIps: "", keepalive: "25" }
              : {
                  cvlan: editing.cvlanId ?? "",
                  name: editing.name ?? "",
                  description: editing.description ?? "",
                  wgPublicKey: editing.wgPublicKey ?? "",
                  endpoint: editing.endpoint ?? "",
                  allowedIps: joinList(editing.allowedIps),
                  keepalive: String(editing.persistentKeepaliveSeconds ?? 0),
                }
          }
          fields={[
            {
              name: "cvlan",
              label: "CVLAN",
              kind: "select",
              required: true,
              disabled: editing !== "new",
              options: cvItems.map((c) => ({ value: c.id ?? "", label: c.name ?? "" })),
            },
            { name: "name", label: "Name", kind: "text", required: true, placeholder: "branch-router" },
            { name: "description", label: "Description", kind: "text" },
            { name: "wgPublicKey", label: "WireGuard public key", kind: "text", required: true, placeholder: "base64, 44 characters" },
            { name: "endpoint", label: "Endpoint", kind: "text", placeholder: "203.0.113.7:51820", help: "Leave empty when the peer dials in (it then needs keepalives)." },
            { name: "allowedIps", label: "Allowed IPs", kind: "list", required: true, placeholder: "10.20.0.200/32, 192.168.50.0/24" },
            { name: "keepalive", label: "Persistent keepalive (seconds, 0 = off)", kind: "number" },
          ]}
          onClose={() => setEditing(null)}
          onSubmit={async (v) => {
            const body: ExternalPeer = {
              name: str(v, "name"),
              description: str(v, "description"),
              wgPublicKey: str(v, "wgPublicKey"),
              endpoint: str(v, "endpoint"),
              allowedIps: splitList(str(v, "allowedIps")),
              persistentKeepaliveSeconds: Number(str(v, "keepalive") || 0),
              nodeIds,
            };
            if (editing === "new") await externalPeers.create(t.id, str(v, "cvlan"), body);
            else await externalPeers.update(t.id, editing.id ?? "", body);
            await invalidate(key);
          }}
        >
          {(v) => {
            const inCvlan = (ns.data?.items ?? []).filter((n) => n.cvlanId === str(v, "cvlan"));
            return (
              <fieldset className="members">
                <legend>Nodes that peer with it</legend>
                <p className="help">None ticked: every node of the CVLAN.</p>
                {inCvlan.length === 0 && <p className="muted">No nodes in this CVLAN yet.</p>}
                <div className="check-grid">
                  {inCvlan.map((n) => (
                    <label key={n.id} className="check">
                      <input
                        type="checkbox"
                        checked={nodeIds.includes(n.id ?? "")}
                        onChange={(e) => setNodeIds(e.target.checked ? [...nodeIds, n.id ?? ""] : nodeIds.filter((x) => x !== n.id))}
                      />{" "}
                      {n.name}
                    </label>
                  ))}
                </div>
              </fieldset>
            );
          }}
        </FormDialog>
      )}
    </>
  );
}
