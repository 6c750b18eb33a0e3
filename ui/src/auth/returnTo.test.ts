import { describe, expect, it } from "vitest";
import { oidcRedirectUri, oidcStartUrl, safeReturnTo } from "./returnTo";

describe("safeReturnTo", () => {
  it.each([
    ["/t/abc/nodes?x=1", "/t/abc/nodes?x=1"],
    [null, "/"],
    ["https://evil.example/", "/"],
    ["//evil.example/", "/"],
    ["/\\evil.example", "/"],
    ["/login?returnTo=/x", "/"],
    ["/api/v1/auth/logout", "/"],
    ["javascript:alert(1)", "/"],
  ])("%s → %s", (raw, want) => {
    expect(safeReturnTo(raw)).toBe(want);
  });
});

describe("oidc URLs", () => {
  it("encodes the tenant, provider and a safe returnTo", () => {
    expect(oidcStartUrl("acme", "google", "https://evil")).toBe("/api/v1/auth/oidc/start?tenant=acme&provider=google&returnTo=%2F");
    expect(oidcStartUrl("a b", "p&q", "/t/1/nodes")).toBe("/api/v1/auth/oidc/start?tenant=a+b&provider=p%26q&returnTo=%2Ft%2F1%2Fnodes");
  });
  it("builds the redirect URI from the page's origin", () => {
    expect(oidcRedirectUri("https://cvlan.example.com", "p-1")).toBe("https://cvlan.example.com/api/v1/auth/oidc/callback/p-1");
  });
});
