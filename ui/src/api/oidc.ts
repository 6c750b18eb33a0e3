// SSO (OIDC) providers: the tenant admin's configuration and the public sign-in list.
import { api, call, type Schemas } from "./client";
import { errorFromBody } from "./errors";
import { PAGE_SIZE } from "./hooks";

export type OidcProvider = Schemas["OidcProvider"];
export type OidcGroupMapping = NonNullable<OidcProvider["groupMappings"]>[number];
export type SignInProvider = Pick<OidcProvider, "name" | "displayName">;

/**
 * Enabled providers of a tenant, for the login page. A server without SSO support answers
 * 404/405; that reads as "no SSO configured", not as a failure.
 */
export async function listSignInProviders(tenant: string, fetcher: typeof fetch = fetch): Promise<SignInProvider[]> {
  // The OpenAPI document declares this public endpoint as free-form (no query parameters, no
  // response schema), so it is called directly; the items are the generated OidcProvider's
  // name and displayName.
  const r = await fetcher(`/api/v1/auth/oidc/providers?${new URLSearchParams({ tenant }).toString()}`, {
    credentials: "same-origin",
    headers: { accept: "application/json" },
  });
  const text = await r.text();
  if (!r.ok) {
    if (r.status === 404 || r.status === 405) return [];
    throw errorFromBody(r.status, text);
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    // An old server without the endpoint answers the SPA's index.html.
    return [];
  }
  const items = (body as { items?: unknown } | null)?.items;
  if (!Array.isArray(items)) return [];
  return items
    .filter((p): p is SignInProvider => typeof p === "object" && p !== null && typeof (p as SignInProvider).name === "string")
    .map((p) => ({ name: p.name, displayName: p.displayName }));
}

export const oidcProviders = {
  list: (tenant: string, token: string) =>
    call(
      api.GET("/api/v1/tenants/{tenant}/oidc-providers", {
        params: { path: { tenant }, query: { pageSize: PAGE_SIZE, pageToken: token || undefined } },
      }),
    ),
  create: (tenant: string, body: OidcProvider) =>
    call(api.POST("/api/v1/tenants/{tenant}/oidc-providers", { params: { path: { tenant } }, body })),
  update: (tenant: string, id: string, body: OidcProvider) =>
    call(api.PATCH("/api/v1/tenants/{tenant}/oidc-providers/{id}", { params: { path: { tenant, id } }, body })),
  remove: (tenant: string, id: string) =>
    call(api.DELETE("/api/v1/tenants/{tenant}/oidc-providers/{id}", { params: { path: { tenant, id } } })),
};

/**
 * The PATCH/POST body from the form. The client secret is write-only: it is sent only when
 * the admin typed a new one, so saving other fields leaves the stored secret unchanged.
 */
export function oidcBody(
  f: {
    name: string;
    displayName: string;
    issuer: string;
    clientId: string;
    clientSecret: string;
    allowedDomains: string[];
    groupsClaim: string;
    groupMappings: OidcGroupMapping[];
    defaultRole: NonNullable<OidcProvider["defaultRole"]>;
    scopes: string[];
    enabled: boolean;
  },
): OidcProvider {
  const body: OidcProvider = {
    name: f.name,
    displayName: f.displayName,
    issuer: f.issuer,
    clientId: f.clientId,
    allowedDomains: f.allowedDomains,
    groupsClaim: f.groupsClaim,
    groupMappings: f.groupMappings.filter((m) => (m.claimValue ?? "") !== "" && (m.group ?? "") !== ""),
    defaultRole: f.defaultRole,
    scopes: f.scopes,
    enabled: f.enabled,
  };
  if (f.clientSecret !== "") body.clientSecret = f.clientSecret;
  return body;
}
