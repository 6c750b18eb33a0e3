import { useMemo, useState } from "react";
import { useSearchParams } from "react-router";
import { addresses, cvlans, keys, nodes } from "../api/entities";
import { useAll, useConfirmed, useInvalidate, usePagedList } from "../api/hooks";
import { useSession } from "../auth/session";
import { Empty, Mono, PageHeader, Time, Usage } from "../components/bits";
import { FormDialog, str } from "../components/forms";
import { Table } from "../components/Table";
import { useTenant } from "../tenant";

export function AddressesPage() {
  const t = useTenant();
  const { caps } = useSession();
  const [params, setParams] = useSearchParams();
  const cv = useAll(keys.t(t.id, "cvlans"), (tok) => cvlans.list(t.id, tok));
  const ns = useAll(keys.t(t.id, "nodes"), (tok) => nodes.list(t.id, tok));
  const cvItems = useMemo(() => cv.data?.items ?? [], [cv.data]);
  const nodeName = useMemo(() => new Map((ns.data?.items ?? []).map((n) => [n.id ?? "", n.name ?? ""])), [ns.data]);
  const cvlan = params.get("cvlan") || cvItems[0]?.id || "";
  const current = cvItems.find((c) => c.id === cvlan);
  const key = [...keys.t(t.id, "addresses"), cvlan];
  const list = usePagedList(key, (tok) => addresses.list(t.id, cvlan, tok), { enabled: cvlan !== "" });
  const confirmed = useConfirmed();
  const invalidate = useInvalidate();
  const [creating, setCreating] = useState(false);
  const canWrite = caps.can("address", "write", t.id);

  return (
    <>
      <PageHeader title="Addresses" subtitle="Addresses in use in a CVLAN: reserved ones and the nodes'. Reserve one to keep it off the automatic allocation.">
        {canWrite && cvlan && (
          <button type="button" className="primary" onClick={() => setCreating(true)}>
            Reserve address
          </button>
        )}
      </PageHeader>
      {cv.isSuccess && cvItems.length === 0 ? (
        <Empty title="No CVLANs yet">Addresses belong to a CVLAN; create one first.</Empty>
      ) : (
        <>
          <div className="filters">
            <select aria-label="CVLAN" value={cvlan} onChange={(e) => setParams({ cvlan: e.target.value })}>
              {cvItems.map((c) => (
                <option key={c.id} value={c.id}>
                  {c.name} ({c.ipv4Prefix})
                </option>
              ))}
            </select>
            {current && <Usage used={Number(current.addressesUsed ?? 0)} total={Number(current.addressesTotal ?? 0)} />}
          </div>
          <Table
            label="Addresses"
            rows={list.items}
            rowKey={(a) => a.id ?? a.address ?? ""}
            isLoading={list.isLoading || cv.isLoading}
            error={list.error}
            empty="No addresses in use in this CVLAN"
            hasMore={list.hasNextPage}
            loadingMore={list.isFetchingNextPage}
            onMore={() => list.fetchNextPage()}
            columns={[
              { header: "IPv4", cell: (a) => <Mono>{a.address}</Mono> },
              { header: "IPv6", cell: (a) => <Mono>{a.addressV6}</Mono> },
              { header: "Used by", cell: (a) => (a.nodeId ? `node ${nodeName.get(a.nodeId) ?? a.nodeId}` : <span className="muted">reservation</span>) },
              { header: "Description", cell: (a) => a.description || <span className="muted">—</span> },
              { header: "Since", cell: (a) => <Time iso={a.createdAt} /> },
              {
                header: "",
                className: "row-actions",
                cell: (a) =>
                  canWrite &&
                  !a.nodeId && (
                    <button
                      type="button"
                      className="small danger"
                      onClick={() =>
                        confirmed({
                          title: `Release ${a.address}?`,
                          message: "The address returns to the pool and may be given to the next node.",
                          confirmLabel: "Release",
                          run: () => addresses.remove(t.id, cvlan, a.id ?? a.address ?? ""),
                          invalidate: [key, keys.t(t.id, "cvlans")],
                          success: `${a.address} released`,
                        })
                      }
                    >
                      Release
                    </button>
                  ),
              },
            ]}
          />
        </>
      )}
      {creating && (
        <FormDialog
          title={`Reserve an address in ${current?.name ?? "the CVLAN"}`}
          submitLabel="Reserve"
          success="Address reserved"
          initial={{ address: "", description: "" }}
          fields={[
            { name: "address", label: "Address", kind: "text", placeholder: "lowest free one", help: `Optional; must be inside ${current?.ipv4Prefix ?? "the prefix"}.` },
            { name: "description", label: "Description", kind: "text", placeholder: "printer" },
          ]}
          onClose={() => setCreating(false)}
          onSubmit={async (v) => {
            await addresses.create(t.id, cvlan, { address: str(v, "address"), description: str(v, "description") });
            await invalidate(key, keys.t(t.id, "cvlans"));
          }}
        />
      )}
    </>
  );
}
