// Starts the real control plane (cvlan-api serving ui/dist) on a free loopback port and a real
// Chromium through playwright-core. Everything it creates is removed in `stop()`, which the test
// calls even when a step fails.
import { spawn, execFile } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { chromium } from "playwright-core";

export const UI = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const DIST = join(UI, "dist");
export const BIN = resolve(UI, process.env.CVLAN_API_BIN || "../target/debug/cvlan-api");
// cvlan-agent and cvlan, for tests with real nodes: next to cvlan-api unless told otherwise.
export const BIN_DIR = resolve(process.env.CVLAN_BIN_DIR || dirname(BIN));
export const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
// Screenshots change with every run (times, ids): they replace the committed ones only when
// asked (UPDATE_SCREENSHOTS=1), so CI leaves the tree clean.
export const SHOTS = process.env.UPDATE_SCREENSHOTS
  ? join(UI, "docs/screenshots")
  : join(tmpdir(), "cvlan-ui-screenshots");

const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

async function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export class ControlPlane {
  constructor() {
    this.dir = mkdtempSync(join(tmpdir(), "cvlan-ui-e2e-"));
    this.log = [];
    this.proc = null;
  }

  /** Creates the superadmin and starts `cvlan-api serve`; resolves once /readyz answers. */
  async start({ email, password, nodeListener = false, oidcLoopback = false }) {
    for (const [what, p] of [
      ["cvlan-api", BIN],
      ["the built UI (run `npm run build`)", join(DIST, "index.html")],
      ["chromium (apt-get install -y chromium)", CHROMIUM],
    ]) {
      if (!existsSync(p)) throw new Error(`missing ${what}: ${p}`);
    }
    const data = join(this.dir, "data");
    // The password goes through the environment, never the command line (ps would show it).
    await promisify(execFile)(BIN, ["create-admin", "--data-dir", data, "--email", email], {
      env: { ...process.env, CVLAN_ADMIN_PASSWORD: password },
    });
    const port = await freePort();
    this.url = `http://127.0.0.1:${port}`;
    const nodes = ["--no-node-listener"];
    if (nodeListener) {
      this.nodeUrl = `https://127.0.0.1:${await freePort()}`;
      nodes.splice(0, 1, "--node-listen", this.nodeUrl.slice("https://".length));
    }
    this.proc = spawn(
      BIN,
      [
        "serve",
        "--data-dir",
        data,
        "--listen",
        `127.0.0.1:${port}`,
        ...nodes,
        "--ui-dir",
        DIST,
        ...(oidcLoopback ? ["--oidc-allow-loopback"] : []),
      ],
      { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || "warn" } },
    );
    const keep = (b) => {
      this.log.push(b.toString());
      if (this.log.length > 400) this.log.shift();
    };
    this.proc.stdout.on("data", keep);
    this.proc.stderr.on("data", keep);
    const exited = new Promise((r) => this.proc.once("exit", (code) => r(code)));
    const deadline = Date.now() + 30_000;
    for (;;) {
      const code = await Promise.race([exited, sleep(150).then(() => undefined)]);
      if (code !== undefined) throw new Error(`cvlan-api exited with ${code}:\n${this.log.join("")}`);
      try {
        const r = await fetch(`${this.url}/readyz`);
        if (r.ok) return;
      } catch {
        /* not listening yet */
      }
      if (Date.now() > deadline) throw new Error(`cvlan-api not ready after 30 s:\n${this.log.join("")}`);
    }
  }

  async stop() {
    if (this.proc && this.proc.exitCode === null) {
      const gone = new Promise((r) => this.proc.once("exit", r));
      this.proc.kill("SIGTERM");
      const t = setTimeout(() => this.proc.kill("SIGKILL"), 10_000);
      await gone;
      clearTimeout(t);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A Chromium with its own fresh profile directory; `close()` removes the profile. */
export async function browser(origin) {
  const profile = mkdtempSync(join(tmpdir(), "cvlan-ui-chromium-"));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1280, height: 800 },
    permissions: ["clipboard-read", "clipboard-write"],
    locale: "en-GB",
    timezoneId: "UTC",
  });
  await ctx.grantPermissions(["clipboard-read", "clipboard-write"], { origin });
  const page = ctx.pages()[0] ?? (await ctx.newPage());
  page.setDefaultTimeout(10_000);
  // Any CSP violation or uncaught error in the app fails the run.
  const problems = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error" && /Content Security Policy|Refused to/i.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  return {
    ctx,
    page,
    problems,
    async close() {
      await ctx.close().catch(() => {});
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
