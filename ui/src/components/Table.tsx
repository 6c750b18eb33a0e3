import type { ReactNode } from "react";
import { Empty, ErrorBox, Loading } from "./bits";

export interface Column<T> {
  header: string;
  cell: (row: T) => ReactNode;
  className?: string;
}

/** A table with its loading, error and empty states, and an optional "load more" footer. */
export function Table<T>({
  rows,
  columns,
  rowKey,
  isLoading,
  error,
  empty,
  emptyHint,
  hasMore,
  loadingMore,
  onMore,
  label,
}: {
  rows: T[];
  columns: Column<T>[];
  rowKey: (row: T) => string;
  isLoading?: boolean;
  error?: unknown;
  empty: string;
  emptyHint?: ReactNode;
  hasMore?: boolean;
  loadingMore?: boolean;
  onMore?: () => void;
  label?: string;
}) {
  if (isLoading) return <Loading />;
  if (error && rows.length === 0) return <ErrorBox error={error} prefix="Could not load" />;
  if (rows.length === 0) return <Empty title={empty}>{emptyHint}</Empty>;
  return (
    <div className="table-wrap">
      {error ? <ErrorBox error={error} prefix="Refresh failed" /> : null}
      <table aria-label={label}>
        <thead>
          <tr>
            {columns.map((c) => (
              <th key={c.header} className={c.className}>
                {c.header}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => (
            <tr key={rowKey(r)}>
              {columns.map((c) => (
                <td key={c.header} className={c.className}>
                  {c.cell(r)}
                </td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>
      {hasMore && (
        <div className="table-foot">
          <button type="button" onClick={onMore} disabled={loadingMore}>
            {loadingMore ? "Loading…" : "Load more"}
          </button>
        </div>
      )}
    </div>
  );
}
