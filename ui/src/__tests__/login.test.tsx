import { afterEach, describe, expect, it, vi } from "vitest";
import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { QueryClientProvider } from "@tanstack/react-query";
import { MemoryRouter } from "react-router";
import { AppRoutes, makeQueryClient } from "../App";
import { FeedbackProvider } from "../components/feedback";
import { fakeServer } from "./fakeServer";

vi.mock("../auth/navigate", () => ({ fullPageNavigate: vi.fn() }));
import { fullPageNavigate } from "../auth/navigate";

const unauthenticated = { status: 401, body: { error: { code: "unauthenticated", message: "authentication required" } } };

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

afterEach(() => {
  vi.unstubAllGlobals();
  vi.mocked(fullPageNavigate).mockClear();
});

describe("login page", () => {
  it("shows the SSO error the control plane sent back", async () => {
    fakeServer({ "GET /api/v1/auth/whoami": unauthenticated });
    renderAt("/login?error=your%20email%20domain%20is%20not%20allowed");
    expect((await screen.findByRole("alert")).textContent).toContain("your email domain is not allowed");
  });

  it("lists a tenant's SSO providers and starts a full-page sign-in with a safe returnTo", async () => {
    const srv = fakeServer({
      "GET /api/v1/auth/whoami": unauthenticated,
      "GET /api/v1/auth/oidc/providers": (_req, url) =>
        url.searchParams.get("tenant") === "acme" ? { body: { items: [{ name: "google", displayName: "Google Workspace" }] } } : { body: { items: [] } },
    });
    renderAt("/login?returnTo=%2Ft%2Fx%2Fnodes");
    await userEvent.type(await screen.findByLabelText(/Organisation/), "acme");
    await userEvent.click(screen.getByRole("button", { name: "Find sign-in options" }));
    await userEvent.click(await screen.findByRole("button", { name: "Sign in with Google Workspace" }));
    expect(fullPageNavigate).toHaveBeenCalledWith("/api/v1/auth/oidc/start?tenant=acme&provider=google&returnTo=%2Ft%2Fx%2Fnodes");
    expect(srv.seen).toContain("GET /api/v1/auth/oidc/providers");
  });

  it("says no SSO is configured when the server has no SSO endpoint (404)", async () => {
    fakeServer({ "GET /api/v1/auth/whoami": unauthenticated });
    renderAt("/login");
    await userEvent.type(await screen.findByLabelText(/Organisation/), "acme");
    await userEvent.click(screen.getByRole("button", { name: "Find sign-in options" }));
    expect((await screen.findByText(/No SSO configured for/)).textContent).toContain("“acme”");
  });

  it("shows the server's message for a wrong password and stays on the page", async () => {
    fakeServer({
      "GET /api/v1/auth/whoami": unauthenticated,
      "POST /api/v1/auth/login": { status: 401, body: { error: { code: "bad_credentials", message: "invalid email or password" } } },
    });
    renderAt("/login");
    await userEvent.type(await screen.findByLabelText("Email"), "a@example.com");
    await userEvent.type(screen.getByLabelText("Password"), "nope");
    await userEvent.click(screen.getByRole("button", { name: "Sign in" }));
    expect((await screen.findByRole("alert")).textContent).toBe("invalid email or password");
  });

  it("sends a signed-out visitor of a page to /login", async () => {
    fakeServer({ "GET /api/v1/auth/whoami": unauthenticated });
    renderAt("/t/abc/nodes");
    expect(await screen.findByRole("button", { name: "Sign in" })).toBeTruthy();
  });
});
