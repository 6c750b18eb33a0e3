import type React from "react";
import { useMemo, useState } from "react";
import { cvlans, keys, tokens, type RegistrationToken } from "../api/entities";
import { useAll, useConfirmed, useInvalidate, usePagedList } from "../api/hooks";
import { useSession } from "../auth/session";
import { Badge, CopyButton, PageHeader, Time } from "../components/bits";
import { Dialog } from "../components/Dialog";
import { bool, FormDialog, splitList, str } from "../components/forms";
import { Table } from "../components/Table";
import { useTenant } from "../tenant";

export const TTL_OPTIONS = [
  { value: String(3600), label: "1 hour" },
  { value: String(86400), label: "1 day" },
  { value: String(7 * 86400), label: "7 days" },
  { value: String(30 * 86400), label: "30 days" },
  { value: String(365 * 86400), label: "1 year" },
];

export function tokenState(t: RegistrationToken, now = Date.now()): { label: string; tone: "ok" | "bad" | "neutral" } {
  if (t.revoked) return { label: "revoked", tone: "bad" };
  if (t.expiresAt && Date.parse(t.expiresAt) <= now) return { label: "expired", tone: "neutral" };
  if (!t.reusable && Number(t.uses ?? 0) > 0) return { label: "used", tone: "neutral" };
  return { label: "active", tone: "ok" };
}

/** Shows a freshly created secret once. It lives only in this component's state, never in storage. */
export function SecretOnce({ title, secret, what, onClose, hint }: { title: string; secret: string; what: string; onClose: () => void; hint?: React.ReactNode }) {
  return (
    <Dialog title={title} onClose={onClose}>
      <p>
        Copy the {what} now. <strong>It is shown only once</strong>; the server keeps no readable copy.
      </p>
      <div className="secret">
        <code data-testid="secret-value">{secret}</code>
        <CopyButton text={secret} />
      </div>
      {hint}
      <div className="actions">
        <button type="button" className="primary" onClick={onClose}>
          I have copied it
        </button>
      </div>
    </Dialog>
  );
}

export function TokensPage() {
  const t = useTenant();
  const { caps } = useSession();
  const key = keys.t(t.id, "tokens");
  const list = usePagedList(key, (tok) => tokens.list(t.id, tok));
  const cv = useAll(keys.t(t.id, "cvlans"), (tok) => cvlans.list(t.id, tok));
  const cvItems = useMemo(() => cv.data?.items ?? [], [cv.data]);
  const cvName = useMemo(() => new Map(cvItems.map((c) => [c.id ?? "", c.name ?? ""])), [cvItems]);
  const confirmed = useConfirmed();
  const invalidate = useInvalidate();
  const [creating, setCreating] = useState(false);
  const [secret, setSecret] = useState<string | null>(null);
  const canWrite = caps.can("token", "write", t.id);

  return (
    <>
      <PageHeader title="Registration tokens" subtitle="A node joins a CVLAN with a token: cvlan up --server https://CONTROL:8443 --auth-key <token>.">
        {canWrite && (
          <button type="button" className="primary" onClick={() => setCreating(true)} disabled={!cv.isSuccess || cvItems.length === 0} title={cv.isSuccess && cvItems.length === 0 ? "Create a CVLAN first" : undefined}>
            New token
          </button>
        )}
      </PageHeader>
      <Table
        label="Registration tokens"
        rows={list.items}
        rowKey={(x) => x.id ?? ""}
        isLoading={list.isLoading}
        error={list.error}
        empty="No registration tokens"
        emptyHint={canWrite ? "Create one to add nodes to a CVLAN." : undefined}
        hasMore={list.hasNextPage}
        loadingMore={list.isFetchingNextPage}
        onMore={() => list.fetchNextPage()}
        columns={[
          { header: "Description", cell: (x) => x.description || <span className="muted">—</span> },
          { header: "CVLAN", cell: (x) => cvName.get(x.cvlanId ?? "") ?? x.cvlanId },
          {
            header: "Kind",
            cell: (x) => (
              <>
                {x.reusable ? "reusable" : "single use"}
                {x.ephemeral ? ", ephemeral nodes" : ""}
              </>
            ),
          },
          {
            header: "Tags",
            cell: (x) => (
              <div className="chips">
                {(x.tags ?? []).map((tag) => (
                  <span key={tag} className="chip">
                    {tag}
                  </span>
                ))}
              </div>
            ),
          },
          { header: "Uses", cell: (x) => Number(x.uses ?? 0), className: "num" },
          { header: "Expires", cell: (x) => <Time iso={x.expiresAt} /> },
          {
            header: "State",
            cell: (x) => {
              const s = tokenState(x);
              return <Badge tone={s.tone}>{s.label}</Badge>;
            },
          },
          {
            header: "",
            className: "row-actions",
            cell: (x) =>
              canWrite && (
                <>
                  {!x.revoked && (
                    <button
                      type="button"
                      className="small"
                      onClick={() =>
                        confirmed({
                          title: "Revoke this token?",
                          message: "Nodes can no longer register with it. Nodes that already joined stay.",
                          confirmLabel: "Revoke token",
                          run: () => tokens.revoke(t.id, x.id ?? ""),
                          invalidate: [key],
                          success: "Token revoked",
                        })
                      }
                    >
                      Revoke
                    </button>
                  )}
                  <button
                    type="button"
                    className="small danger"
                    onClick={() =>
                      confirmed({
                        title: "Delete this token?",
                        message: "It disappears from the list and can no longer be used.",
                        confirmLabel: "Delete token",
                        run: () => tokens.remove(t.id, x.id ?? ""),
                        invalidate: [key],
                        success: "Token deleted",
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
      {creating && (
        <FormDialog
          title="New registration token"
          submitLabel="Create token"
          initial={{ cvlanId: cvItems[0]?.id ?? "", description: "", tags: "", reusable: false, ephemeral: false, ttl: String(86400) }}
          fields={[
            { name: "cvlanId", label: "CVLAN", kind: "select", required: true, options: cvItems.map((c) => ({ value: c.id ?? "", label: `${c.name} (${c.ipv4Prefix})` })) },
            { name: "description", label: "Description", kind: "text", placeholder: "laptops of the support team" },
            { name: "tags", label: "Tags for nodes that join", kind: "list", placeholder: "laptop, support" },
            { name: "ttl", label: "Valid for", kind: "select", options: TTL_OPTIONS },
            { name: "reusable", label: "Reusable (many nodes may join with it)", kind: "checkbox" },
            { name: "ephemeral", label: "Ephemeral nodes (removed when they go away)", kind: "checkbox" },
          ]}
          onClose={() => setCreating(false)}
          onSubmit={async (v) => {
            const created = await tokens.create(
              t.id,
              {
                cvlanId: str(v, "cvlanId"),
                description: str(v, "description"),
                tags: splitList(str(v, "tags")),
                reusable: bool(v, "reusable"),
                ephemeral: bool(v, "ephemeral"),
              },
              Number(str(v, "ttl")),
            );
            await invalidate(key);
            setSecret(created.token ?? "");
          }}
        />
      )}
      {secret !== null && (
        <SecretOnce
          title="Token created"
          what="registration token"
          secret={secret}
          onClose={() => setSecret(null)}
          hint={
            <p className="muted small-text">
              On the machine: <code>cvlan up --server https://CONTROL:8443 --auth-key &lt;token&gt;</code>
            </p>
          }
        />
      )}
    </>
  );
}
