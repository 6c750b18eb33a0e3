// The typed API client. Paths and bodies come from the generated `schema.d.ts`; this file only
// adds what every call needs: the CSRF header on mutations and one way to turn failures into
// `ApiError`s.
import createClient, { type Middleware } from "openapi-fetch";
import type { components, paths } from "./schema";
import { errorFromBody } from "./errors";

export type Schemas = components["schemas"];

export const CSRF_COOKIE = "cvlan_csrf";
export const CSRF_HEADER = "x-csrf-token";
const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

/** The value of one cookie in a `document.cookie`-style string. */
export function readCookie(cookies: string, name: string): string | undefined {
  for (const part of cookies.split(";")) {
    const eq = part.indexOf("=");
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() === name) return decodeURIComponent(part.slice(eq + 1).trim());
  }
  return undefined;
}

/**
 * Double-submit CSRF: the server sets a readable `cvlan_csrf` cookie at login and refuses
 * cookie-authenticated mutations that do not echo it in `x-csrf-token`.
 */
export function csrfMiddleware(cookies: () => string): Middleware {
  return {
    onRequest({ request }) {
      if (SAFE_METHODS.has(request.method.toUpperCase())) return request;
      const token = readCookie(cookies(), CSRF_COOKIE);
      if (token) request.headers.set(CSRF_HEADER, token);
      return request;
    },
  };
}

export interface ClientOptions {
  baseUrl?: string;
  fetch?: typeof globalThis.fetch;
  cookies?: () => string;
}

export function makeClient(opts: ClientOptions = {}) {
  const client = createClient<paths>({
    // Absolute, so the same code runs in the browser and under test (Node's Request wants one).
    baseUrl: opts.baseUrl ?? globalThis.location?.origin ?? "",
    // Looked up per call (not captured once), so tests can stub the global fetch.
    fetch: opts.fetch ?? ((req: Request) => globalThis.fetch(req)),
    credentials: "same-origin",
  });
  client.use(csrfMiddleware(opts.cookies ?? (() => document.cookie)));
  return client;
}

export type Client = ReturnType<typeof makeClient>;

/** The client the app uses: same origin as the page. */
export const api: Client = makeClient();

/** Awaits an openapi-fetch call and returns its data, or throws an `ApiError` with the server's message. */
export async function call<T>(
  pending: Promise<{ data?: T; error?: unknown; response: Response }>,
): Promise<T> {
  const r = await pending;
  if (!r.response.ok) throw errorFromBody(r.response.status, r.error);
  return r.data as T;
}
