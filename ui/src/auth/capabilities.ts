// What the signed-in user may do, mirroring the server's RBAC (ctrl/api/src/rbac.rs `decide`)
// so the UI hides controls the server would refuse. The server stays the authority: a 403 it
// returns is still shown.
import type { Schemas } from "../api/client";

export type User = Schemas["User"];
export type Role = NonNullable<User["role"]>;

export type Resource =
  | "tenant"
  | "cvlan"
  | "user"
  | "group"
  | "policy"
  | "node"
  | "externalPeer"
  | "token"
  | "address"
  | "audit"
  | "apiKey"
  | "vrouter"
  | "region"
  | "relay"
  | "oidcProvider";

export type Verb = "read" | "write";
/** Where the object lives relative to the caller: global rows, the caller's tenant, another tenant. */
export type Target = "global" | "own" | "other";
export type Decision = "allow" | "forbidden" | "notFound";

// The server files external peers under nodes, and SSO providers under users (who may sign
// people in is user management).
const serverResource = (r: Resource): Resource => (r === "externalPeer" ? "node" : r === "oidcProvider" ? "user" : r);

const TENANT_ADMIN_WRITES: ReadonlySet<Resource> = new Set<Resource>([
  "tenant",
  "cvlan",
  "user",
  "group",
  "policy",
  "node",
  "token",
  "address",
]);
const OPERATOR_WRITES: ReadonlySet<Resource> = new Set<Resource>(["cvlan", "node", "policy", "token", "address"]);

export function decide(role: Role, resource: Resource, verb: Verb, target: Target): Decision {
  const res = serverResource(resource);
  if (role === "ROLE_SUPERADMIN") return "allow";
  if (role === "ROLE_UNSPECIFIED") return "forbidden";
  if (target === "other") return "notFound";
  if (target === "global") {
    if (res === "apiKey") return "allow";
    if (verb === "read" && (res === "region" || res === "relay")) return "allow";
    return "forbidden";
  }
  if (verb === "read") return res === "vrouter" ? "forbidden" : "allow";
  if (res === "apiKey") return "allow";
  if (role === "ROLE_TENANT_ADMIN") return TENANT_ADMIN_WRITES.has(res) ? "allow" : "forbidden";
  if (role === "ROLE_OPERATOR") return OPERATOR_WRITES.has(res) ? "allow" : "forbidden";
  return "forbidden";
}

const RANK: Record<Role, number> = {
  ROLE_SUPERADMIN: 0,
  ROLE_TENANT_ADMIN: 1,
  ROLE_OPERATOR: 2,
  ROLE_VIEWER: 3,
  ROLE_UNSPECIFIED: Number.MAX_SAFE_INTEGER,
};

/** Whether `granter` may give `role` to a user or API key (nobody grants above their own role). */
export function mayGrant(granter: Role, role: Role): boolean {
  if (role === "ROLE_UNSPECIFIED") return false;
  if (granter === "ROLE_SUPERADMIN") return true;
  return role !== "ROLE_SUPERADMIN" && RANK[granter] <= RANK[role];
}

export const ROLE_LABELS: Record<Role, string> = {
  ROLE_SUPERADMIN: "Superadmin",
  ROLE_TENANT_ADMIN: "Tenant admin",
  ROLE_OPERATOR: "Operator",
  ROLE_VIEWER: "Viewer",
  ROLE_UNSPECIFIED: "—",
};

export const TENANT_ROLES: Role[] = ["ROLE_TENANT_ADMIN", "ROLE_OPERATOR", "ROLE_VIEWER"];

/** The questions pages ask, bound to one user and the tenant on screen. */
export interface Capabilities {
  role: Role;
  isSuperadmin: boolean;
  /** May the user read/write `resource` in the tenant on screen (or globally when no tenant)? */
  can(resource: Resource, verb: Verb, tenantId?: string): boolean;
  /** Roles the user may assign. */
  grantable: Role[];
}

export function capabilitiesFor(user: Pick<User, "role" | "tenantId">): Capabilities {
  const role: Role = user.role ?? "ROLE_UNSPECIFIED";
  const target = (tenantId?: string): Target => {
    if (tenantId === undefined) return "global";
    return tenantId === (user.tenantId ?? "") ? "own" : "other";
  };
  return {
    role,
    isSuperadmin: role === "ROLE_SUPERADMIN",
    can: (resource, verb, tenantId) => decide(role, resource, verb, target(tenantId)) === "allow",
    grantable: (["ROLE_SUPERADMIN", ...TENANT_ROLES] as Role[]).filter((r) => mayGrant(role, r)),
  };
}
