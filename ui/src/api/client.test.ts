import { describe, expect, it } from "vitest";
import { call, makeClient, readCookie } from "./client";
import { ApiError } from "./errors";

function recorder(status = 200, body: unknown = { items: [], nextPageToken: "" }) {
  const seen: Request[] = [];
  const fetch = async (input: RequestInfo | URL, init?: RequestInit) => {
    const req = input instanceof Request ? input : new Request(input, init);
    seen.push(req);
    return new Response(status === 204 ? null : JSON.stringify(body), {
      status,
      headers: { "content-type": "application/json" },
    });
  };
  return { seen, fetch: fetch as typeof globalThis.fetch };
}

describe("readCookie", () => {
  it("finds one cookie among many, trimming spaces", () => {
    expect(readCookie("a=1; cvlan_csrf=tok%3D; b=2", "cvlan_csrf")).toBe("tok=");
    expect(readCookie("xcvlan_csrf=no", "cvlan_csrf")).toBeUndefined();
    expect(readCookie("", "cvlan_csrf")).toBeUndefined();
  });
});

describe("CSRF header", () => {
  const cookies = () => "cvlan_session_hint=1; cvlan_csrf=abc123";

  it("is sent on POST, PATCH and DELETE", async () => {
    const r = recorder(201, {});
    const c = makeClient({ baseUrl: "http://ui.test", fetch: r.fetch, cookies });
    await c.POST("/api/v1/tenants", { body: { name: "acme" } });
    await c.PATCH("/api/v1/tenants/{tenant}", { params: { path: { tenant: "acme" } }, body: { displayName: "A" } });
    await c.DELETE("/api/v1/tenants/{tenant}", { params: { path: { tenant: "acme" } } });
    expect(r.seen.map((q) => [q.method, q.headers.get("x-csrf-token")])).toEqual([
      ["POST", "abc123"],
      ["PATCH", "abc123"],
      ["DELETE", "abc123"],
    ]);
  });

  it("is not sent on GET", async () => {
    const r = recorder();
    const c = makeClient({ baseUrl: "http://ui.test", fetch: r.fetch, cookies });
    await c.GET("/api/v1/tenants");
    expect(r.seen[0]?.headers.get("x-csrf-token")).toBeNull();
  });

  it("is left out when there is no CSRF cookie (the server then answers 403)", async () => {
    const r = recorder(201, {});
    const c = makeClient({ baseUrl: "http://ui.test", fetch: r.fetch, cookies: () => "other=1" });
    await c.POST("/api/v1/auth/logout");
    expect(r.seen[0]?.headers.has("x-csrf-token")).toBe(false);
  });

  it("reads the cookie at request time, so a new login's token is used", async () => {
    const r = recorder(201, {});
    let jar = "cvlan_csrf=first";
    const c = makeClient({ baseUrl: "http://ui.test", fetch: r.fetch, cookies: () => jar });
    await c.POST("/api/v1/auth/logout");
    jar = "cvlan_csrf=second";
    await c.POST("/api/v1/auth/logout");
    expect(r.seen.map((q) => q.headers.get("x-csrf-token"))).toEqual(["first", "second"]);
  });
});

describe("call", () => {
  it("returns the data of a successful response", async () => {
    const r = recorder(200, { items: [{ name: "acme" }], nextPageToken: "n" });
    const c = makeClient({ baseUrl: "http://ui.test", fetch: r.fetch, cookies: () => "" });
    const page = await call(c.GET("/api/v1/tenants"));
    expect(page.items?.[0]?.name).toBe("acme");
  });

  it("throws an ApiError carrying the server's message and code", async () => {
    const r = recorder(409, { error: { code: "conflict", message: "10.20.0.0/24 overlaps 10.20.0.0/16 of cvlan \"a\"" } });
    const c = makeClient({ baseUrl: "http://ui.test", fetch: r.fetch, cookies: () => "" });
    const err = await call(c.GET("/api/v1/tenants")).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).status).toBe(409);
    expect((err as ApiError).code).toBe("conflict");
    expect((err as ApiError).message).toContain("overlaps");
  });
});
