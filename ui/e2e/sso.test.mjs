// Single sign-on end to end in a real browser: the control plane, a certified OpenID provider
// (npm `oidc-provider`) on loopback, and Chromium. A tenant admin's provider config (allowed
// domain, IdP group → tenant group, default role); alice signs in through the IdP's own login
// and consent pages and lands in the UI as a new operator in the mapped group; mallory, from a
// domain the tenant does not allow, is sent back to the sign-in page with the reason, and no
// user or session is created for her.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { browser, ControlPlane } from "./harness.mjs";
import { startIdp } from "./idp.mjs";

const ADMIN = { email: "admin@example.com", password: "e2e-admin-password-1" };
const cp = new ControlPlane();
let idp;
const opened = [];
let admin = "";
let acme = {};
let engineers = {};

async function api(method, path, body) {
  const r = await fetch(`${cp.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${admin}`, "content-type": "application/json" },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  assert.ok(r.ok, `${method} ${path} → ${r.status}: ${text}`);
  return text ? JSON.parse(text) : null;
}

before(async () => {
  await cp.start({ ...ADMIN, oidcLoopback: true });
  idp = await startIdp();
  const r = await fetch(`${cp.url}/api/v1/auth/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(ADMIN),
  });
  admin = (await r.json()).token;
  acme = await api("POST", "/api/v1/tenants", { name: "acme" });
  engineers = await api("POST", "/api/v1/tenants/acme/groups", { name: "engineers" });
  const provider = await api("POST", "/api/v1/tenants/acme/oidc-providers", {
    name: "corp",
    displayName: "Corp IdP",
    issuer: idp.issuer,
    clientId: idp.clientId,
    clientSecret: idp.clientSecret,
    allowedDomains: ["example.com"],
    groupsClaim: "groups",
    groupMappings: [{ claimValue: "eng", group: engineers.id }],
    defaultRole: "ROLE_OPERATOR",
    scopes: ["groups"],
    enabled: true,
  });
  // Each provider has its own redirect URI.
  idp.configure(`${cp.url}/api/v1/auth/oidc/callback/${provider.id}`);
});

after(async () => {
  for (const b of opened) await b.close();
  await idp?.close();
  await cp.stop();
});

/** From the UI's sign-in page through the IdP's login and consent pages. */
async function ssoThroughIdp(page, login) {
  await page.goto(`${cp.url}/login`);
  await page.getByLabel("Organisation (tenant name)").fill("acme");
  await page.getByRole("button", { name: "Find sign-in options" }).click();
  await page.getByRole("button", { name: "Sign in with Corp IdP" }).click();
  await page.waitForURL((u) => u.toString().startsWith(idp.issuer));
  await page.locator('input[name="login"]').fill(login);
  await page.locator('input[name="password"]').fill("any-password");
  await page.locator('button[type="submit"]').click();
  // The consent page of the provider's development interactions.
  await page.getByRole("button", { name: "Continue" }).click();
}

test("a user of an allowed domain signs in through the IdP and gets the mapped group and default role", async () => {
  const b = await browser(cp.url);
  opened.push(b);
  const { page, problems } = b;
  await ssoThroughIdp(page, "alice");
  await page.waitForURL((u) => u.toString().startsWith(cp.url) && !u.pathname.startsWith("/login"));
  await page.getByTestId("whoami").filter({ hasText: "alice@example.com" }).waitFor();
  const who = await (await page.request.get(`${cp.url}/api/v1/auth/whoami`)).json();
  assert.equal(who.user.email, "alice@example.com");
  assert.equal(who.user.role, "ROLE_OPERATOR");
  assert.equal(who.user.tenantId, acme.id);
  assert.equal(who.user.displayName, "Alice Example");
  // The IdP's "eng" group made her a member of the tenant group the policy language knows.
  const g = await api("GET", `/api/v1/tenants/acme/groups/${engineers.id}`);
  assert.deepEqual(g.members, [{ userId: who.user.id }]);
  const logins = await api("GET", "/api/v1/tenants/acme/audit?action=auth.login");
  assert.ok(logins.items.some((e) => e.actorId === who.user.id && JSON.stringify(e).includes("sso")), JSON.stringify(logins));
  // A second sign-in reuses the linked user (no duplicate) and the session cookie works for
  // cookie-authenticated reads of the tenant.
  const users = await api("GET", "/api/v1/tenants/acme/users");
  assert.equal(users.items.filter((u) => u.email === "alice@example.com").length, 1);
  const nodes = await page.request.get(`${cp.url}/api/v1/tenants/acme/nodes`);
  assert.equal(nodes.status(), 200);
  assert.deepEqual(problems, []);
});

test("a user of a domain the tenant does not allow is refused with the reason and gets nothing", async () => {
  const b = await browser(cp.url);
  opened.push(b);
  const { page } = b;
  await ssoThroughIdp(page, "mallory");
  await page.waitForURL((u) => u.toString().startsWith(`${cp.url}/login`));
  await page.getByText(/mallory@evil\.test: accounts of "evil\.test" may not sign in here/).waitFor();
  const who = await page.request.get(`${cp.url}/api/v1/auth/whoami`);
  assert.equal(who.status(), 401);
  const users = await api("GET", "/api/v1/tenants/acme/users");
  assert.ok(!users.items.some((u) => u.email === "mallory@evil.test"));
  const refused = await api("GET", "/api/v1/tenants/acme/audit?action=auth.sso_refused");
  assert.equal(refused.items.length, 1, JSON.stringify(refused));
});
