import { describe, expect, it } from "vitest";
import { ApiError, errorFromBody, errorMessage, isStatus } from "./errors";

describe("errorFromBody", () => {
  it("uses the server's message", () => {
    const e = errorFromBody(400, { error: { code: "invalid_argument", message: "rules[0] cidr: \"10.0.0.300/8\" is not a CIDR" } });
    expect(e.message).toBe("rules[0] cidr: \"10.0.0.300/8\" is not a CIDR");
    expect(e.code).toBe("invalid_argument");
  });
  it("parses a JSON text body", () => {
    expect(errorFromBody(404, '{"error":{"code":"not_found","message":"cvlan not found"}}').message).toBe("cvlan not found");
  });
  it("explains a bare 403 in words", () => {
    expect(errorFromBody(403, { error: { code: "permission_denied", message: "permission denied" } }).message).toMatch(/your role does not allow/);
  });
  it("falls back to the status when the body is not the envelope", () => {
    expect(errorFromBody(502, "<html>Bad gateway</html>").message).toMatch(/not reachable/);
    expect(errorFromBody(418, undefined).message).toBe("Request failed (HTTP 418).");
    expect(errorFromBody(504, { error: { message: "   " } }).message).toMatch(/failed to handle/);
  });
});

describe("errorMessage", () => {
  it("turns network failures into a sentence", () => {
    expect(errorMessage(new TypeError("Failed to fetch"))).toMatch(/Cannot reach the control plane/);
  });
  it("keeps API and plain error messages, and never returns an empty string", () => {
    expect(errorMessage(new ApiError(409, "conflict", "name taken"))).toBe("name taken");
    expect(errorMessage(new Error("boom"))).toBe("boom");
    expect(errorMessage("weird")).toBe("Something went wrong.");
  });
  it("isStatus matches only API errors", () => {
    expect(isStatus(new ApiError(404, "", "x"), 404, 405)).toBe(true);
    expect(isStatus(new Error("404"), 404)).toBe(false);
  });
});
