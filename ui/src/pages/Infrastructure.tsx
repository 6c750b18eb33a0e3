import { useMemo, useState } from "react";
import { keys, regions, relays, type Region, type Relay } from "../api/entities";
import { useAll, useConfirmed, useInvalidate, usePagedList } from "../api/hooks";
import { useSession } from "../auth/session";
import { Mono, PageHeader, Time } from "../components/bits";
import { FormDialog, str } from "../components/forms";
import { Table } from "../components/Table";

export function RegionsPage() {
  const { caps } = useSession();
  const key = keys.global("regions");
  const list = usePagedList(key, regions.list);
  const confirmed = useConfirmed();
  const invalidate = useInvalidate();
  const [editing, setEditing] = useState<Region | "new" | null>(null);
  const canWrite = caps.can("region", "write");
  return (
    <>
      <PageHeader title="Regions" subtitle="Where relays and vrouters run.">
        {canWrite && (
          <button type="button" className="primary" onClick={() => setEditing("new")}>
            New region
          </button>
        )}
      </PageHeader>
      <Table
        label="Regions"
        rows={list.items}
        rowKey={(r) => r.id ?? ""}
        isLoading={list.isLoading}
        error={list.error}
        empty="No regions"
        hasMore={list.hasNextPage}
        loadingMore={list.isFetchingNextPage}
        onMore={() => list.fetchNextPage()}
        columns={[
          { header: "Name", cell: (r) => <strong>{r.name}</strong> },
          { header: "Description", cell: (r) => r.description || <span className="muted">—</span> },
          { header: "Created", cell: (r) => <Time iso={r.createdAt} /> },
          {
            header: "",
            className: "row-actions",
            cell: (r) =>
              canWrite && (
                <>
                  <button type="button" className="small" onClick={() => setEditing(r)}>
                    Edit
                  </button>
                  <button
                    type="button"
                    className="small danger"
                    onClick={() =>
                      confirmed({
                        title: `Delete region ${r.name}?`,
                        message: "Relays and vrouters in it keep running but lose their region.",
                        confirmLabel: "Delete region",
                        run: () => regions.remove(r.id ?? ""),
                        invalidate: [key],
                        success: `Region ${r.name} deleted`,
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
          title={editing === "new" ? "New region" : `Edit region ${editing.name}`}
          submitLabel={editing === "new" ? "Create region" : "Save"}
          success={editing === "new" ? "Region created" : "Region saved"}
          initial={editing === "new" ? { name: "", description: "" } : { name: editing.name ?? "", description: editing.description ?? "" }}
          fields={[
            { name: "name", label: "Name", kind: "text", required: true, placeholder: "eu-central" },
            { name: "description", label: "Description", kind: "text", placeholder: "Frankfurt" },
          ]}
          onClose={() => setEditing(null)}
          onSubmit={async (v) => {
            const body: Region = { name: str(v, "name"), description: str(v, "description") };
            if (editing === "new") await regions.create(body);
            else await regions.update(editing.id ?? "", body);
            await invalidate(key);
          }}
        />
      )}
    </>
  );
}

export function RelaysPage() {
  const { caps } = useSession();
  const key = keys.global("relays");
  const list = usePagedList(key, relays.list);
  const rg = useAll(keys.global("regions"), regions.list);
  const regionName = useMemo(() => new Map((rg.data?.items ?? []).map((r) => [r.id ?? "", r.name ?? ""])), [rg.data]);
  const confirmed = useConfirmed();
  const invalidate = useInvalidate();
  const [editing, setEditing] = useState<Relay | "new" | null>(null);
  const canWrite = caps.can("relay", "write");
  return (
    <>
      <PageHeader title="Relays" subtitle="Relays forward traffic between nodes that cannot reach each other directly.">
        {canWrite && (
          <button type="button" className="primary" onClick={() => setEditing("new")}>
            New relay
          </button>
        )}
      </PageHeader>
      <Table
        label="Relays"
        rows={list.items}
        rowKey={(r) => r.id ?? ""}
        isLoading={list.isLoading}
        error={list.error}
        empty="No relays"
        hasMore={list.hasNextPage}
        loadingMore={list.isFetchingNextPage}
        onMore={() => list.fetchNextPage()}
        columns={[
          { header: "Name", cell: (r) => <strong>{r.name}</strong> },
          { header: "Region", cell: (r) => regionName.get(r.regionId ?? "") ?? r.regionId ?? <span className="muted">—</span> },
          { header: "Endpoint", cell: (r) => <Mono>{r.endpoint}</Mono> },
          { header: "Created", cell: (r) => <Time iso={r.createdAt} /> },
          {
            header: "",
            className: "row-actions",
            cell: (r) =>
              canWrite && (
                <>
                  <button type="button" className="small" onClick={() => setEditing(r)}>
                    Edit
                  </button>
                  <button
                    type="button"
                    className="small danger"
                    onClick={() =>
                      confirmed({
                        title: `Delete relay ${r.name}?`,
                        message: "Nodes stop using it at their next map update.",
                        confirmLabel: "Delete relay",
                        run: () => relays.remove(r.id ?? ""),
                        invalidate: [key],
                        success: `Relay ${r.name} deleted`,
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
          title={editing === "new" ? "New relay" : `Edit relay ${editing.name}`}
          submitLabel={editing === "new" ? "Create relay" : "Save"}
          success={editing === "new" ? "Relay created" : "Relay saved"}
          initial={
            editing === "new"
              ? { name: "", regionId: "", endpoint: "" }
              : { name: editing.name ?? "", regionId: editing.regionId ?? "", endpoint: editing.endpoint ?? "" }
          }
          fields={[
            { name: "name", label: "Name", kind: "text", required: true, placeholder: "relay-fra-1" },
            {
              name: "regionId",
              label: "Region",
              kind: "select",
              options: [{ value: "", label: "— none —" }, ...(rg.data?.items ?? []).map((r) => ({ value: r.id ?? "", label: r.name ?? "" }))],
            },
            { name: "endpoint", label: "Endpoint", kind: "text", required: true, placeholder: "relay.example.com:3478" },
          ]}
          onClose={() => setEditing(null)}
          onSubmit={async (v) => {
            const body: Relay = { name: str(v, "name"), regionId: str(v, "regionId"), endpoint: str(v, "endpoint") };
            if (editing === "new") await relays.create(body);
            else await relays.update(editing.id ?? "", body);
            await invalidate(key);
          }}
        />
      )}
    </>
  );
}
