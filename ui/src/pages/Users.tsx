import { useState } from "react";
import { keys, users, type Role, type User } from "../api/entities";
import { useConfirmed, useInvalidate, usePagedList } from "../api/hooks";
import { ROLE_LABELS, TENANT_ROLES } from "../auth/capabilities";
import { useSession } from "../auth/session";
import { Badge, PageHeader, Time } from "../components/bits";
import { FormDialog, str } from "../components/forms";
import { Table } from "../components/Table";
import { useOptionalTenant } from "../tenant";

/** Tenant users under /t/:id/users; superadmins under /superadmins. */
export function UsersPage() {
  const t = useOptionalTenant();
  const { user: me, caps } = useSession();
  const tenant = t?.id;
  const key = tenant ? keys.t(tenant, "users") : keys.global("superadmins");
  const list = usePagedList(key, (tok) => users.list(tenant, tok));
  const confirmed = useConfirmed();
  const invalidate = useInvalidate();
  const [editing, setEditing] = useState<User | "new" | null>(null);
  const canWrite = caps.can("user", "write", tenant);
  const roles: Role[] = tenant ? TENANT_ROLES.filter((r) => caps.grantable.includes(r)) : ["ROLE_SUPERADMIN"];

  return (
    <>
      <PageHeader
        title={tenant ? "Users" : "Superadmins"}
        subtitle={
          tenant
            ? "People who manage this tenant. Tenant admins change everything, operators change CVLANs, nodes, policies, tokens and addresses, viewers only look."
            : "Superadmins manage every tenant and the shared infrastructure."
        }
      >
        {canWrite && (
          <button type="button" className="primary" onClick={() => setEditing("new")}>
            {tenant ? "New user" : "New superadmin"}
          </button>
        )}
      </PageHeader>
      <Table
        label="Users"
        rows={list.items}
        rowKey={(u) => u.id ?? ""}
        isLoading={list.isLoading}
        error={list.error}
        empty="No users yet"
        emptyHint={tenant ? "Add users with a password here, or let them sign in through an SSO provider." : undefined}
        hasMore={list.hasNextPage}
        loadingMore={list.isFetchingNextPage}
        onMore={() => list.fetchNextPage()}
        columns={[
          {
            header: "Email",
            cell: (u) => (
              <>
                {u.email}
                {u.id === me.id && <span className="muted small-text"> (you)</span>}
              </>
            ),
          },
          { header: "Name", cell: (u) => u.displayName || <span className="muted">—</span> },
          { header: "Role", cell: (u) => <Badge tone="info">{ROLE_LABELS[u.role ?? "ROLE_UNSPECIFIED"]}</Badge> },
          { header: "Created", cell: (u) => <Time iso={u.createdAt} /> },
          {
            header: "",
            className: "row-actions",
            cell: (u) =>
              canWrite && (
                <>
                  <button type="button" className="small" onClick={() => setEditing(u)}>
                    Edit
                  </button>
                  {u.id !== me.id && (
                    <button
                      type="button"
                      className="small danger"
                      onClick={() =>
                        confirmed({
                          title: `Delete user ${u.email}?`,
                          message: "Their sessions and API keys stop working at once.",
                          confirmLabel: "Delete user",
                          run: () => users.remove(tenant, u.id ?? ""),
                          invalidate: [key],
                          success: `User ${u.email} deleted`,
                        })
                      }
                    >
                      Delete
                    </button>
                  )}
                </>
              ),
          },
        ]}
      />
      {editing && (
        <FormDialog
          title={editing === "new" ? (tenant ? "New user" : "New superadmin") : `Edit ${editing.email}`}
          submitLabel={editing === "new" ? "Create user" : "Save"}
          success={editing === "new" ? "User created" : "User saved"}
          initial={
            editing === "new"
              ? { email: "", displayName: "", role: roles[roles.length - 1] ?? "ROLE_VIEWER", password: "" }
              : { email: editing.email ?? "", displayName: editing.displayName ?? "", role: editing.role ?? "ROLE_VIEWER", password: "" }
          }
          fields={[
            { name: "email", label: "Email", kind: "email", required: true, disabled: editing !== "new" },
            { name: "displayName", label: "Display name", kind: "text" },
            {
              name: "role",
              label: "Role",
              kind: "select",
              disabled: !tenant || (editing !== "new" && editing.id === me.id),
              options: roles.map((r) => ({ value: r, label: ROLE_LABELS[r] })),
            },
            {
              name: "password",
              label: editing === "new" ? "Password" : "New password",
              kind: "password",
              autoComplete: "new-password",
              required: editing === "new" && !tenant,
              help:
                editing === "new"
                  ? tenant
                    ? "Leave empty for users who sign in only through SSO."
                    : undefined
                  : "Leave empty to keep the current password.",
            },
          ]}
          onClose={() => setEditing(null)}
          onSubmit={async (v) => {
            const body: User = { displayName: str(v, "displayName") };
            if (tenant) body.role = str(v, "role") as Role;
            const pw = typeof v.password === "string" ? v.password : "";
            if (pw !== "") body.password = pw;
            if (editing === "new") {
              body.email = str(v, "email");
              if (!tenant) body.role = "ROLE_SUPERADMIN";
              await users.create(tenant, body);
            } else {
              if (editing.id === me.id) delete body.role;
              await users.update(tenant, editing.id ?? "", body);
            }
            await invalidate(key);
          }}
        />
      )}
    </>
  );
}
