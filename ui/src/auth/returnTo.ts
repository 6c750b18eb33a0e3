/**
 * Where to go after signing in. Only same-origin paths are accepted, so a crafted
 * `/login?returnTo=https://evil.example` cannot send a fresh session elsewhere.
 */
export function safeReturnTo(raw: string | null | undefined): string {
  if (!raw) return "/";
  if (!raw.startsWith("/") || raw.startsWith("//") || raw.startsWith("/\\")) return "/";
  // Control characters (tabs, newlines) are dropped by URL parsers and can turn "/\t/x" into "//x".
  if ([...raw].some((c) => c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f)) return "/";
  if (raw === "/login" || raw.startsWith("/login?") || raw.startsWith("/api/")) return "/";
  return raw;
}

/** The full-page URL that starts an SSO sign-in through the control plane. */
export function oidcStartUrl(tenant: string, provider: string, returnTo: string): string {
  const p = new URLSearchParams({ tenant, provider, returnTo: safeReturnTo(returnTo) });
  return `/api/v1/auth/oidc/start?${p.toString()}`;
}

/** The redirect URI an admin registers at the identity provider. */
/** Each provider has its own redirect URI (the control plane refuses answers that come back to another's). */
export const oidcRedirectUri = (origin: string, providerId: string) =>
  `${origin}/api/v1/auth/oidc/callback/${encodeURIComponent(providerId)}`;
