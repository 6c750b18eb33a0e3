import { useMemo, useState } from "react";
import { groups, keys, nodes, users, type Group, type GroupMember } from "../api/entities";
import { useAll, useConfirmed, useInvalidate, usePagedList } from "../api/hooks";
import { useSession } from "../auth/session";
import { PageHeader, Time } from "../components/bits";
import { FormDialog, str } from "../components/forms";
import { Table } from "../components/Table";
import { useTenant } from "../tenant";

type MemberKind = "user" | "node" | "tag";
const memberKind = (m: GroupMember): MemberKind => (m.userId !== undefined ? "user" : m.nodeId !== undefined ? "node" : "tag");
const memberValue = (m: GroupMember) => m.userId ?? m.nodeId ?? m.tag ?? "";
const makeMember = (kind: MemberKind, value: string): GroupMember =>
  kind === "user" ? { userId: value } : kind === "node" ? { nodeId: value } : { tag: value };

function useNames(tenant: string) {
  const us = useAll(keys.t(tenant, "users"), (tok) => users.list(tenant, tok));
  const ns = useAll(keys.t(tenant, "nodes"), (tok) => nodes.list(tenant, tok));
  return useMemo(
    () => ({
      users: us.data?.items ?? [],
      nodes: ns.data?.items ?? [],
      user: new Map((us.data?.items ?? []).map((u) => [u.id ?? "", u.email ?? ""])),
      node: new Map((ns.data?.items ?? []).map((n) => [n.id ?? "", n.name ?? ""])),
    }),
    [us.data, ns.data],
  );
}

function MemberChip({ m, names }: { m: GroupMember; names: ReturnType<typeof useNames> }) {
  const kind = memberKind(m);
  const v = memberValue(m);
  const label = kind === "user" ? names.user.get(v) ?? v : kind === "node" ? names.node.get(v) ?? v : `tag:${v}`;
  return (
    <span className={`chip ${kind}`} title={`${kind} ${v}`}>
      {kind === "tag" ? "" : `${kind} `}
      {label}
    </span>
  );
}

function MembersEditor({
  members,
  onChange,
  names,
}: {
  members: GroupMember[];
  onChange: (m: GroupMember[]) => void;
  names: ReturnType<typeof useNames>;
}) {
  const [kind, setKind] = useState<MemberKind>("user");
  const [value, setValue] = useState("");
  const add = () => {
    const v = value.trim();
    if (!v) return;
    if (members.some((m) => memberKind(m) === kind && memberValue(m) === v)) return;
    onChange([...members, makeMember(kind, v)]);
    setValue("");
  };
  return (
    <fieldset className="members">
      <legend>Members</legend>
      {members.length === 0 && <p className="muted">No members yet.</p>}
      <ul className="member-list">
        {members.map((m, i) => (
          <li key={`${memberKind(m)}-${memberValue(m)}`}>
            <MemberChip m={m} names={names} />
            <button type="button" className="small" aria-label={`Remove member ${memberValue(m)}`} onClick={() => onChange(members.filter((_, j) => j !== i))}>
              Remove
            </button>
          </li>
        ))}
      </ul>
      <div className="inline-form">
        <select aria-label="Member kind" value={kind} onChange={(e) => { setKind(e.target.value as MemberKind); setValue(""); }}>
          <option value="user">User</option>
          <option value="node">Node</option>
          <option value="tag">Tag</option>
        </select>
        {kind === "tag" ? (
          <input aria-label="Tag" placeholder="web" value={value} onChange={(e) => setValue(e.target.value)} />
        ) : (
          <select aria-label={kind === "user" ? "User" : "Node"} value={value} onChange={(e) => setValue(e.target.value)}>
            <option value="">Choose…</option>
            {(kind === "user" ? names.users.map((u) => [u.id, u.email]) : names.nodes.map((n) => [n.id, n.name])).map(([id, label]) => (
              <option key={id} value={id}>
                {label}
              </option>
            ))}
          </select>
        )}
        <button type="button" onClick={add} disabled={value.trim() === ""}>
          Add member
        </button>
      </div>
    </fieldset>
  );
}

export function GroupsPage() {
  const t = useTenant();
  const { caps } = useSession();
  const key = keys.t(t.id, "groups");
  const list = usePagedList(key, (tok) => groups.list(t.id, tok));
  const names = useNames(t.id);
  const confirmed = useConfirmed();
  const invalidate = useInvalidate();
  const [editing, setEditing] = useState<Group | "new" | null>(null);
  const [members, setMembers] = useState<GroupMember[]>([]);
  const canWrite = caps.can("group", "write", t.id);

  const open = (g: Group | "new") => {
    setMembers(g === "new" ? [] : [...(g.members ?? [])]);
    setEditing(g);
  };

  return (
    <>
      <PageHeader title="Groups" subtitle="Named sets of users, nodes and tags, used as policy sources and destinations.">
        {canWrite && (
          <button type="button" className="primary" onClick={() => open("new")}>
            New group
          </button>
        )}
      </PageHeader>
      <Table
        label="Groups"
        rows={list.items}
        rowKey={(g) => g.id ?? ""}
        isLoading={list.isLoading}
        error={list.error}
        empty="No groups yet"
        hasMore={list.hasNextPage}
        loadingMore={list.isFetchingNextPage}
        onMore={() => list.fetchNextPage()}
        columns={[
          {
            header: "Name",
            cell: (g) => (
              <>
                <strong>{g.name}</strong>
                {g.description && <div className="muted small-text">{g.description}</div>}
              </>
            ),
          },
          {
            header: "Members",
            cell: (g) =>
              (g.members ?? []).length === 0 ? (
                <span className="muted">none</span>
              ) : (
                <div className="chips">
                  {(g.members ?? []).map((m) => (
                    <MemberChip key={`${memberKind(m)}-${memberValue(m)}`} m={m} names={names} />
                  ))}
                </div>
              ),
          },
          { header: "Updated", cell: (g) => <Time iso={g.updatedAt ?? g.createdAt} /> },
          {
            header: "",
            className: "row-actions",
            cell: (g) =>
              canWrite && (
                <>
                  <button type="button" className="small" onClick={() => open(g)}>
                    Edit
                  </button>
                  <button
                    type="button"
                    className="small danger"
                    onClick={() =>
                      confirmed({
                        title: `Delete group ${g.name}?`,
                        message: "A group still used by a policy cannot be deleted.",
                        confirmLabel: "Delete group",
                        run: () => groups.remove(t.id, g.id ?? ""),
                        invalidate: [key],
                        success: `Group ${g.name} deleted`,
                      })
                    }
                  >
                    Delete
                  </button>
                </>
              ),
          },
        ]}
      />
      {editing && (
        <FormDialog
          wide
          title={editing === "new" ? "New group" : `Edit group ${editing.name}`}
          submitLabel={editing === "new" ? "Create group" : "Save"}
          success={editing === "new" ? "Group created" : "Group saved"}
          initial={editing === "new" ? { name: "", description: "" } : { name: editing.name ?? "", description: editing.description ?? "" }}
          fields={[
            { name: "name", label: "Name", kind: "text", required: true, placeholder: "web-servers" },
            { name: "description", label: "Description", kind: "text" },
          ]}
          onClose={() => setEditing(null)}
          onSubmit={async (v) => {
            const body: Group = { name: str(v, "name"), description: str(v, "description"), members };
            if (editing === "new") await groups.create(t.id, body);
            else await groups.update(t.id, editing.id ?? "", body);
            await invalidate(key);
          }}
        >
          {() => <MembersEditor members={members} onChange={setMembers} names={names} />}
        </FormDialog>
      )}
    </>
  );
}
