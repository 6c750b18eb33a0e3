import { afterEach, describe, expect, it, vi } from "vitest";
import { render, screen, waitFor } from "@testing-library/react";
import { QueryClientProvider } from "@tanstack/react-query";
import { MemoryRouter } from "react-router";
import { AppRoutes, makeQueryClient } from "../App";
import { FeedbackProvider } from "../components/feedback";
import { fakeServer } from "./fakeServer";

function renderAt(path: string) {
  return render(
    <QueryClientProvider client={makeQueryClient()}>
      <FeedbackProvider>
        <MemoryRouter initialEntries={[path]}>
          <AppRoutes />
        </MemoryRouter>
      </FeedbackProvider>
    </QueryClientProvider>,
  );
}

function server(role: string) {
  return fakeServer({
    "GET /api/v1/auth/whoami": { body: { user: { id: "u1", tenantId: "t1", email: "v@example.com", role } } },
    "GET /api/v1/tenants/t1": { body: { id: "t1", name: "acme" } },
    "GET /api/v1/tenants/t1/cvlans": {
      body: { items: [{ id: "c1", name: "office", ipv4Prefix: "10.20.0.0/24", ipv6Prefix: "fd20::/64", addressesUsed: "3", addressesTotal: "254" }], nextPageToken: "" },
    },
  });
}

afterEach(() => vi.unstubAllGlobals());

describe("role-aware pages", () => {
  it("a viewer sees the CVLANs but no create, edit or delete controls", async () => {
    server("ROLE_VIEWER");
    renderAt("/t/t1/cvlans");
    expect(await screen.findByText("office")).toBeTruthy();
    expect(screen.queryByRole("button", { name: "New CVLAN" })).toBeNull();
    expect(screen.queryByRole("button", { name: "Edit" })).toBeNull();
    expect(screen.queryByRole("button", { name: "Delete" })).toBeNull();
  });

  it("an operator gets the controls", async () => {
    server("ROLE_OPERATOR");
    renderAt("/t/t1/cvlans");
    expect(await screen.findByText("office")).toBeTruthy();
    expect(screen.getByRole("button", { name: "New CVLAN" })).toBeTruthy();
    expect(screen.getByRole("button", { name: "Delete" })).toBeTruthy();
  });

  it("a tenant user sent to another tenant's URL lands in its own, without requesting the other", async () => {
    const srv = server("ROLE_TENANT_ADMIN");
    renderAt("/t/t2/cvlans");
    expect(await screen.findByText("office")).toBeTruthy();
    await waitFor(() => expect(srv.seen).toContain("GET /api/v1/tenants/t1/cvlans"));
    expect(srv.seen.filter((s) => s.includes("/t2"))).toEqual([]);
  });

  it("a tenant user has no tenant switcher and no superadmin pages", async () => {
    server("ROLE_TENANT_ADMIN");
    renderAt("/t/t1/cvlans");
    await screen.findByText("office");
    expect(screen.queryByLabelText("Tenant")).toBeNull();
    expect(screen.queryByRole("link", { name: "Tenants" })).toBeNull();
    expect(screen.queryByRole("link", { name: "VRouters" })).toBeNull();
  });
});
