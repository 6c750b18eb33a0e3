// Real nodes in the browser: two cvlan-agent processes (control only, --no-tun) join a CVLAN
// with a registration token through the control plane's node listener; the nodes page shows
// them online with their addresses, and shows one offline — without a reload — once its agent
// stops. Agents are stopped and their directories removed even when a step fails.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFile } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { BIN_DIR, browser, ControlPlane } from "./harness.mjs";

const ADMIN = { email: "admin@example.com", password: "e2e-admin-password-1" };
const AGENT = join(BIN_DIR, "cvlan-agent");
const CLI = join(BIN_DIR, "cvlan");
const cp = new ControlPlane();
const agents = [];
const opened = [];
let admin = "";

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

class Agent {
  constructor(name) {
    this.name = name;
    this.dir = mkdtempSync(join(tmpdir(), `cvlan-ui-agent-${name}-`));
    this.socket = join(this.dir, "agent.sock");
    this.log = [];
    this.proc = spawn(AGENT, ["--state-dir", join(this.dir, "state"), "--socket", this.socket, "--no-tun"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    for (const s of [this.proc.stdout, this.proc.stderr]) s.on("data", (b) => this.log.push(b.toString()));
    agents.push(this);
  }

  async up(token) {
    for (let i = 0; i < 100 && !existsSync(this.socket); i++) await new Promise((r) => setTimeout(r, 100));
    // The token travels in the environment, not argv.
    await promisify(execFile)(CLI, ["--socket", this.socket, "up", "--server", cp.nodeUrl, "--hostname", this.name], {
      env: { ...process.env, CVLAN_AUTH_KEY: token },
    }).catch((e) => {
      throw new Error(`cvlan up ${this.name}: ${e.stderr || e.message}\n${this.log.join("")}`);
    });
  }

  async stop() {
    if (this.proc.exitCode === null) {
      const gone = new Promise((r) => this.proc.once("exit", r));
      this.proc.kill("SIGTERM");
      const t = setTimeout(() => this.proc.kill("SIGKILL"), 10_000);
      await gone;
      clearTimeout(t);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

before(async () => {
  for (const b of [AGENT, CLI]) if (!existsSync(b)) throw new Error(`missing ${b} (cargo build --workspace --bins, or set CVLAN_BIN_DIR)`);
  await cp.start({ ...ADMIN, nodeListener: true });
  const r = await fetch(`${cp.url}/api/v1/auth/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(ADMIN),
  });
  admin = (await r.json()).token;
});

after(async () => {
  for (const b of opened) await b.close();
  for (const a of agents) await a.stop();
  await cp.stop();
});

test("nodes joined by real agents show online with addresses, and go offline live", async () => {
  const acme = await api("POST", "/api/v1/tenants", { name: "acme" });
  const cvlan = await api("POST", "/api/v1/tenants/acme/cvlans", { name: "office", ipv4Prefix: "10.60.0.0/24" });
  const tok = await api("POST", "/api/v1/tenants/acme/tokens", { cvlanId: cvlan.id, reusable: true, ttlSeconds: 600 });
  for (const name of ["web-1", "db-1"]) await new Agent(name).up(tok.token);

  const b = await browser(cp.url);
  opened.push(b);
  const { page, problems } = b;
  await page.goto(`${cp.url}/login`);
  await page.getByLabel("Email", { exact: true }).fill(ADMIN.email);
  await page.getByLabel("Password", { exact: true }).fill(ADMIN.password);
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  await page.getByTestId("whoami").filter({ hasText: ADMIN.email }).waitFor();
  // A URL naming the tenant by name selects it in the switcher too.
  await page.goto(`${cp.url}/t/acme/nodes`);
  await page.getByText("2 nodes").waitFor();
  assert.equal(await page.getByLabel("Tenant").inputValue(), acme.id);

  const nodes = (await api("GET", "/api/v1/tenants/acme/nodes")).items;
  assert.equal(nodes.length, 2);
  for (const n of nodes) {
    const row = page.getByRole("row").filter({ hasText: n.name });
    await row.filter({ hasText: n.ipv4 }).waitFor();
    await row.filter({ hasText: /online/i }).waitFor();
  }
  await page.getByText("2 nodes, 2 online").waitFor();
  if (process.env.UPDATE_SCREENSHOTS) await page.screenshot({ path: join(process.cwd(), "docs/screenshots/nodes.png") });

  // The agent stops (its session ends); the page, left open, follows within its refresh.
  await agents.find((a) => a.name === "db-1").stop();
  await page.getByText("2 nodes, 1 online").waitFor({ timeout: 20_000 });
  const row = page.getByRole("row").filter({ hasText: "db-1" });
  await row.filter({ hasText: /offline|last seen/i }).waitFor();
  assert.deepEqual(problems, []);
});
