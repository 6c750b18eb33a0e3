import { useReducer, useState, type FormEvent } from "react";
import { keepPreviousData, useQuery } from "@tanstack/react-query";
import { auditExportUrl, listAudit, noFilters, type AuditFilters } from "../api/audit";
import { keys, type AuditEvent } from "../api/entities";
import { currentToken, firstPage, hasPrev, pageNumber, pager } from "../api/paging";
import { Mono, PageHeader } from "../components/bits";
import { Table } from "../components/Table";
import { useOptionalTenant } from "../tenant";

const PAGE = 50;

/** Ids are long; the first block tells rows apart and the full id is in the tooltip and filter. */
export const shortId = (id?: string) => (id && id.length > 13 ? `${id.slice(0, 8)}…${id.slice(-4)}` : id ?? "");

const timeFormat = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
const shortTime = (iso: string) => {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : timeFormat.format(d);
};

function Summary({ text }: { text?: string }) {
  if (!text) return <span className="muted">—</span>;
  let pretty = text;
  try {
    pretty = JSON.stringify(JSON.parse(text));
  } catch {
    /* not JSON: show as is */
  }
  return (
    <code className="summary" title={pretty}>
      {pretty.length > 120 ? `${pretty.slice(0, 120)}…` : pretty}
    </code>
  );
}

export function AuditPage() {
  const t = useOptionalTenant();
  const tenant = t?.id;
  const [draft, setDraft] = useState<AuditFilters>(noFilters);
  const [filters, setFilters] = useState<AuditFilters>(noFilters);
  const [page, dispatch] = useReducer(pager, undefined, firstPage);
  const token = currentToken(page);
  const q = useQuery({
    queryKey: [...(tenant ? keys.t(tenant, "audit") : keys.global("audit")), filters, token],
    queryFn: () => listAudit(tenant, filters, token, PAGE),
    placeholderData: keepPreviousData,
  });
  const rows = q.data?.items ?? [];
  const next = q.data?.nextPageToken ?? "";

  const apply = (e?: FormEvent, f: AuditFilters = draft) => {
    e?.preventDefault();
    setDraft(f);
    setFilters(f);
    dispatch({ type: "reset" });
  };
  const filterBy = (patch: Partial<AuditFilters>) => apply(undefined, { ...draft, ...patch });

  return (
    <>
      <PageHeader title={tenant ? "Audit log" : "Audit log (all tenants)"} subtitle="Every change, newest first, with who made it and from where.">
        <a className="button" href={auditExportUrl(tenant, filters, "jsonl")} download="audit.jsonl">
          Export JSONL
        </a>
        <a className="button" href={auditExportUrl(tenant, filters, "csv")} download="audit.csv">
          Export CSV
        </a>
      </PageHeader>
      <form className="filters audit-filters" onSubmit={apply} aria-label="Audit filters">
        <label>
          <span>Actor (user id)</span>
          <input value={draft.actorId} onChange={(e) => setDraft({ ...draft, actorId: e.target.value })} placeholder="any" />
        </label>
        <label>
          <span>Action (prefix)</span>
          <input value={draft.action} onChange={(e) => setDraft({ ...draft, action: e.target.value })} placeholder="cvlan. or policy.create" />
        </label>
        <label>
          <span>Target type</span>
          <input value={draft.targetType} onChange={(e) => setDraft({ ...draft, targetType: e.target.value })} placeholder="policy" />
        </label>
        <label>
          <span>Target id</span>
          <input value={draft.targetId} onChange={(e) => setDraft({ ...draft, targetId: e.target.value })} />
        </label>
        <label>
          <span>Since</span>
          <input type="datetime-local" value={draft.since} onChange={(e) => setDraft({ ...draft, since: e.target.value })} />
        </label>
        <label>
          <span>Until</span>
          <input type="datetime-local" value={draft.until} onChange={(e) => setDraft({ ...draft, until: e.target.value })} />
        </label>
        <div className="filter-buttons">
          <button type="submit" className="primary">
            Apply
          </button>
          <button type="button" onClick={() => apply(undefined, noFilters())}>
            Clear
          </button>
        </div>
      </form>
      <Table<AuditEvent>
        label="Audit events"
        rows={rows}
        rowKey={(e) => e.id ?? ""}
        isLoading={q.isLoading}
        error={q.error}
        empty="No audit events match"
        columns={[
          {
            header: "Time",
            cell: (e) => (
              <time dateTime={e.time} className="nowrap" title={e.time}>
                {e.time ? shortTime(e.time) : "—"}
              </time>
            ),
          },
          {
            header: "Actor",
            cell: (e) => (
              <button type="button" className="link" title="Only this actor" onClick={() => filterBy({ actorId: e.actorId ?? "" })}>
                {e.actor || e.actorId || "system"}
              </button>
            ),
          },
          {
            header: "Action",
            cell: (e) => (
              <button type="button" className="link" title="Only this action" onClick={() => filterBy({ action: e.action ?? "" })}>
                <Mono>{e.action}</Mono>
              </button>
            ),
          },
          {
            header: "Target",
            cell: (e) => (
              <button
                type="button"
                className="link"
                title="Only this target"
                onClick={() => filterBy({ targetType: e.targetType ?? "", targetId: e.targetId ?? "" })}
              >
                {e.targetType} <Mono title={e.targetId}>{shortId(e.targetId)}</Mono>
              </button>
            ),
          },
          { header: "Change", cell: (e) => <Summary text={e.summary} /> },
          { header: "From", cell: (e) => <Mono>{e.sourceAddress}</Mono> },
        ]}
      />
      <div className="pager" aria-label="Pages">
        <button type="button" disabled={!hasPrev(page)} onClick={() => dispatch({ type: "prev" })}>
          ← Newer
        </button>
        <span className="muted">
          Page {pageNumber(page)}
          {q.isFetching && !q.isLoading ? " · loading…" : ""}
        </span>
        <button type="button" disabled={next === "" || q.isPlaceholderData} onClick={() => dispatch({ type: "next", token: next })}>
          Older →
        </button>
      </div>
    </>
  );
}
