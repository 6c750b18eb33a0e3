// A scripted stand-in for cvlan-api in component tests: answers by method and path and records
// every request, so tests can also assert what was NOT requested.
import { vi } from "vitest";

export type Handler = (req: Request, url: URL) => { status?: number; body?: unknown } | undefined;

export function fakeServer(routes: Record<string, Handler | { status?: number; body?: unknown }>) {
  const seen: string[] = [];
  const fetch = vi.fn(async (input: RequestInfo | URL, init?: RequestInit) => {
    const req = input instanceof Request ? input : new Request(new URL(String(input), "http://localhost:3000"), init);
    const url = new URL(req.url);
    const key = `${req.method} ${url.pathname}`;
    seen.push(key);
    const route = routes[key];
    const r = typeof route === "function" ? route(req, url) : route;
    if (!r) return new Response(JSON.stringify({ error: { code: "not_found", message: `${key} not scripted` } }), { status: 404 });
    const status = r.status ?? 200;
    return new Response(status === 204 ? null : JSON.stringify(r.body ?? {}), { status, headers: { "content-type": "application/json" } });
  });
  vi.stubGlobal("fetch", fetch);
  return { seen, fetch };
}
