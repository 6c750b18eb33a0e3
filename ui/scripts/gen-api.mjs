// Generates src/api/openapi.json (from `cvlan-api openapi`) and src/api/schema.d.ts (openapi-typescript).
// `--check` generates into a temporary directory and fails when the committed files differ, so CI
// notices an API change that was not regenerated.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ui = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const bin = process.env.CVLAN_API_BIN || resolve(ui, "../target/debug/cvlan-api");
const check = process.argv.includes("--check");
const committed = join(ui, "src/api");

if (!existsSync(bin)) {
  console.error(`cvlan-api not found at ${bin}; build it or set CVLAN_API_BIN`);
  process.exit(2);
}

const out = check ? mkdtempSync(join(tmpdir(), "cvlan-api-gen-")) : committed;
try {
  const doc = execFileSync(bin, ["openapi"], { encoding: "utf8", maxBuffer: 64 << 20 });
  JSON.parse(doc); // refuse to write something that is not JSON
  writeFileSync(join(out, "openapi.json"), doc);
  execFileSync(
    process.execPath,
    [
      join(ui, "node_modules/openapi-typescript/bin/cli.js"),
      join(out, "openapi.json"),
      "-o",
      join(out, "schema.d.ts"),
    ],
    { stdio: ["ignore", "ignore", "inherit"] },
  );
  if (check) {
    const stale = ["openapi.json", "schema.d.ts"].filter(
      (f) => !existsSync(join(committed, f)) || readFileSync(join(committed, f), "utf8") !== readFileSync(join(out, f), "utf8"),
    );
    if (stale.length > 0) {
      console.error(`out of date with ${bin}: src/api/${stale.join(", src/api/")}; run \`npm run gen:api\` and commit`);
      process.exit(1);
    }
    console.log("src/api/openapi.json and src/api/schema.d.ts match cvlan-api openapi");
  }
} finally {
  if (check) rmSync(out, { recursive: true, force: true });
}
