import { useState, type FormEvent } from "react";
import { Navigate, useNavigate, useSearchParams } from "react-router";
import { useQueryClient } from "@tanstack/react-query";
import { auth } from "../api/entities";
import { listSignInProviders, type SignInProvider } from "../api/oidc";
import { errorMessage } from "../api/errors";
import { oidcStartUrl, safeReturnTo } from "../auth/returnTo";
import { fullPageNavigate } from "../auth/navigate";
import { useWhoami, WHOAMI_KEY } from "../auth/session";

function SsoSection({ returnTo }: { returnTo: string }) {
  const [tenant, setTenant] = useState("");
  const [state, setState] = useState<
    { kind: "idle" } | { kind: "busy" } | { kind: "done"; tenant: string; items: SignInProvider[] } | { kind: "error"; message: string }
  >({ kind: "idle" });

  const find = async (e: FormEvent) => {
    e.preventDefault();
    const t = tenant.trim();
    if (!t) return;
    setState({ kind: "busy" });
    try {
      const items = await listSignInProviders(t);
      setState({ kind: "done", tenant: t, items });
    } catch (err) {
      setState({ kind: "error", message: errorMessage(err) });
    }
  };

  return (
    <section className="sso" aria-labelledby="sso-title">
      <h2 id="sso-title">Single sign-on</h2>
      <form onSubmit={find} className="inline-form">
        <div className="field grow">
          <label htmlFor="sso-tenant">Organisation (tenant name)</label>
          <input id="sso-tenant" value={tenant} onChange={(e) => setTenant(e.target.value)} placeholder="acme" autoComplete="organization" />
        </div>
        <button type="submit" disabled={state.kind === "busy" || tenant.trim() === ""}>
          {state.kind === "busy" ? "Looking…" : "Find sign-in options"}
        </button>
      </form>
      {state.kind === "error" && (
        <p className="error-box" role="alert">
          {state.message}
        </p>
      )}
      {state.kind === "done" && state.items.length === 0 && (
        <p className="muted" role="status">
          No SSO configured for “{state.tenant}”. Sign in with your email and password.
        </p>
      )}
      {state.kind === "done" && state.items.length > 0 && (
        <div className="sso-buttons">
          {state.items.map((p) => (
            <button
              key={p.name}
              type="button"
              className="sso-button"
              // A full-page navigation: the control plane redirects to the identity provider.
              onClick={() => fullPageNavigate(oidcStartUrl(state.tenant, p.name ?? "", returnTo))}
            >
              Sign in with {p.displayName || p.name}
            </button>
          ))}
        </div>
      )}
    </section>
  );
}

export function LoginPage() {
  const [params] = useSearchParams();
  const returnTo = safeReturnTo(params.get("returnTo"));
  const ssoError = params.get("error");
  const who = useWhoami();
  const qc = useQueryClient();
  const navigate = useNavigate();
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  if (who.data) return <Navigate to={returnTo} replace />;

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const r = await auth.login(email.trim(), password);
      setPassword("");
      qc.clear();
      qc.setQueryData(WHOAMI_KEY, r.user ?? null);
      navigate(returnTo, { replace: true });
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <div className="login-page">
      <div className="login-card">
        <div className="login-brand">
          <img src="/favicon.svg" alt="" width={36} height={36} />
          <div>
            <h1>CloudVLAN</h1>
            <p className="muted">Sign in to manage your overlay networks</p>
          </div>
        </div>
        {ssoError && (
          <p className="error-box" role="alert">
            Single sign-on failed: {ssoError}
          </p>
        )}
        <form onSubmit={submit}>
          <div className="field">
            <label htmlFor="email">Email</label>
            <input id="email" type="email" autoComplete="username" required value={email} onChange={(e) => setEmail(e.target.value)} />
          </div>
          <div className="field">
            <label htmlFor="password">Password</label>
            <input
              id="password"
              type="password"
              autoComplete="current-password"
              required
              value={password}
              onChange={(e) => setPassword(e.target.value)}
            />
          </div>
          {error && (
            <p className="error-box" role="alert">
              {error}
            </p>
          )}
          <button type="submit" className="primary block" disabled={busy}>
            {busy ? "Signing in…" : "Sign in"}
          </button>
        </form>
        <div className="divider">
          <span>or</span>
        </div>
        <SsoSection returnTo={returnTo} />
      </div>
    </div>
  );
}
