import { useMemo, useState } from "react";
import { cvlans, keys, regions, tenants, vrouters, type Vrouter, type VrouterAssignment } from "../api/entities";
import { useAll, useConfirmed, useInvalidate, usePagedList } from "../api/hooks";
import { useSession } from "../auth/session";
import { Mono, PageHeader, Time } from "../components/bits";
import { FormDialog, str } from "../components/forms";
import { Table } from "../components/Table";

function useCvlanNames(tenant: string) {
  const cv = useAll(keys.t(tenant, "cvlans"), (tok) => cvlans.list(tenant, tok), { enabled: tenant !== "" });
  return cv.data?.items ?? [];
}

function AssignmentLabel({ a, tenantName }: { a: VrouterAssignment; tenantName: Map<string, string> }) {
  const list = useCvlanNames(a.tenantId ?? "");
  const cv = a.cvlanId ? list.find((c) => c.id === a.cvlanId)?.name ?? a.cvlanId : "all CVLANs";
  return (
    <span>
      {tenantName.get(a.tenantId ?? "") ?? a.tenantId} / {cv}
    </span>
  );
}

function AssignmentRow({
  a,
  onChange,
  onRemove,
  tenantList,
  index,
}: {
  a: VrouterAssignment;
  onChange: (a: VrouterAssignment) => void;
  onRemove: () => void;
  tenantList: { id?: string; name?: string }[];
  index: number;
}) {
  const cvs = useCvlanNames(a.tenantId ?? "");
  return (
    <div className="inline-form">
      <select aria-label={`Assignment ${index + 1} tenant`} value={a.tenantId ?? ""} onChange={(e) => onChange({ tenantId: e.target.value, cvlanId: "" })}>
        <option value="">Choose a tenant…</option>
        {tenantList.map((t) => (
          <option key={t.id} value={t.id}>
            {t.name}
          </option>
        ))}
      </select>
      <select aria-label={`Assignment ${index + 1} CVLAN`} value={a.cvlanId ?? ""} onChange={(e) => onChange({ ...a, cvlanId: e.target.value })} disabled={!a.tenantId}>
        <option value="">All CVLANs of the tenant</option>
        {cvs.map((c) => (
          <option key={c.id} value={c.id}>
            {c.name}
          </option>
        ))}
      </select>
      <button type="button" className="small" onClick={onRemove}>
        Remove
      </button>
    </div>
  );
}

export function VroutersPage() {
  const { caps } = useSession();
  const key = keys.global("vrouters");
  const list = usePagedList(key, vrouters.list);
  const rg = useAll(keys.global("regions"), regions.list);
  const tn = useAll(keys.tenants, tenants.list);
  const regionName = useMemo(() => new Map((rg.data?.items ?? []).map((r) => [r.id ?? "", r.name ?? ""])), [rg.data]);
  const tenantName = useMemo(() => new Map((tn.data?.items ?? []).map((t) => [t.id ?? "", t.name ?? ""])), [tn.data]);
  const confirmed = useConfirmed();
  const invalidate = useInvalidate();
  const [editing, setEditing] = useState<Vrouter | "new" | null>(null);
  const [assignments, setAssignments] = useState<VrouterAssignment[]>([]);
  const canWrite = caps.can("vrouter", "write");

  const open = (v: Vrouter | "new") => {
    setAssignments(v === "new" ? [] : [...(v.assignments ?? [])]);
    setEditing(v);
  };

  return (
    <>
      <PageHeader title="VRouters" subtitle="Gateways that carry hub-and-spoke CVLANs, assigned to tenants or single CVLANs.">
        {canWrite && (
          <button type="button" className="primary" onClick={() => open("new")}>
            New vrouter
          </button>
        )}
      </PageHeader>
      <Table
        label="VRouters"
        rows={list.items}
        rowKey={(v) => v.id ?? ""}
        isLoading={list.isLoading}
        error={list.error}
        empty="No vrouters"
        hasMore={list.hasNextPage}
        loadingMore={list.isFetchingNextPage}
        onMore={() => list.fetchNextPage()}
        columns={[
          { header: "Name", cell: (v) => <strong>{v.name}</strong> },
          { header: "Region", cell: (v) => regionName.get(v.regionId ?? "") ?? v.regionId ?? <span className="muted">—</span> },
          { header: "Endpoint", cell: (v) => <Mono>{v.endpoint}</Mono> },
          { header: "Public key", cell: (v) => <Mono title={v.wgPublicKey}>{(v.wgPublicKey ?? "").slice(0, 12)}…</Mono> },
          {
            header: "Serves",
            cell: (v) =>
              (v.assignments ?? []).length === 0 ? (
                <span className="muted">nobody yet</span>
              ) : (
                <div className="stack">
                  {(v.assignments ?? []).map((a) => (
                    <AssignmentLabel key={`${a.tenantId}-${a.cvlanId}`} a={a} tenantName={tenantName} />
                  ))}
                </div>
              ),
          },
          { header: "Updated", cell: (v) => <Time iso={v.updatedAt ?? v.createdAt} /> },
          {
            header: "",
            className: "row-actions",
            cell: (v) =>
              canWrite && (
                <>
                  <button type="button" className="small" onClick={() => open(v)}>
                    Edit
                  </button>
                  <button
                    type="button"
                    className="small danger"
                    onClick={() =>
                      confirmed({
                        title: `Delete vrouter ${v.name}?`,
                        message: "Hub-and-spoke CVLANs it serves lose this gateway.",
                        confirmLabel: "Delete vrouter",
                        run: () => vrouters.remove(v.id ?? ""),
                        invalidate: [key],
                        success: `VRouter ${v.name} deleted`,
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
          title={editing === "new" ? "New vrouter" : `Edit vrouter ${editing.name}`}
          submitLabel={editing === "new" ? "Create vrouter" : "Save"}
          success={editing === "new" ? "VRouter created" : "VRouter saved"}
          initial={
            editing === "new"
              ? { name: "", regionId: "", wgPublicKey: "", endpoint: "" }
              : { name: editing.name ?? "", regionId: editing.regionId ?? "", wgPublicKey: editing.wgPublicKey ?? "", endpoint: editing.endpoint ?? "" }
          }
          fields={[
            { name: "name", label: "Name", kind: "text", required: true, placeholder: "vr-fra-1" },
            {
              name: "regionId",
              label: "Region",
              kind: "select",
              options: [{ value: "", label: "— none —" }, ...(rg.data?.items ?? []).map((r) => ({ value: r.id ?? "", label: r.name ?? "" }))],
            },
            { name: "wgPublicKey", label: "WireGuard public key", kind: "text", required: true },
            { name: "endpoint", label: "Endpoint", kind: "text", required: true, placeholder: "198.51.100.4:51820" },
          ]}
          onClose={() => setEditing(null)}
          onSubmit={async (v) => {
            const body: Vrouter = {
              name: str(v, "name"),
              regionId: str(v, "regionId"),
              wgPublicKey: str(v, "wgPublicKey"),
              endpoint: str(v, "endpoint"),
              assignments: assignments.filter((a) => a.tenantId),
            };
            if (editing === "new") await vrouters.create(body);
            else await vrouters.update(editing.id ?? "", body);
            await invalidate(key);
          }}
        >
          {() => (
            <fieldset className="members">
              <legend>Assignments</legend>
              {assignments.length === 0 && <p className="muted">Not assigned: serves no CVLAN.</p>}
              {assignments.map((a, i) => (
                <AssignmentRow
                  key={i}
                  index={i}
                  a={a}
                  tenantList={tn.data?.items ?? []}
                  onChange={(n) => setAssignments(assignments.map((x, j) => (j === i ? n : x)))}
                  onRemove={() => setAssignments(assignments.filter((_, j) => j !== i))}
                />
              ))}
              <button type="button" className="small link" onClick={() => setAssignments([...assignments, { tenantId: "", cvlanId: "" }])}>
                + assign to a tenant or CVLAN
              </button>
            </fieldset>
          )}
        </FormDialog>
      )}
    </>
  );
}
