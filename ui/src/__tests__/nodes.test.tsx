import { afterEach, describe, expect, it, vi } from "vitest";
import { act, render, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { QueryClientProvider } from "@tanstack/react-query";
import { MemoryRouter } from "react-router";
import { AppRoutes, makeQueryClient } from "../App";
import { FeedbackProvider } from "../components/feedback";
import { NODE_REFRESH_MS } from "../pages/Nodes";
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

const node = {
  id: "n1",
  tenantId: "t1",
  cvlanId: "c1",
  name: "laptop-1",
  os: "linux",
  ipv4: "10.20.0.2",
  ipv6: "fd20::2",
  tags: ["laptop"],
  lastSeen: "2026-11-26T10:00:00Z",
  endpoints: [{ address: "192.0.2.10:51820", kind: "reported" }],
};

afterEach(() => {
  vi.useRealTimers();
  vi.unstubAllGlobals();
});

describe("nodes page", () => {
  it("refreshes on its own and shows a node coming online", async () => {
    vi.useFakeTimers({ shouldAdvanceTime: true });
    let calls = 0;
    fakeServer({
      "GET /api/v1/auth/whoami": { body: { user: { id: "u1", tenantId: "t1", email: "o@example.com", role: "ROLE_OPERATOR" } } },
      "GET /api/v1/tenants/t1": { body: { id: "t1", name: "acme" } },
      "GET /api/v1/tenants/t1/cvlans": { body: { items: [{ id: "c1", name: "office" }], nextPageToken: "" } },
      "GET /api/v1/tenants/t1/nodes": () => {
        calls += 1;
        return { body: { items: [{ ...node, online: calls > 1 }], nextPageToken: "" } };
      },
    });
    renderAt("/t/t1/nodes");
    const row = (await screen.findByText("laptop-1")).closest("tr")!;
    expect(within(row).getByText("offline")).toBeTruthy();
    expect(within(row).getByText("10.20.0.2")).toBeTruthy();
    expect(within(row).getByText("192.0.2.10:51820")).toBeTruthy();
    expect(within(row).getByText("office")).toBeTruthy();
    await act(async () => {
      await vi.advanceTimersByTimeAsync(NODE_REFRESH_MS + 100);
    });
    await waitFor(() => expect(within(screen.getByText("laptop-1").closest("tr")!).getByText("online")).toBeTruthy());
    expect(calls).toBeGreaterThanOrEqual(2);
  });

  it("renames and retags a node with one PATCH of exactly those fields", async () => {
    let patched: unknown = null;
    fakeServer({
      "GET /api/v1/auth/whoami": { body: { user: { id: "u1", tenantId: "t1", email: "o@example.com", role: "ROLE_OPERATOR" } } },
      "GET /api/v1/tenants/t1": { body: { id: "t1", name: "acme" } },
      "GET /api/v1/tenants/t1/cvlans": { body: { items: [], nextPageToken: "" } },
      "GET /api/v1/tenants/t1/nodes": { body: { items: [node], nextPageToken: "" } },
      "PATCH /api/v1/tenants/t1/nodes/n1": (req) => {
        void req.text().then((t) => (patched = JSON.parse(t)));
        return { body: { ...node, name: "db-1" } };
      },
    });
    renderAt("/t/t1/nodes");
    await userEvent.click(await screen.findByRole("button", { name: "Edit" }));
    const dialog = screen.getByRole("dialog");
    const name = within(dialog).getByLabelText("Name *");
    await userEvent.clear(name);
    await userEvent.type(name, "db-1");
    const tags = within(dialog).getByLabelText("Tags");
    await userEvent.clear(tags);
    await userEvent.type(tags, "db, prod");
    await userEvent.click(within(dialog).getByRole("button", { name: "Save" }));
    await waitFor(() => expect(patched).toEqual({ name: "db-1", tags: ["db", "prod"] }));
  });

  it("asks before deleting and sends nothing when cancelled", async () => {
    const srv = fakeServer({
      "GET /api/v1/auth/whoami": { body: { user: { id: "u1", tenantId: "t1", email: "o@example.com", role: "ROLE_TENANT_ADMIN" } } },
      "GET /api/v1/tenants/t1": { body: { id: "t1", name: "acme" } },
      "GET /api/v1/tenants/t1/cvlans": { body: { items: [], nextPageToken: "" } },
      "GET /api/v1/tenants/t1/nodes": { body: { items: [node], nextPageToken: "" } },
      "DELETE /api/v1/tenants/t1/nodes/n1": { status: 204 },
    });
    renderAt("/t/t1/nodes");
    await userEvent.click(await screen.findByRole("button", { name: "Delete" }));
    await userEvent.click(within(screen.getByRole("dialog")).getByRole("button", { name: "Cancel" }));
    expect(srv.seen).not.toContain("DELETE /api/v1/tenants/t1/nodes/n1");
    await userEvent.click(screen.getByRole("button", { name: "Delete" }));
    await userEvent.click(within(screen.getByRole("dialog")).getByRole("button", { name: "Delete node" }));
    await waitFor(() => expect(srv.seen).toContain("DELETE /api/v1/tenants/t1/nodes/n1"));
  });

  it("goes to the sign-in page when the session ends mid-way (401)", async () => {
    let signedIn = true;
    fakeServer({
      "GET /api/v1/auth/whoami": () =>
        signedIn ? { body: { user: { id: "u1", tenantId: "t1", role: "ROLE_VIEWER" } } } : { status: 401, body: { error: { message: "authentication required" } } },
      "GET /api/v1/tenants/t1": { body: { id: "t1", name: "acme" } },
      "GET /api/v1/tenants/t1/cvlans": { body: { items: [], nextPageToken: "" } },
      "GET /api/v1/tenants/t1/nodes": () => {
        signedIn = false;
        return { status: 401, body: { error: { code: "unauthenticated", message: "authentication required" } } };
      },
    });
    renderAt("/t/t1/nodes");
    expect(await screen.findByRole("button", { name: "Sign in" })).toBeTruthy();
  });
});
