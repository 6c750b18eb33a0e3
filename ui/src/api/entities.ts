// One typed function per REST operation the pages use. Paths, parameters and bodies are checked
// against the generated schema; nothing here restates an API type.
import { api, call, type Schemas } from "./client";
import { PAGE_SIZE } from "./hooks";

export type Tenant = Schemas["Tenant"];
export type Cvlan = Schemas["Cvlan"];
export type User = Schemas["User"];
export type Group = Schemas["Group"];
export type GroupMember = NonNullable<Group["members"]>[number];
export type Policy = Schemas["Policy"];
export type Node = Schemas["Node"];
export type ExternalPeer = Schemas["ExternalPeer"];
export type RegistrationToken = Schemas["RegistrationToken"];
export type AddressReservation = Schemas["AddressReservation"];
export type Vrouter = Schemas["Vrouter"];
export type VrouterAssignment = NonNullable<Vrouter["assignments"]>[number];
export type Region = Schemas["Region"];
export type Relay = Schemas["Relay"];
export type ApiKey = Schemas["ApiKey"];
export type AuditEvent = Schemas["AuditEvent"];
export type Role = NonNullable<User["role"]>;
export type CvlanMode = NonNullable<Cvlan["mode"]>;

const q = (pageToken: string, pageSize = PAGE_SIZE) => ({ pageSize, pageToken: pageToken || undefined });

/** Query keys: everything of a tenant sits under ["t", tenantId] so a tenant switch never mixes data. */
export const keys = {
  tenants: ["tenants"] as const,
  t: (tenant: string, what: string) => ["t", tenant, what] as const,
  global: (what: string) => ["g", what] as const,
};

// ---- tenants ----
export const tenants = {
  list: (token: string) => call(api.GET("/api/v1/tenants", { params: { query: q(token) } })),
  get: (tenant: string) => call(api.GET("/api/v1/tenants/{tenant}", { params: { path: { tenant } } })),
  create: (body: Tenant) => call(api.POST("/api/v1/tenants", { body })),
  update: (tenant: string, body: Tenant) => call(api.PATCH("/api/v1/tenants/{tenant}", { params: { path: { tenant } }, body })),
  remove: (tenant: string) => call(api.DELETE("/api/v1/tenants/{tenant}", { params: { path: { tenant } } })),
};

// ---- cvlans ----
export const cvlans = {
  list: (tenant: string, token: string) =>
    call(api.GET("/api/v1/tenants/{tenant}/cvlans", { params: { path: { tenant }, query: q(token) } })),
  create: (tenant: string, body: Cvlan) => call(api.POST("/api/v1/tenants/{tenant}/cvlans", { params: { path: { tenant } }, body })),
  update: (tenant: string, id: string, body: Cvlan) =>
    call(api.PATCH("/api/v1/tenants/{tenant}/cvlans/{id}", { params: { path: { tenant, id } }, body })),
  remove: (tenant: string, id: string) => call(api.DELETE("/api/v1/tenants/{tenant}/cvlans/{id}", { params: { path: { tenant, id } } })),
};

// ---- nodes ----
export const nodes = {
  list: (tenant: string, token: string) =>
    call(api.GET("/api/v1/tenants/{tenant}/nodes", { params: { path: { tenant }, query: q(token) } })),
  update: (tenant: string, id: string, body: Node) =>
    call(api.PATCH("/api/v1/tenants/{tenant}/nodes/{id}", { params: { path: { tenant, id } }, body })),
  expire: (tenant: string, id: string) =>
    call(api.POST("/api/v1/tenants/{tenant}/nodes/{id}/expire", { params: { path: { tenant, id } } })),
  remove: (tenant: string, id: string) => call(api.DELETE("/api/v1/tenants/{tenant}/nodes/{id}", { params: { path: { tenant, id } } })),
};

// ---- users (tenant users; superadmins when tenant is undefined) ----
export const users = {
  list: (tenant: string | undefined, token: string) =>
    tenant
      ? call(api.GET("/api/v1/tenants/{tenant}/users", { params: { path: { tenant }, query: q(token) } }))
      : call(api.GET("/api/v1/users", { params: { query: q(token) } })),
  create: (tenant: string | undefined, body: User) =>
    tenant
      ? call(api.POST("/api/v1/tenants/{tenant}/users", { params: { path: { tenant } }, body }))
      : call(api.POST("/api/v1/users", { body })),
  update: (tenant: string | undefined, id: string, body: User) =>
    tenant
      ? call(api.PATCH("/api/v1/tenants/{tenant}/users/{id}", { params: { path: { tenant, id } }, body }))
      : call(api.PATCH("/api/v1/users/{id}", { params: { path: { id } }, body })),
  remove: (tenant: string | undefined, id: string) =>
    tenant
      ? call(api.DELETE("/api/v1/tenants/{tenant}/users/{id}", { params: { path: { tenant, id } } }))
      : call(api.DELETE("/api/v1/users/{id}", { params: { path: { id } } })),
};

// ---- groups ----
export const groups = {
  list: (tenant: string, token: string) =>
    call(api.GET("/api/v1/tenants/{tenant}/groups", { params: { path: { tenant }, query: q(token) } })),
  create: (tenant: string, body: Group) => call(api.POST("/api/v1/tenants/{tenant}/groups", { params: { path: { tenant } }, body })),
  update: (tenant: string, id: string, body: Group) =>
    call(api.PATCH("/api/v1/tenants/{tenant}/groups/{id}", { params: { path: { tenant, id } }, body })),
  remove: (tenant: string, id: string) => call(api.DELETE("/api/v1/tenants/{tenant}/groups/{id}", { params: { path: { tenant, id } } })),
};

// ---- policies ----
export const policies = {
  list: (tenant: string, token: string) =>
    call(api.GET("/api/v1/tenants/{tenant}/policies", { params: { path: { tenant }, query: q(token) } })),
  get: (tenant: string, id: string) => call(api.GET("/api/v1/tenants/{tenant}/policies/{id}", { params: { path: { tenant, id } } })),
  create: (tenant: string, body: Policy) =>
    call(api.POST("/api/v1/tenants/{tenant}/policies", { params: { path: { tenant } }, body })),
  update: (tenant: string, id: string, body: Policy) =>
    call(api.PATCH("/api/v1/tenants/{tenant}/policies/{id}", { params: { path: { tenant, id } }, body })),
  remove: (tenant: string, id: string) => call(api.DELETE("/api/v1/tenants/{tenant}/policies/{id}", { params: { path: { tenant, id } } })),
};

// ---- registration tokens ----
export const tokens = {
  list: (tenant: string, token: string) =>
    call(api.GET("/api/v1/tenants/{tenant}/tokens", { params: { path: { tenant }, query: q(token) } })),
  /** The body is a RegistrationToken plus `ttlSeconds` (the server takes both in one object). */
  create: (tenant: string, body: RegistrationToken, ttlSeconds: number) =>
    call(
      api.POST("/api/v1/tenants/{tenant}/tokens", {
        params: { path: { tenant } },
        body: { ...body, ttlSeconds } as RegistrationToken,
      }),
    ),
  revoke: (tenant: string, id: string) =>
    call(api.POST("/api/v1/tenants/{tenant}/tokens/{id}/revoke", { params: { path: { tenant, id } } })),
  remove: (tenant: string, id: string) => call(api.DELETE("/api/v1/tenants/{tenant}/tokens/{id}", { params: { path: { tenant, id } } })),
};

// ---- external peers ----
export const externalPeers = {
  list: (tenant: string, token: string) =>
    call(api.GET("/api/v1/tenants/{tenant}/external-peers", { params: { path: { tenant }, query: q(token) } })),
  create: (tenant: string, cvlan: string, body: ExternalPeer) =>
    call(api.POST("/api/v1/tenants/{tenant}/cvlans/{cvlan}/external-peers", { params: { path: { tenant, cvlan } }, body })),
  update: (tenant: string, id: string, body: ExternalPeer) =>
    call(api.PATCH("/api/v1/tenants/{tenant}/external-peers/{id}", { params: { path: { tenant, id } }, body })),
  remove: (tenant: string, id: string) =>
    call(api.DELETE("/api/v1/tenants/{tenant}/external-peers/{id}", { params: { path: { tenant, id } } })),
};

// ---- address reservations ----
export const addresses = {
  list: (tenant: string, cvlan: string, token: string) =>
    call(api.GET("/api/v1/tenants/{tenant}/cvlans/{cvlan}/addresses", { params: { path: { tenant, cvlan }, query: q(token) } })),
  create: (tenant: string, cvlan: string, body: AddressReservation) =>
    call(api.POST("/api/v1/tenants/{tenant}/cvlans/{cvlan}/addresses", { params: { path: { tenant, cvlan } }, body })),
  remove: (tenant: string, cvlan: string, id: string) =>
    call(api.DELETE("/api/v1/tenants/{tenant}/cvlans/{cvlan}/addresses/{id}", { params: { path: { tenant, cvlan, id } } })),
};

// ---- global infrastructure ----
export const vrouters = {
  list: (token: string) => call(api.GET("/api/v1/vrouters", { params: { query: q(token) } })),
  create: (body: Vrouter) => call(api.POST("/api/v1/vrouters", { body })),
  update: (id: string, body: Vrouter) => call(api.PATCH("/api/v1/vrouters/{id}", { params: { path: { id } }, body })),
  remove: (id: string) => call(api.DELETE("/api/v1/vrouters/{id}", { params: { path: { id } } })),
};
export const regions = {
  list: (token: string) => call(api.GET("/api/v1/regions", { params: { query: q(token) } })),
  create: (body: Region) => call(api.POST("/api/v1/regions", { body })),
  update: (id: string, body: Region) => call(api.PATCH("/api/v1/regions/{id}", { params: { path: { id } }, body })),
  remove: (id: string) => call(api.DELETE("/api/v1/regions/{id}", { params: { path: { id } } })),
};
export const relays = {
  list: (token: string) => call(api.GET("/api/v1/relays", { params: { query: q(token) } })),
  create: (body: Relay) => call(api.POST("/api/v1/relays", { body })),
  update: (id: string, body: Relay) => call(api.PATCH("/api/v1/relays/{id}", { params: { path: { id } }, body })),
  remove: (id: string) => call(api.DELETE("/api/v1/relays/{id}", { params: { path: { id } } })),
};

// ---- own API keys ----
export const apiKeys = {
  list: (token: string) => call(api.GET("/api/v1/apikeys", { params: { query: q(token) } })),
  /** The server reads name, role and ttlSeconds. */
  create: (body: ApiKey, ttlSeconds: number) => call(api.POST("/api/v1/apikeys", { body: { ...body, ttlSeconds } as ApiKey })),
  remove: (id: string) => call(api.DELETE("/api/v1/apikeys/{id}", { params: { path: { id } } })),
};

// ---- auth ----
export const auth = {
  login: (email: string, password: string) => call(api.POST("/api/v1/auth/login", { body: { email, password } })),
  logout: () => call(api.POST("/api/v1/auth/logout")),
};
