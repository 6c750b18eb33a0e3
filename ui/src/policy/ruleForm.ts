// The rule editor's form state and its mapping to and from the API's Policy body. Kept free of
// React so the mapping can be tested on its own. The server validates for real (CIDRs, names,
// references); the form only refuses what cannot be expressed in the body at all.
import type { Schemas } from "../api/client";

type Policy = Schemas["Policy"];
type Rule = NonNullable<Policy["rules"]>[number];
type Selector = NonNullable<Rule["sources"]>[number];
export type Protocol = NonNullable<Rule["protocol"]>;
export type Action = NonNullable<Rule["action"]>;

export const SELECTOR_KINDS = ["any", "group", "tag", "node", "cidr"] as const;
export type SelectorKind = (typeof SELECTOR_KINDS)[number];

export const PROTOCOLS: { value: Protocol; label: string }[] = [
  { value: "PROTOCOL_ANY", label: "Any protocol" },
  { value: "PROTOCOL_TCP", label: "TCP" },
  { value: "PROTOCOL_UDP", label: "UDP" },
  { value: "PROTOCOL_ICMP", label: "ICMP" },
  { value: "PROTOCOL_ICMPV6", label: "ICMPv6" },
];

export interface SelectorForm {
  kind: SelectorKind;
  /** Group id/name, tag, node id or CIDR; unused for "any". */
  value: string;
}

export interface RuleForm {
  sources: SelectorForm[];
  destinations: SelectorForm[];
  protocol: Protocol;
  /** "22, 80-443": comma or space separated ports and ranges; empty means every port. */
  ports: string;
  action: Action;
}

export interface PolicyForm {
  name: string;
  description: string;
  priority: string;
  rules: RuleForm[];
}

export const anySelector = (): SelectorForm => ({ kind: "any", value: "" });

export const emptyRule = (): RuleForm => ({
  sources: [anySelector()],
  destinations: [anySelector()],
  protocol: "PROTOCOL_ANY",
  ports: "",
  action: "ACTION_ALLOW",
});

export const emptyPolicy = (): PolicyForm => ({ name: "", description: "", priority: "100", rules: [emptyRule()] });

export const protocolTakesPorts = (p: Protocol) => p === "PROTOCOL_TCP" || p === "PROTOCOL_UDP";

export type PortRange = { first: number; last: number };

/** Parses "22, 80-443" into ranges; returns an error sentence for anything that is not ports. */
export function parsePorts(text: string): { ranges: PortRange[] } | { error: string } {
  const ranges: PortRange[] = [];
  for (const raw of text.split(/[\s,]+/)) {
    if (raw === "") continue;
    const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(raw);
    if (!m) return { error: `"${raw}" is not a port or a range like 8000-8100` };
    const first = Number(m[1]);
    const last = m[2] === undefined ? first : Number(m[2]);
    if (first < 1 || last > 65535 || first > last) {
      return { error: `"${raw}": ports run from 1 to 65535, low end first` };
    }
    ranges.push({ first, last });
  }
  return { ranges };
}

export function formatPorts(ranges: readonly PortRange[] | undefined): string {
  return (ranges ?? [])
    .map((r) => {
      const first = r.first ?? 0;
      const last = r.last ?? first;
      return first === last ? String(first) : `${first}-${last}`;
    })
    .join(", ");
}

export function selectorToApi(s: SelectorForm): Selector {
  const v = s.value.trim();
  switch (s.kind) {
    case "any":
      return { any: true };
    case "group":
      return { group: v };
    case "tag":
      return { tag: v };
    case "node":
      return { node: v };
    case "cidr":
      return { cidr: v };
  }
}

export function selectorFromApi(s: Selector): SelectorForm {
  if (s.group !== undefined) return { kind: "group", value: s.group };
  if (s.tag !== undefined) return { kind: "tag", value: s.tag };
  if (s.node !== undefined) return { kind: "node", value: s.node };
  if (s.cidr !== undefined) return { kind: "cidr", value: s.cidr };
  return anySelector();
}

/** Human-readable selector, e.g. "group web" or "10.0.0.0/24". */
export function describeSelector(s: Selector, names?: { groups?: Map<string, string>; nodes?: Map<string, string> }): string {
  const f = selectorFromApi(s);
  switch (f.kind) {
    case "any":
      return "any";
    case "group":
      return `group ${names?.groups?.get(f.value) ?? f.value}`;
    case "tag":
      return `tag:${f.value}`;
    case "node":
      return `node ${names?.nodes?.get(f.value) ?? f.value}`;
    case "cidr":
      return f.value;
  }
}

export type FormResult = { body: Policy } | { error: string; rule?: number };

/** The Policy body for create or PATCH (every editable field present, so a PATCH replaces them all). */
export function policyToApi(form: PolicyForm): FormResult {
  const priority = form.priority.trim() === "" ? 0 : Number(form.priority);
  if (!Number.isInteger(priority) || priority < -2147483648 || priority > 2147483647) {
    return { error: "Priority must be a whole number (lower runs first)." };
  }
  const rules: Rule[] = [];
  for (const [i, r] of form.rules.entries()) {
    const ports = protocolTakesPorts(r.protocol) ? parsePorts(r.ports) : { ranges: [] };
    if ("error" in ports) return { error: `Rule ${i + 1}: ${ports.error}`, rule: i };
    rules.push({
      sources: r.sources.map(selectorToApi),
      destinations: r.destinations.map(selectorToApi),
      protocol: r.protocol,
      ports: ports.ranges,
      action: r.action,
    });
  }
  return { body: { name: form.name.trim(), description: form.description.trim(), priority, rules } };
}

export function policyFromApi(p: Policy): PolicyForm {
  return {
    name: p.name ?? "",
    description: p.description ?? "",
    priority: String(p.priority ?? 0),
    rules: (p.rules ?? []).map((r) => ({
      sources: (r.sources ?? []).map(selectorFromApi),
      destinations: (r.destinations ?? []).map(selectorFromApi),
      // proto3 JSON omits defaults: a missing protocol is PROTOCOL_ANY.
      protocol: r.protocol ?? "PROTOCOL_ANY",
      ports: formatPorts(r.ports as PortRange[] | undefined),
      action: r.action ?? "ACTION_UNSPECIFIED",
    })),
  };
}
