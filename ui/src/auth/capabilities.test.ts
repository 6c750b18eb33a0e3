import { describe, expect, it } from "vitest";
import { capabilitiesFor, decide, mayGrant, type Decision, type Resource, type Role, type Target, type Verb } from "./capabilities";

const ROLES: Role[] = ["ROLE_SUPERADMIN", "ROLE_TENANT_ADMIN", "ROLE_OPERATOR", "ROLE_VIEWER", "ROLE_UNSPECIFIED"];
const RESOURCES: Resource[] = [
  "tenant", "cvlan", "user", "group", "policy", "node", "externalPeer", "token", "address",
  "audit", "apiKey", "vrouter", "region", "relay", "oidcProvider",
];
const VERBS: Verb[] = ["read", "write"];
const TARGETS: Target[] = ["global", "own", "other"];

// The matrix from interfaces.md ("RBAC") written out row by row, independently of `decide`.
function expected(role: Role, res: Resource, verb: Verb, target: Target): Decision {
  if (role === "ROLE_SUPERADMIN") return "allow";
  if (role === "ROLE_UNSPECIFIED") return "forbidden";
  if (target === "other") return "notFound";
  if (target === "global") {
    if (res === "apiKey") return "allow";
    return verb === "read" && (res === "region" || res === "relay") ? "allow" : "forbidden";
  }
  if (verb === "read") return res === "vrouter" ? "forbidden" : "allow";
  if (res === "apiKey") return "allow";
  const tenantAdmin: Resource[] = ["tenant", "cvlan", "user", "group", "policy", "node", "externalPeer", "token", "address", "oidcProvider"];
  // external peers live under nodes on the server, so operators write them too
  const operator: Resource[] = ["cvlan", "node", "externalPeer", "policy", "token", "address"];
  if (role === "ROLE_TENANT_ADMIN") return tenantAdmin.includes(res) ? "allow" : "forbidden";
  if (role === "ROLE_OPERATOR") return operator.includes(res) ? "allow" : "forbidden";
  return "forbidden";
}

describe("decide mirrors the server's RBAC", () => {
  for (const role of ROLES)
    for (const res of RESOURCES)
      for (const verb of VERBS)
        for (const target of TARGETS)
          it(`${role} ${verb} ${res} at ${target} → ${expected(role, res, verb, target)}`, () => {
            expect(decide(role, res, verb, target)).toBe(expected(role, res, verb, target));
          });
});

describe("capabilitiesFor", () => {
  it("a viewer may read but write nothing in its own tenant except its own API keys", () => {
    const c = capabilitiesFor({ role: "ROLE_VIEWER", tenantId: "t1" });
    for (const r of RESOURCES.filter((r) => r !== "vrouter")) expect(c.can(r, "read", "t1")).toBe(true);
    for (const r of RESOURCES.filter((r) => r !== "apiKey")) expect(c.can(r, "write", "t1")).toBe(false);
    expect(c.can("apiKey", "write")).toBe(true);
  });

  it("a tenant user can do nothing in another tenant", () => {
    const c = capabilitiesFor({ role: "ROLE_TENANT_ADMIN", tenantId: "t1" });
    for (const r of RESOURCES) for (const v of VERBS) expect(c.can(r, v, "t2")).toBe(false);
  });

  it("an operator writes policies and tokens but not users, groups or SSO providers", () => {
    const c = capabilitiesFor({ role: "ROLE_OPERATOR", tenantId: "t1" });
    expect(c.can("policy", "write", "t1")).toBe(true);
    expect(c.can("token", "write", "t1")).toBe(true);
    expect(c.can("user", "write", "t1")).toBe(false);
    expect(c.can("group", "write", "t1")).toBe(false);
    expect(c.can("oidcProvider", "write", "t1")).toBe(false);
  });

  it("a superadmin (no tenant) may write in any tenant and globally", () => {
    const c = capabilitiesFor({ role: "ROLE_SUPERADMIN" });
    expect(c.isSuperadmin).toBe(true);
    expect(c.can("tenant", "write")).toBe(true);
    expect(c.can("cvlan", "write", "any-tenant")).toBe(true);
    expect(c.can("vrouter", "write")).toBe(true);
  });

  it("a user without a role is refused everything", () => {
    const c = capabilitiesFor({});
    expect(c.can("cvlan", "read", "")).toBe(false);
  });

  it("roles can only be granted down the ladder", () => {
    expect(capabilitiesFor({ role: "ROLE_OPERATOR", tenantId: "t" }).grantable).toEqual(["ROLE_OPERATOR", "ROLE_VIEWER"]);
    expect(capabilitiesFor({ role: "ROLE_TENANT_ADMIN", tenantId: "t" }).grantable).toEqual(["ROLE_TENANT_ADMIN", "ROLE_OPERATOR", "ROLE_VIEWER"]);
    expect(capabilitiesFor({ role: "ROLE_SUPERADMIN" }).grantable).toEqual(["ROLE_SUPERADMIN", "ROLE_TENANT_ADMIN", "ROLE_OPERATOR", "ROLE_VIEWER"]);
    expect(mayGrant("ROLE_TENANT_ADMIN", "ROLE_SUPERADMIN")).toBe(false);
    expect(mayGrant("ROLE_SUPERADMIN", "ROLE_UNSPECIFIED")).toBe(false);
  });
});
