// Audit log queries: filters map to query parameters; export is a plain link so the browser
// downloads the server's JSONL/CSV stream with the session cookie.
import { api, call } from "./client";

export interface AuditFilters {
  actorId: string;
  action: string;
  targetType: string;
  targetId: string;
  /** datetime-local values (local time, no zone); converted to RFC 3339 for the server. */
  since: string;
  until: string;
}

export const noFilters = (): AuditFilters => ({ actorId: "", action: "", targetType: "", targetId: "", since: "", until: "" });

/** "2026-11-26T10:30" in the browser's zone → RFC 3339 UTC, or undefined when empty/invalid. */
export function localToRfc3339(local: string): string | undefined {
  if (!local) return undefined;
  const t = new Date(local);
  return Number.isNaN(t.getTime()) ? undefined : t.toISOString();
}

/** The server's query parameters for a filter set; empty filters are left out. */
export function auditQuery(f: AuditFilters): Record<string, string> {
  const out: Record<string, string> = {};
  const put = (k: string, v: string | undefined) => {
    const t = v?.trim();
    if (t) out[k] = t;
  };
  put("actorId", f.actorId);
  put("action", f.action);
  put("targetType", f.targetType);
  put("targetId", f.targetId);
  put("since", localToRfc3339(f.since));
  put("until", localToRfc3339(f.until));
  return out;
}

export function listAudit(tenant: string | undefined, f: AuditFilters, pageToken: string, pageSize = 50) {
  const query = { ...auditQuery(f), pageSize, pageToken: pageToken || undefined };
  return tenant
    ? call(api.GET("/api/v1/tenants/{tenant}/audit", { params: { path: { tenant }, query } }))
    : call(api.GET("/api/v1/audit", { params: { query } }));
}

export function auditExportUrl(tenant: string | undefined, f: AuditFilters, format: "jsonl" | "csv"): string {
  const base = tenant ? `/api/v1/tenants/${encodeURIComponent(tenant)}/audit/export` : "/api/v1/audit/export";
  const params = new URLSearchParams({ ...auditQuery(f), format });
  return `${base}?${params.toString()}`;
}
