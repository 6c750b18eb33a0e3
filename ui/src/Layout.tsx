import { NavLink, Outlet, useLocation, useMatch, useNavigate } from "react-router";
import { useQueryClient } from "@tanstack/react-query";
import { auth, keys, tenants } from "./api/entities";
import { useAll } from "./api/hooks";
import { ROLE_LABELS } from "./auth/capabilities";
import { useSession, WHOAMI_KEY } from "./auth/session";
import { useFeedback } from "./components/feedback";
import { errorMessage } from "./api/errors";
import { tenantSubpath } from "./tenant";

const TENANT_PAGES: { path: string; label: string }[] = [
  { path: "cvlans", label: "CVLANs" },
  { path: "nodes", label: "Nodes" },
  { path: "addresses", label: "Addresses" },
  { path: "external-peers", label: "External peers" },
  { path: "groups", label: "Groups" },
  { path: "policies", label: "Policies" },
  { path: "tokens", label: "Registration tokens" },
  { path: "users", label: "Users" },
  { path: "sso", label: "SSO providers" },
  { path: "audit", label: "Audit log" },
];

function TenantSwitcher({ current }: { current: string }) {
  const navigate = useNavigate();
  const loc = useLocation();
  const list = useAll(keys.tenants, tenants.list);
  const items = list.data?.items ?? [];
  // URLs may name the tenant by name as well as by id (the API accepts both).
  const selected = items.find((t) => t.id === current || t.name === current)?.id ?? current;
  return (
    <label className="switcher">
      <span className="muted">Tenant</span>
      <select
        aria-label="Tenant"
        value={selected}
        onChange={(e) => {
          const id = e.target.value;
          navigate(id ? `/t/${id}/${tenantSubpath(loc.pathname)}` : "/tenants");
        }}
      >
        <option value="">— none (global) —</option>
        {items.map((t) => (
          <option key={t.id} value={t.id}>
            {t.displayName ? `${t.displayName} (${t.name})` : t.name}
          </option>
        ))}
      </select>
    </label>
  );
}

export function Layout() {
  const { user, caps } = useSession();
  // The layout sits above the /t/:tenantId route, so read the id from the URL directly.
  const tenantId = useMatch("/t/:tenantId/*")?.params.tenantId;
  const qc = useQueryClient();
  const navigate = useNavigate();
  const { toast } = useFeedback();
  // Tenant users always work in their own tenant; superadmins in the one they picked.
  const tenant = caps.isSuperadmin ? tenantId ?? "" : user.tenantId ?? "";

  const signOut = async () => {
    try {
      await auth.logout();
    } catch (e) {
      toast(`Sign-out failed: ${errorMessage(e)}`, "error");
      return;
    }
    qc.clear();
    qc.setQueryData(WHOAMI_KEY, null);
    navigate("/login", { replace: true });
  };

  return (
    <div className="shell">
      <header className="topbar">
        <NavLink to="/" className="brand">
          <img src="/favicon.svg" alt="" width={22} height={22} /> CloudVLAN
        </NavLink>
        {caps.isSuperadmin ? <TenantSwitcher current={tenant} /> : null}
        <div className="spacer" />
        <span className="who" data-testid="whoami">
          {user.email} <span className="badge info">{ROLE_LABELS[caps.role]}</span>
        </span>
        <button type="button" onClick={signOut}>
          Sign out
        </button>
      </header>
      <div className="main">
        <nav className="sidebar" aria-label="Main">
          {tenant && (
            <>
              <div className="nav-title">Tenant</div>
              {TENANT_PAGES.map((p) => (
                <NavLink key={p.path} to={`/t/${tenant}/${p.path}`}>
                  {p.label}
                </NavLink>
              ))}
            </>
          )}
          <div className="nav-title">{caps.isSuperadmin ? "Global" : "Infrastructure"}</div>
          {caps.isSuperadmin && (
            <>
              <NavLink to="/tenants" end>
                Tenants
              </NavLink>
              <NavLink to="/superadmins">Superadmins</NavLink>
              <NavLink to="/vrouters">VRouters</NavLink>
            </>
          )}
          <NavLink to="/regions">Regions</NavLink>
          <NavLink to="/relays">Relays</NavLink>
          {caps.isSuperadmin && <NavLink to="/audit">Audit log (all)</NavLink>}
          <div className="nav-title">Account</div>
          <NavLink to="/apikeys">API keys</NavLink>
        </nav>
        <main className="content">
          <Outlet />
        </main>
      </div>
    </div>
  );
}
