// Turning whatever a request failed with into one sentence a person can act on. The server's
// `{"error": {"code", "message"}}` body is the authority; status codes only fill gaps.

/** A failed API call: HTTP status plus the server's error code and message. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;

  constructor(status: number, code: string, message: string) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

const fallbackByStatus: Record<number, string> = {
  400: "The request was not accepted.",
  401: "You are not signed in (or your session expired).",
  403: "Permission denied: your role does not allow this.",
  404: "Not found.",
  405: "This server does not offer that operation.",
  409: "This conflicts with something that already exists.",
  429: "Too many requests; wait a moment and try again.",
  500: "The control plane failed to handle the request.",
  502: "The control plane is not reachable.",
  503: "The control plane is not ready.",
};

/** Reads the server's error envelope from an already-parsed body (or text), if it is one. */
export function errorFromBody(status: number, body: unknown): ApiError {
  let parsed = body;
  if (typeof body === "string") {
    try {
      parsed = JSON.parse(body);
    } catch {
      parsed = undefined;
    }
  }
  const env = (parsed as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
  const code = typeof env?.code === "string" ? env.code : "";
  const serverMessage = typeof env?.message === "string" && env.message.trim() !== "" ? env.message.trim() : "";
  let message =
    serverMessage || fallbackByStatus[status] || (status >= 500 ? fallbackByStatus[500]! : `Request failed (HTTP ${status}).`);
  // The server says only "permission denied"; say why in words an admin expects.
  if (status === 403 && serverMessage.toLowerCase() === "permission denied") {
    message = "Permission denied: your role does not allow this.";
  }
  return new ApiError(status, code, message);
}

/** One sentence for any thrown value: API errors, network failures, programming errors. */
export function errorMessage(e: unknown): string {
  if (e instanceof ApiError) return e.message;
  if (e instanceof TypeError) return "Cannot reach the control plane. Check your connection and try again.";
  if (e instanceof Error && e.message) return e.message;
  return "Something went wrong.";
}

export function isStatus(e: unknown, ...status: number[]): boolean {
  return e instanceof ApiError && status.includes(e.status);
}
