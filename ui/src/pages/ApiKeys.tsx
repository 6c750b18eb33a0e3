import { useState } from "react";
import { apiKeys, keys, type Role } from "../api/entities";
import { useConfirmed, useInvalidate, usePagedList } from "../api/hooks";
import { ROLE_LABELS } from "../auth/capabilities";
import { useSession } from "../auth/session";
import { Badge, PageHeader, Time } from "../components/bits";
import { FormDialog, str } from "../components/forms";
import { Table } from "../components/Table";
import { SecretOnce, TTL_OPTIONS } from "./Tokens";

export function ApiKeysPage() {
  const { caps } = useSession();
  const key = keys.global("apikeys");
  const list = usePagedList(key, apiKeys.list);
  const confirmed = useConfirmed();
  const invalidate = useInvalidate();
  const [creating, setCreating] = useState(false);
  const [secret, setSecret] = useState<string | null>(null);
  const roles = caps.grantable;

  return (
    <>
      <PageHeader title="API keys" subtitle="Keys for cvlanctl, scripts and Terraform, acting as you with at most your role.">
        <button type="button" className="primary" onClick={() => setCreating(true)}>
          New API key
        </button>
      </PageHeader>
      <Table
        label="API keys"
        rows={list.items}
        rowKey={(k) => k.id ?? ""}
        isLoading={list.isLoading}
        error={list.error}
        empty="No API keys"
        hasMore={list.hasNextPage}
        loadingMore={list.isFetchingNextPage}
        onMore={() => list.fetchNextPage()}
        columns={[
          { header: "Name", cell: (k) => <strong>{k.name}</strong> },
          { header: "Role", cell: (k) => <Badge tone="info">{ROLE_LABELS[k.role ?? "ROLE_UNSPECIFIED"]}</Badge> },
          { header: "Expires", cell: (k) => <Time iso={k.expiresAt} empty="never" /> },
          { header: "Created", cell: (k) => <Time iso={k.createdAt} /> },
          {
            header: "",
            className: "row-actions",
            cell: (k) => (
              <button
                type="button"
                className="small danger"
                onClick={() =>
                  confirmed({
                    title: `Delete API key ${k.name}?`,
                    message: "Scripts using it stop working at once.",
                    confirmLabel: "Delete key",
                    run: () => apiKeys.remove(k.id ?? ""),
                    invalidate: [key],
                    success: `API key ${k.name} deleted`,
                  })
                }
              >
                Delete
              </button>
            ),
          },
        ]}
      />
      {creating && (
        <FormDialog
          title="New API key"
          submitLabel="Create key"
          initial={{ name: "", role: caps.role, ttl: String(30 * 86400) }}
          fields={[
            { name: "name", label: "Name", kind: "text", required: true, placeholder: "terraform" },
            { name: "role", label: "Role", kind: "select", options: roles.map((r) => ({ value: r, label: ROLE_LABELS[r] })) },
            { name: "ttl", label: "Valid for", kind: "select", options: TTL_OPTIONS },
          ]}
          onClose={() => setCreating(false)}
          onSubmit={async (v) => {
            const k = await apiKeys.create({ name: str(v, "name"), role: str(v, "role") as Role }, Number(str(v, "ttl")));
            await invalidate(key);
            setSecret(k.key ?? "");
          }}
        />
      )}
      {secret !== null && <SecretOnce title="API key created" what="API key" secret={secret} onClose={() => setSecret(null)} />}
    </>
  );
}
