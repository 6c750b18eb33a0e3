import { useState, type FormEvent } from "react";
import { Link, useNavigate, useParams } from "react-router";
import { useQuery } from "@tanstack/react-query";
import { keys, policies } from "../api/entities";
import { errorMessage } from "../api/errors";
import { useInvalidate } from "../api/hooks";
import { useSession } from "../auth/session";
import { ErrorBox, Loading, PageHeader } from "../components/bits";
import { useFeedback } from "../components/feedback";
import {
  anySelector,
  emptyPolicy,
  emptyRule,
  policyFromApi,
  policyToApi,
  protocolTakesPorts,
  PROTOCOLS,
  SELECTOR_KINDS,
  type PolicyForm,
  type RuleForm,
  type SelectorForm,
  type SelectorKind,
} from "../policy/ruleForm";
import { useTenant } from "../tenant";
import { useSelectorNames } from "./Policies";

const KIND_LABELS: Record<SelectorKind, string> = { any: "Any node", group: "Group", tag: "Tag", node: "Node", cidr: "CIDR" };

function SelectorRow({
  s,
  onChange,
  onRemove,
  names,
  label,
  canRemove,
}: {
  s: SelectorForm;
  onChange: (s: SelectorForm) => void;
  onRemove: () => void;
  names: ReturnType<typeof useSelectorNames>;
  label: string;
  canRemove: boolean;
}) {
  let value = null;
  if (s.kind === "group" || s.kind === "node") {
    const opts = s.kind === "group" ? names.groupList.map((g) => [g.id, g.name]) : names.nodeList.map((n) => [n.id, n.name]);
    value = (
      <select aria-label={`${label} ${s.kind}`} value={s.value} onChange={(e) => onChange({ ...s, value: e.target.value })}>
        <option value="">Choose…</option>
        {/* Keep a value that is not in the list (deleted, or named) visible rather than dropping it. */}
        {s.value && !opts.some(([id]) => id === s.value) && <option value={s.value}>{s.value}</option>}
        {opts.map(([id, name]) => (
          <option key={id} value={id}>
            {name}
          </option>
        ))}
      </select>
    );
  } else if (s.kind === "tag" || s.kind === "cidr") {
    value = (
      <input
        aria-label={`${label} ${s.kind}`}
        value={s.value}
        placeholder={s.kind === "tag" ? "web" : "10.20.0.0/28"}
        onChange={(e) => onChange({ ...s, value: e.target.value })}
      />
    );
  }
  return (
    <div className="selector-row">
      <select aria-label={`${label} kind`} value={s.kind} onChange={(e) => onChange({ kind: e.target.value as SelectorKind, value: "" })}>
        {SELECTOR_KINDS.map((k) => (
          <option key={k} value={k}>
            {KIND_LABELS[k]}
          </option>
        ))}
      </select>
      {value}
      {canRemove && (
        <button type="button" className="small" aria-label={`Remove ${label.toLowerCase()}`} onClick={onRemove}>
          ×
        </button>
      )}
    </div>
  );
}

function SelectorList({
  title,
  items,
  onChange,
  names,
  readOnly,
}: {
  title: string;
  items: SelectorForm[];
  onChange: (items: SelectorForm[]) => void;
  names: ReturnType<typeof useSelectorNames>;
  readOnly: boolean;
}) {
  const label = title === "Sources" ? "Source" : "Destination";
  return (
    <div className="selector-list">
      <div className="sub-title">{title}</div>
      {items.map((s, i) => (
        <SelectorRow
          key={i}
          s={s}
          label={label}
          names={names}
          canRemove={!readOnly && items.length > 1}
          onChange={(n) => onChange(items.map((x, j) => (j === i ? n : x)))}
          onRemove={() => onChange(items.filter((_, j) => j !== i))}
        />
      ))}
      {!readOnly && (
        <button type="button" className="small link" onClick={() => onChange([...items, anySelector()])}>
          + add {label.toLowerCase()}
        </button>
      )}
    </div>
  );
}

function RuleEditor({
  index,
  rule,
  count,
  onChange,
  onMove,
  onRemove,
  names,
  highlight,
  readOnly,
}: {
  readOnly: boolean;
  index: number;
  rule: RuleForm;
  count: number;
  onChange: (r: RuleForm) => void;
  onMove: (delta: number) => void;
  onRemove: () => void;
  names: ReturnType<typeof useSelectorNames>;
  highlight: boolean;
}) {
  return (
    <fieldset className={highlight ? "rule highlight" : "rule"} aria-label={`Rule ${index + 1}`}>
      <legend>Rule {index + 1}</legend>
      <div className="rule-grid">
        <SelectorList title="Sources" readOnly={readOnly} items={rule.sources} names={names} onChange={(sources) => onChange({ ...rule, sources })} />
        <SelectorList title="Destinations" readOnly={readOnly} items={rule.destinations} names={names} onChange={(destinations) => onChange({ ...rule, destinations })} />
        <div className="rule-side">
          <label>
            <span className="sub-title">Protocol</span>
            <select
              aria-label={`Rule ${index + 1} protocol`}
              value={rule.protocol}
              onChange={(e) => {
                const protocol = e.target.value as RuleForm["protocol"];
                onChange({ ...rule, protocol, ports: protocolTakesPorts(protocol) ? rule.ports : "" });
              }}
            >
              {PROTOCOLS.map((p) => (
                <option key={p.value} value={p.value}>
                  {p.label}
                </option>
              ))}
            </select>
          </label>
          {protocolTakesPorts(rule.protocol) && (
            <label>
              <span className="sub-title">Ports</span>
              <input aria-label={`Rule ${index + 1} ports`} value={rule.ports} placeholder="all, or 22, 80-443" onChange={(e) => onChange({ ...rule, ports: e.target.value })} />
            </label>
          )}
          <div className="segmented" role="radiogroup" aria-label={`Rule ${index + 1} action`}>
            {(["ACTION_ALLOW", "ACTION_DENY"] as const).map((a) => (
              <label key={a} className={rule.action === a ? "on" : ""}>
                <input type="radio" name={`action-${index}`} checked={rule.action === a} onChange={() => onChange({ ...rule, action: a })} />
                {a === "ACTION_ALLOW" ? "Allow" : "Deny"}
              </label>
            ))}
          </div>
        </div>
      </div>
      {!readOnly && <div className="rule-actions">
        <button type="button" className="small" disabled={index === 0} onClick={() => onMove(-1)} aria-label={`Move rule ${index + 1} up`}>
          ↑
        </button>
        <button type="button" className="small" disabled={index === count - 1} onClick={() => onMove(1)} aria-label={`Move rule ${index + 1} down`}>
          ↓
        </button>
        <button type="button" className="small danger" onClick={onRemove}>
          Remove rule
        </button>
      </div>}
    </fieldset>
  );
}

/** Which rule a server message like "rules[2]: …" is about, to highlight it. */
export function ruleIndexOf(message: string): number | undefined {
  const m = /rules\[(\d+)\]/.exec(message);
  return m ? Number(m[1]) : undefined;
}

export function PolicyEditorPage() {
  const t = useTenant();
  const { policyId } = useParams();
  const existing = useQuery({
    queryKey: [...keys.t(t.id, "policies"), "one", policyId],
    queryFn: () => policies.get(t.id, policyId ?? ""),
    enabled: policyId !== undefined,
  });
  if (policyId === undefined) return <PolicyEditor key="new" policyId={undefined} initial={emptyPolicy()} title="New policy" />;
  if (existing.isLoading) return <Loading what="policy" />;
  if (existing.error || !existing.data) return <ErrorBox error={existing.error ?? new Error("Policy not found.")} />;
  // Keyed by id: the form state starts from the loaded policy and is not overwritten by refetches.
  return <PolicyEditor key={policyId} policyId={policyId} initial={policyFromApi(existing.data)} title={`Policy ${existing.data.name ?? ""}`} />;
}

function PolicyEditor({ policyId, initial, title }: { policyId: string | undefined; initial: PolicyForm; title: string }) {
  const t = useTenant();
  const isNew = policyId === undefined;
  const { caps } = useSession();
  const canWrite = caps.can("policy", "write", t.id);
  const names = useSelectorNames(t.id);
  const navigate = useNavigate();
  const invalidate = useInvalidate();
  const { toast } = useFeedback();
  const [form, setForm] = useState<PolicyForm>(initial);
  const [error, setError] = useState<{ message: string; rule?: number } | null>(null);
  const [busy, setBusy] = useState(false);
  const setRule = (i: number, r: RuleForm) => setForm({ ...form, rules: form.rules.map((x, j) => (j === i ? r : x)) });
  const move = (i: number, d: number) => {
    const rules = [...form.rules];
    const [r] = rules.splice(i, 1);
    if (r) rules.splice(i + d, 0, r);
    setForm({ ...form, rules });
  };

  const save = async (e: FormEvent) => {
    e.preventDefault();
    setError(null);
    const mapped = policyToApi(form);
    if ("error" in mapped) {
      setError({ message: mapped.error, rule: mapped.rule });
      return;
    }
    setBusy(true);
    try {
      const saved = isNew ? await policies.create(t.id, mapped.body) : await policies.update(t.id, policyId ?? "", mapped.body);
      await invalidate(keys.t(t.id, "policies"));
      toast(isNew ? `Policy ${saved.name} created` : `Policy ${saved.name} saved`);
      setForm(policyFromApi(saved));
      if (isNew) navigate(`/t/${t.id}/policies/${saved.id}`, { replace: true });
    } catch (err) {
      // The server names the rule as "rules[i]"; keep its words and say which rule in ours.
      const message = errorMessage(err);
      const rule = ruleIndexOf(message);
      setError({ message: rule === undefined ? message : `Rule ${rule + 1}: ${message}`, rule });
    } finally {
      setBusy(false);
    }
  };

  return (
    <>
      <PageHeader
        title={title}
        subtitle={<Link to={`/t/${t.id}/policies`}>← All policies</Link>}
      />
      <form className="policy-form" onSubmit={save} aria-label="Policy editor">
        <fieldset disabled={!canWrite} className="plain-fieldset">
          <div className="form-row">
            <div className="field">
              <label htmlFor="p-name">Name *</label>
              <input id="p-name" value={form.name} required onChange={(e) => setForm({ ...form, name: e.target.value })} placeholder="web-access" />
            </div>
            <div className="field narrow">
              <label htmlFor="p-priority">Priority</label>
              <input id="p-priority" inputMode="numeric" value={form.priority} onChange={(e) => setForm({ ...form, priority: e.target.value })} />
            </div>
          </div>
          <div className="field">
            <label htmlFor="p-desc">Description</label>
            <input id="p-desc" value={form.description} onChange={(e) => setForm({ ...form, description: e.target.value })} />
          </div>
          {form.rules.length === 0 && <p className="muted">No rules: this policy matches nothing.</p>}
          {form.rules.map((r, i) => (
            <RuleEditor
              key={i}
              index={i}
              rule={r}
              count={form.rules.length}
              names={names}
              highlight={error?.rule === i}
              readOnly={!canWrite}
              onChange={(n) => setRule(i, n)}
              onMove={(d) => move(i, d)}
              onRemove={() => setForm({ ...form, rules: form.rules.filter((_, j) => j !== i) })}
            />
          ))}
          {canWrite && (
            <button type="button" onClick={() => setForm({ ...form, rules: [...form.rules, emptyRule()] })}>
              + Add rule
            </button>
          )}
        </fieldset>
        {error && (
          <div className="error-box" role="alert" data-testid="policy-error">
            {error.message}
          </div>
        )}
        {canWrite ? (
          <div className="actions sticky">
            <Link to={`/t/${t.id}/policies`} className="button">
              Cancel
            </Link>
            <button type="submit" className="primary" disabled={busy}>
              {busy ? "Saving…" : isNew ? "Create policy" : "Save policy"}
            </button>
          </div>
        ) : (
          <p className="muted">Your role can view policies but not change them.</p>
        )}
      </form>
    </>
  );
}
