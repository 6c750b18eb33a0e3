import { useMemo } from "react";
import { Link } from "react-router";
import { groups, keys, nodes, policies, type Policy } from "../api/entities";
import { useAll, useConfirmed, usePagedList } from "../api/hooks";
import { useSession } from "../auth/session";
import { Badge, PageHeader, Time } from "../components/bits";
import { Table } from "../components/Table";
import { describeSelector, formatPorts, PROTOCOLS } from "../policy/ruleForm";
import { useTenant } from "../tenant";

export function useSelectorNames(tenant: string) {
  const gs = useAll(keys.t(tenant, "groups"), (tok) => groups.list(tenant, tok));
  const ns = useAll(keys.t(tenant, "nodes"), (tok) => nodes.list(tenant, tok));
  return useMemo(
    () => ({
      groupList: gs.data?.items ?? [],
      nodeList: ns.data?.items ?? [],
      groups: new Map((gs.data?.items ?? []).map((g) => [g.id ?? "", g.name ?? ""])),
      nodes: new Map((ns.data?.items ?? []).map((n) => [n.id ?? "", n.name ?? ""])),
    }),
    [gs.data, ns.data],
  );
}

export function PoliciesPage() {
  const t = useTenant();
  const { caps } = useSession();
  const key = keys.t(t.id, "policies");
  const list = usePagedList(key, (tok) => policies.list(t.id, tok));
  const names = useSelectorNames(t.id);
  const confirmed = useConfirmed();
  const canWrite = caps.can("policy", "write", t.id);
  const rows = [...list.items].sort((a, b) => (a.priority ?? 0) - (b.priority ?? 0) || (a.name ?? "").localeCompare(b.name ?? ""));

  const summary = (p: Policy) => (
    <ol className="rule-summary">
      {(p.rules ?? []).map((r, i) => (
        <li key={i}>
          <Badge tone={r.action === "ACTION_DENY" ? "bad" : "ok"}>{r.action === "ACTION_DENY" ? "deny" : "allow"}</Badge>{" "}
          {(r.sources ?? []).map((s) => describeSelector(s, names)).join(", ")} → {(r.destinations ?? []).map((s) => describeSelector(s, names)).join(", ")}{" "}
          <span className="muted">
            {PROTOCOLS.find((x) => x.value === (r.protocol ?? "PROTOCOL_ANY"))?.label}
            {(r.ports ?? []).length ? ` ${formatPorts(r.ports as { first: number; last: number }[])}` : ""}
          </span>
        </li>
      ))}
    </ol>
  );

  return (
    <>
      <PageHeader title="Policies" subtitle="Lower priority runs first; within a policy, rules run in order. First match wins; anything unmatched is denied.">
        {canWrite && (
          <Link to={`/t/${t.id}/policies/new`} className="button primary">
            New policy
          </Link>
        )}
      </PageHeader>
      <Table
        label="Policies"
        rows={rows}
        rowKey={(p) => p.id ?? ""}
        isLoading={list.isLoading}
        error={list.error}
        empty="No policies yet"
        emptyHint="Without a policy no traffic flows between nodes (default deny)."
        hasMore={list.hasNextPage}
        loadingMore={list.isFetchingNextPage}
        onMore={() => list.fetchNextPage()}
        columns={[
          { header: "Priority", cell: (p) => p.priority ?? 0, className: "num" },
          {
            header: "Name",
            cell: (p) => (
              <>
                <Link to={`/t/${t.id}/policies/${p.id}`}>
                  <strong>{p.name}</strong>
                </Link>
                {p.description && <div className="muted small-text">{p.description}</div>}
              </>
            ),
          },
          { header: "Rules", cell: summary },
          { header: "Updated", cell: (p) => <Time iso={p.updatedAt ?? p.createdAt} /> },
          {
            header: "",
            className: "row-actions",
            cell: (p) => (
              <>
                <Link to={`/t/${t.id}/policies/${p.id}`} className="button small">
                  {canWrite ? "Edit" : "View"}
                </Link>
                {canWrite && (
                  <button
                    type="button"
                    className="small danger"
                    onClick={() =>
                      confirmed({
                        title: `Delete policy ${p.name}?`,
                        message: "Traffic it allowed is denied as soon as nodes receive the change.",
                        confirmLabel: "Delete policy",
                        run: () => policies.remove(t.id, p.id ?? ""),
                        invalidate: [key],
                        success: `Policy ${p.name} deleted`,
                      })
                    }
                  >
                    Delete
                  </button>
                )}
              </>
            ),
          },
        ]}
      />
    </>
  );
}
