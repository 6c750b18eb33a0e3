import { useMemo, useState, type FormEvent } from "react";
import { groups, keys } from "../api/entities";
import { isStatus } from "../api/errors";
import { useAll, useConfirmed, useInvalidate, usePagedList } from "../api/hooks";
import { oidcBody, oidcProviders, type OidcGroupMapping, type OidcProvider } from "../api/oidc";
import { ROLE_LABELS, TENANT_ROLES, type Role } from "../auth/capabilities";
import { oidcRedirectUri } from "../auth/returnTo";
import { useSession } from "../auth/session";
import { Badge, CopyButton, Empty, ErrorBox, Mono, PageHeader } from "../components/bits";
import { Dialog } from "../components/Dialog";
import { useFeedback } from "../components/feedback";
import { joinList, splitList } from "../components/forms";
import { Table } from "../components/Table";
import { useTenant } from "../tenant";

interface FormState {
  name: string;
  displayName: string;
  issuer: string;
  clientId: string;
  /** Empty: keep the stored secret (on edit) or none (on create). */
  clientSecret: string;
  allowedDomains: string;
  groupsClaim: string;
  groupMappings: OidcGroupMapping[];
  defaultRole: Role;
  scopes: string;
  enabled: boolean;
}

const fromProvider = (p: OidcProvider | null): FormState => ({
  name: p?.name ?? "",
  displayName: p?.displayName ?? "",
  issuer: p?.issuer ?? "",
  clientId: p?.clientId ?? "",
  clientSecret: "",
  allowedDomains: joinList(p?.allowedDomains),
  groupsClaim: p?.groupsClaim ?? "groups",
  groupMappings: [...(p?.groupMappings ?? [])],
  defaultRole: p?.defaultRole && p.defaultRole !== "ROLE_UNSPECIFIED" ? p.defaultRole : "ROLE_VIEWER",
  scopes: joinList(p?.scopes),
  enabled: p ? p.enabled === true : true,
});

function ProviderDialog({ tenant, provider, onClose }: { tenant: string; provider: OidcProvider | null; onClose: () => void }) {
  const [f, setF] = useState<FormState>(() => fromProvider(provider));
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const gs = useAll(keys.t(tenant, "groups"), (tok) => groups.list(tenant, tok));
  const invalidate = useInvalidate();
  const { toast } = useFeedback();
  const secretSet = provider?.clientSecretSet === true;
  const set = <K extends keyof FormState>(k: K, v: FormState[K]) => setF((x) => ({ ...x, [k]: v }));

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const body = oidcBody({
        ...f,
        name: f.name.trim(),
        displayName: f.displayName.trim(),
        issuer: f.issuer.trim(),
        clientId: f.clientId.trim(),
        allowedDomains: splitList(f.allowedDomains.toLowerCase()),
        groupsClaim: f.groupsClaim.trim(),
        scopes: splitList(f.scopes),
      });
      if (provider) await oidcProviders.update(tenant, provider.id ?? "", body);
      else await oidcProviders.create(tenant, body);
      setF((x) => ({ ...x, clientSecret: "" }));
      await invalidate(keys.t(tenant, "sso"));
      toast(provider ? "SSO provider saved" : "SSO provider created");
      onClose();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  return (
    <Dialog title={provider ? `Edit SSO provider ${provider.name}` : "New SSO provider"} onClose={onClose} wide>
      <form onSubmit={submit} className="grid-form">
        <div className="field">
          <label htmlFor="sso-name">Name *</label>
          <input id="sso-name" required value={f.name} onChange={(e) => set("name", e.target.value)} placeholder="google" />
          <div className="help">Lowercase letters, digits and '-'; part of the sign-in link.</div>
        </div>
        <div className="field">
          <label htmlFor="sso-display">Button label</label>
          <input id="sso-display" value={f.displayName} onChange={(e) => set("displayName", e.target.value)} placeholder="Google Workspace" />
        </div>
        <div className="field span2">
          <label htmlFor="sso-issuer">Issuer URL *</label>
          <input id="sso-issuer" required value={f.issuer} onChange={(e) => set("issuer", e.target.value)} placeholder="https://accounts.example.com" />
          <div className="help">Discovery is read from &lt;issuer&gt;/.well-known/openid-configuration.</div>
        </div>
        <div className="field">
          <label htmlFor="sso-client">Client ID *</label>
          <input id="sso-client" required value={f.clientId} onChange={(e) => set("clientId", e.target.value)} />
        </div>
        <div className="field">
          <label htmlFor="sso-secret">
            Client secret <Badge tone={secretSet ? "ok" : "neutral"}>{secretSet ? "set" : "not set"}</Badge>
          </label>
          <input
            id="sso-secret"
            type="password"
            autoComplete="new-password"
            value={f.clientSecret}
            onChange={(e) => set("clientSecret", e.target.value)}
            placeholder={secretSet ? "unchanged" : "none (public client)"}
          />
          <div className="help">{secretSet ? "Leave empty to keep the stored secret; type a new one to replace it." : "Write-only: never shown again after saving."}</div>
        </div>
        <div className="field">
          <label htmlFor="sso-domains">Allowed email domains</label>
          <input id="sso-domains" value={f.allowedDomains} onChange={(e) => set("allowedDomains", e.target.value)} placeholder="any domain" />
          <div className="help">Comma separated, e.g. example.com. Empty allows any verified email.</div>
        </div>
        <div className="field">
          <label htmlFor="sso-role">Role of new users</label>
          <select id="sso-role" value={f.defaultRole} onChange={(e) => set("defaultRole", e.target.value as Role)}>
            {TENANT_ROLES.map((r) => (
              <option key={r} value={r}>
                {ROLE_LABELS[r]}
              </option>
            ))}
          </select>
        </div>
        <div className="field">
          <label htmlFor="sso-claim">Groups claim</label>
          <input id="sso-claim" value={f.groupsClaim} onChange={(e) => set("groupsClaim", e.target.value)} placeholder="groups" />
        </div>
        <div className="field">
          <label htmlFor="sso-scopes">Extra scopes</label>
          <input id="sso-scopes" value={f.scopes} onChange={(e) => set("scopes", e.target.value)} placeholder="groups" />
          <div className="help">Besides openid, email and profile.</div>
        </div>
        <fieldset className="members span2">
          <legend>Group mappings (IdP group → CloudVLAN group, synced at every sign-in)</legend>
          {f.groupMappings.length === 0 && <p className="muted">No mappings.</p>}
          {f.groupMappings.map((m, i) => (
            <div className="inline-form" key={i}>
              <input
                aria-label={`Claim value ${i + 1}`}
                placeholder="engineering"
                value={m.claimValue ?? ""}
                onChange={(e) => set("groupMappings", f.groupMappings.map((x, j) => (j === i ? { ...x, claimValue: e.target.value } : x)))}
              />
              <span aria-hidden="true">→</span>
              <select
                aria-label={`Group ${i + 1}`}
                value={m.group ?? ""}
                onChange={(e) => set("groupMappings", f.groupMappings.map((x, j) => (j === i ? { ...x, group: e.target.value } : x)))}
              >
                <option value="">Choose a group…</option>
                {(gs.data?.items ?? []).map((g) => (
                  <option key={g.id} value={g.id}>
                    {g.name}
                  </option>
                ))}
              </select>
              <button type="button" className="small" onClick={() => set("groupMappings", f.groupMappings.filter((_, j) => j !== i))}>
                Remove
              </button>
            </div>
          ))}
          <button type="button" className="small link" onClick={() => set("groupMappings", [...f.groupMappings, { claimValue: "", group: "" }])}>
            + add mapping
          </button>
        </fieldset>
        <div className="field checkbox span2">
          <label>
            <input type="checkbox" checked={f.enabled} onChange={(e) => set("enabled", e.target.checked)} /> Enabled (offered on the sign-in page)
          </label>
        </div>
        <div className="span2">
          <ErrorBox error={error} />
          <div className="actions">
            <button type="button" onClick={onClose}>
              Cancel
            </button>
            <button type="submit" className="primary" disabled={busy}>
              {busy ? "Saving…" : provider ? "Save" : "Create provider"}
            </button>
          </div>
        </div>
      </form>
    </Dialog>
  );
}

export function SsoPage() {
  const t = useTenant();
  const { caps } = useSession();
  const key = keys.t(t.id, "sso");
  const list = usePagedList(key, (tok) => oidcProviders.list(t.id, tok));
  const gs = useAll(keys.t(t.id, "groups"), (tok) => groups.list(t.id, tok));
  const groupName = useMemo(() => new Map((gs.data?.items ?? []).map((g) => [g.id ?? "", g.name ?? ""])), [gs.data]);
  const confirmed = useConfirmed();
  const [editing, setEditing] = useState<OidcProvider | "new" | null>(null);
  const canWrite = caps.can("oidcProvider", "write", t.id);
  const unsupported = isStatus(list.error, 404, 405) && list.items.length === 0;

  return (
    <>
      <PageHeader title="SSO providers" subtitle={`OpenID Connect identity providers people of ${t.name} sign in with.`}>
        {canWrite && !unsupported && (
          <button type="button" className="primary" onClick={() => setEditing("new")}>
            New provider
          </button>
        )}
      </PageHeader>
      <div className="callout">
        <div>
          Register each provider's own redirect URI (in its row below, once saved) at the identity provider.
        </div>
        <div className="muted small-text">
          People sign in on the login page with the tenant name <Mono>{t.name}</Mono>.
        </div>
      </div>
      {unsupported ? (
        <Empty title="SSO is not available on this control plane">This cvlan-api version has no OIDC support yet.</Empty>
      ) : (
        <Table
          label="SSO providers"
          rows={list.items}
          rowKey={(p) => p.id ?? ""}
          isLoading={list.isLoading}
          error={list.error}
          empty="No SSO configured"
          emptyHint={canWrite ? "Add an OpenID Connect provider (Google, Entra ID, Keycloak, …) so people sign in with their company account." : undefined}
          hasMore={list.hasNextPage}
          loadingMore={list.isFetchingNextPage}
          onMore={() => list.fetchNextPage()}
          columns={[
            {
              header: "Provider",
              cell: (p) => (
                <>
                  <strong>{p.displayName || p.name}</strong>
                  <div className="muted small-text">{p.name}</div>
                </>
              ),
            },
            {
              header: "Issuer and client",
              cell: (p) => (
                <div className="stack">
                  <Mono>{p.issuer}</Mono>
                  <span className="small-text">
                    redirect URI <Mono>{oidcRedirectUri(window.location.origin, p.id ?? "")}</Mono>{" "}
                    <CopyButton text={oidcRedirectUri(window.location.origin, p.id ?? "")} />
                  </span>
                  <span className="small-text">
                    client <Mono>{p.clientId}</Mono> · secret{" "}
                    <Badge tone={p.clientSecretSet ? "ok" : "neutral"}>{p.clientSecretSet ? "set" : "not set"}</Badge>
                  </span>
                </div>
              ),
            },
            { header: "Domains", cell: (p) => ((p.allowedDomains ?? []).length ? joinList(p.allowedDomains) : <span className="muted">any</span>) },
            { header: "New users", cell: (p) => ROLE_LABELS[p.defaultRole && p.defaultRole !== "ROLE_UNSPECIFIED" ? p.defaultRole : "ROLE_VIEWER"] },
            {
              header: "Group mappings",
              cell: (p) =>
                (p.groupMappings ?? []).length === 0 ? (
                  <span className="muted">none</span>
                ) : (
                  <div className="stack">
                    {(p.groupMappings ?? []).map((m) => (
                      <span key={`${m.claimValue}-${m.group}`}>
                        {m.claimValue} → {groupName.get(m.group ?? "") ?? m.group}
                      </span>
                    ))}
                  </div>
                ),
            },
            { header: "State", cell: (p) => <Badge tone={p.enabled ? "ok" : "neutral"}>{p.enabled ? "enabled" : "disabled"}</Badge> },
            {
              header: "",
              className: "row-actions",
              cell: (p) =>
                canWrite && (
                  <>
                    <button type="button" className="small" onClick={() => setEditing(p)}>
                      Edit
                    </button>
                    <button
                      type="button"
                      className="small danger"
                      onClick={() =>
                        confirmed({
                          title: `Delete SSO provider ${p.displayName || p.name}?`,
                          message: "People can no longer sign in through it. Their users and sessions stay.",
                          confirmLabel: "Delete provider",
                          run: () => oidcProviders.remove(t.id, p.id ?? ""),
                          invalidate: [key],
                          success: "SSO provider deleted",
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
      )}
      {editing && <ProviderDialog tenant={t.id} provider={editing === "new" ? null : editing} onClose={() => setEditing(null)} />}
    </>
  );
}
