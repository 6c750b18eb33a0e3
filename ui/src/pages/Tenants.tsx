import { useState } from "react";
import { Link } from "react-router";
import { keys, tenants, type Tenant } from "../api/entities";
import { useConfirmed, useInvalidate, usePagedList } from "../api/hooks";
import { useSession } from "../auth/session";
import { Mono, PageHeader, Time } from "../components/bits";
import { FormDialog, str } from "../components/forms";
import { Table } from "../components/Table";

export function TenantsPage() {
  const { caps } = useSession();
  const list = usePagedList(keys.tenants, tenants.list);
  const confirmed = useConfirmed();
  const invalidate = useInvalidate();
  const [editing, setEditing] = useState<Tenant | "new" | null>(null);
  const canWrite = caps.can("tenant", "write");

  return (
    <>
      <PageHeader title="Tenants" subtitle="Each tenant has its own CVLANs, nodes, users and policies, isolated from the others.">
        {canWrite && (
          <button type="button" className="primary" onClick={() => setEditing("new")}>
            New tenant
          </button>
        )}
      </PageHeader>
      <Table
        label="Tenants"
        rows={list.items}
        rowKey={(t) => t.id ?? ""}
        isLoading={list.isLoading}
        error={list.error}
        empty="No tenants yet"
        emptyHint="Create the first tenant to start adding CVLANs and nodes."
        hasMore={list.hasNextPage}
        loadingMore={list.isFetchingNextPage}
        onMore={() => list.fetchNextPage()}
        columns={[
          { header: "Name", cell: (t) => <Link to={`/t/${t.id}/cvlans`}>{t.name}</Link> },
          { header: "Display name", cell: (t) => t.displayName || <span className="muted">—</span> },
          { header: "ID", cell: (t) => <Mono>{t.id}</Mono> },
          { header: "Created", cell: (t) => <Time iso={t.createdAt} /> },
          {
            header: "",
            className: "row-actions",
            cell: (t) =>
              canWrite && (
                <>
                  <button type="button" className="small" onClick={() => setEditing(t)}>
                    Edit
                  </button>
                  <button
                    type="button"
                    className="small danger"
                    onClick={() =>
                      confirmed({
                        title: `Delete tenant ${t.name}?`,
                        message: (
                          <>
                            This deletes <strong>everything</strong> in the tenant: CVLANs, nodes, users, policies and tokens. Its
                            nodes are disconnected. This cannot be undone.
                          </>
                        ),
                        confirmLabel: "Delete tenant",
                        run: () => tenants.remove(t.id ?? ""),
                        invalidate: [keys.tenants],
                        success: `Tenant ${t.name} deleted`,
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
          title={editing === "new" ? "New tenant" : `Edit tenant ${editing.name}`}
          submitLabel={editing === "new" ? "Create tenant" : "Save"}
          success={editing === "new" ? "Tenant created" : "Tenant saved"}
          initial={editing === "new" ? { name: "", displayName: "" } : { name: editing.name ?? "", displayName: editing.displayName ?? "" }}
          fields={[
            {
              name: "name",
              label: "Name",
              kind: "text",
              required: true,
              disabled: editing !== "new",
              placeholder: "acme",
              help: "Lowercase letters, digits and '-'; used in URLs and the SSO sign-in.",
            },
            { name: "displayName", label: "Display name", kind: "text", placeholder: "ACME Corp." },
          ]}
          onClose={() => setEditing(null)}
          onSubmit={async (v) => {
            if (editing === "new") await tenants.create({ name: str(v, "name"), displayName: str(v, "displayName") });
            else await tenants.update(editing.id ?? "", { displayName: str(v, "displayName") });
            await invalidate(keys.tenants);
          }}
        />
      )}
    </>
  );
}
