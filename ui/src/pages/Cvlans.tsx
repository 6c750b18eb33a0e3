import { useState } from "react";
import { Link } from "react-router";
import { cvlans, keys, type Cvlan, type CvlanMode } from "../api/entities";
import { useConfirmed, useInvalidate, usePagedList } from "../api/hooks";
import { useSession } from "../auth/session";
import { Badge, Mono, PageHeader, Time, Usage } from "../components/bits";
import { FormDialog, str } from "../components/forms";
import { Table } from "../components/Table";
import { useTenant } from "../tenant";

export const MODE_LABELS: Record<CvlanMode, string> = {
  CVLAN_MODE_UNSPECIFIED: "Mesh",
  CVLAN_MODE_MESH: "Mesh",
  CVLAN_MODE_HUB_AND_SPOKE: "Hub and spoke",
};

export function CvlansPage() {
  const t = useTenant();
  const { caps } = useSession();
  const key = keys.t(t.id, "cvlans");
  const list = usePagedList(key, (tok) => cvlans.list(t.id, tok));
  const confirmed = useConfirmed();
  const invalidate = useInvalidate();
  const [editing, setEditing] = useState<Cvlan | "new" | null>(null);
  const canWrite = caps.can("cvlan", "write", t.id);

  return (
    <>
      <PageHeader title="CVLANs" subtitle={`Overlay networks of ${t.tenant.displayName || t.name} — nodes of one CVLAN reach each other, subject to policies.`}>
        {canWrite && (
          <button type="button" className="primary" onClick={() => setEditing("new")}>
            New CVLAN
          </button>
        )}
      </PageHeader>
      <Table
        label="CVLANs"
        rows={list.items}
        rowKey={(c) => c.id ?? ""}
        isLoading={list.isLoading}
        error={list.error}
        empty="No CVLANs yet"
        emptyHint={canWrite ? "Create a CVLAN with an IPv4 prefix such as 10.20.0.0/24; the IPv6 ULA prefix is generated." : undefined}
        hasMore={list.hasNextPage}
        loadingMore={list.isFetchingNextPage}
        onMore={() => list.fetchNextPage()}
        columns={[
          {
            header: "Name",
            cell: (c) => (
              <>
                <strong>{c.name}</strong>
                {c.description && <div className="muted small-text">{c.description}</div>}
              </>
            ),
          },
          { header: "IPv4", cell: (c) => <Mono>{c.ipv4Prefix}</Mono> },
          { header: "IPv6", cell: (c) => <Mono>{c.ipv6Prefix}</Mono> },
          { header: "Mode", cell: (c) => <Badge>{MODE_LABELS[c.mode ?? "CVLAN_MODE_UNSPECIFIED"]}</Badge> },
          {
            header: "Addresses",
            cell: (c) => (
              <Link to={`/t/${t.id}/addresses?cvlan=${c.id}`} className="plain">
                <Usage used={Number(c.addressesUsed ?? 0)} total={Number(c.addressesTotal ?? 0)} />
              </Link>
            ),
          },
          { header: "Created", cell: (c) => <Time iso={c.createdAt} /> },
          {
            header: "",
            className: "row-actions",
            cell: (c) =>
              canWrite && (
                <>
                  <button type="button" className="small" onClick={() => setEditing(c)}>
                    Edit
                  </button>
                  <button
                    type="button"
                    className="small danger"
                    onClick={() =>
                      confirmed({
                        title: `Delete CVLAN ${c.name}?`,
                        message: "Its address reservations, tokens and external peers go with it. A CVLAN that still has nodes cannot be deleted.",
                        confirmLabel: "Delete CVLAN",
                        run: () => cvlans.remove(t.id, c.id ?? ""),
                        invalidate: [key],
                        success: `CVLAN ${c.name} deleted`,
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
          title={editing === "new" ? "New CVLAN" : `Edit CVLAN ${editing.name}`}
          submitLabel={editing === "new" ? "Create CVLAN" : "Save"}
          success={editing === "new" ? "CVLAN created" : "CVLAN saved"}
          initial={
            editing === "new"
              ? { name: "", description: "", ipv4Prefix: "", ipv6Prefix: "", mode: "CVLAN_MODE_MESH" }
              : {
                  name: editing.name ?? "",
                  description: editing.description ?? "",
                  ipv4Prefix: editing.ipv4Prefix ?? "",
                  ipv6Prefix: editing.ipv6Prefix ?? "",
                  mode: editing.mode ?? "CVLAN_MODE_MESH",
                }
          }
          fields={[
            { name: "name", label: "Name", kind: "text", required: true, placeholder: "office" },
            { name: "description", label: "Description", kind: "text" },
            {
              name: "ipv4Prefix",
              label: "IPv4 prefix",
              kind: "text",
              required: true,
              placeholder: "10.20.0.0/24",
              disabled: editing !== "new",
              help: editing === "new" ? "Between /8 and /30; must not overlap another CVLAN of this tenant." : "Prefixes cannot change after creation.",
            },
            {
              name: "ipv6Prefix",
              label: "IPv6 prefix",
              kind: "text",
              placeholder: "generated (fdXX:…::/64)",
              disabled: editing !== "new",
              help: editing === "new" ? "Optional unique local prefix (fc00::/7); leave empty to generate one." : undefined,
            },
            {
              name: "mode",
              label: "Mode",
              kind: "select",
              options: [
                { value: "CVLAN_MODE_MESH", label: "Mesh — nodes talk directly" },
                { value: "CVLAN_MODE_HUB_AND_SPOKE", label: "Hub and spoke — through the CVLAN's vrouters" },
              ],
            },
          ]}
          onClose={() => setEditing(null)}
          onSubmit={async (v) => {
            const mode = str(v, "mode") as CvlanMode;
            if (editing === "new") {
              const body: Cvlan = { name: str(v, "name"), description: str(v, "description"), ipv4Prefix: str(v, "ipv4Prefix"), mode };
              if (str(v, "ipv6Prefix")) body.ipv6Prefix = str(v, "ipv6Prefix");
              await cvlans.create(t.id, body);
            } else {
              await cvlans.update(t.id, editing.id ?? "", { name: str(v, "name"), description: str(v, "description"), mode });
            }
            await invalidate(key);
          }}
        />
      )}
    </>
  );
}
