import { describe, expect, it } from "vitest";
import {
  emptyPolicy,
  emptyRule,
  formatPorts,
  parsePorts,
  policyFromApi,
  policyToApi,
  selectorFromApi,
  selectorToApi,
  type PolicyForm,
} from "./ruleForm";

describe("parsePorts", () => {
  it("reads single ports and ranges separated by commas or spaces", () => {
    expect(parsePorts("22, 80-443 8000-8100")).toEqual({
      ranges: [
        { first: 22, last: 22 },
        { first: 80, last: 443 },
        { first: 8000, last: 8100 },
      ],
    });
  });
  it("treats empty text as every port", () => {
    expect(parsePorts("  ")).toEqual({ ranges: [] });
  });
  it.each(["0", "70000", "443-80", "http", "1-2-3", "-5"])("refuses %s", (text) => {
    expect("error" in parsePorts(text)).toBe(true);
  });
  it("formats ranges back", () => {
    expect(formatPorts([{ first: 22, last: 22 }, { first: 80, last: 443 }])).toBe("22, 80-443");
  });
});

describe("selectors", () => {
  it("map every kind to its oneof field", () => {
    expect(selectorToApi({ kind: "any", value: "ignored" })).toEqual({ any: true });
    expect(selectorToApi({ kind: "group", value: " g1 " })).toEqual({ group: "g1" });
    expect(selectorToApi({ kind: "tag", value: "web" })).toEqual({ tag: "web" });
    expect(selectorToApi({ kind: "node", value: "n1" })).toEqual({ node: "n1" });
    expect(selectorToApi({ kind: "cidr", value: "10.0.0.0/8" })).toEqual({ cidr: "10.0.0.0/8" });
  });
  it("read back from the API", () => {
    expect(selectorFromApi({ cidr: "fd00::/64" })).toEqual({ kind: "cidr", value: "fd00::/64" });
    expect(selectorFromApi({ any: true })).toEqual({ kind: "any", value: "" });
  });
});

describe("policyToApi", () => {
  const form: PolicyForm = {
    name: " web ",
    description: "web access",
    priority: "10",
    rules: [
      {
        sources: [{ kind: "group", value: "g-admins" }, { kind: "tag", value: "laptop" }],
        destinations: [{ kind: "cidr", value: "10.20.0.0/28" }],
        protocol: "PROTOCOL_TCP",
        ports: "22, 443",
        action: "ACTION_ALLOW",
      },
      { ...emptyRule(), protocol: "PROTOCOL_ICMP", ports: "22", action: "ACTION_DENY" },
    ],
  };

  it("builds the Policy body the server expects", () => {
    const r = policyToApi(form);
    expect(r).toEqual({
      body: {
        name: "web",
        description: "web access",
        priority: 10,
        rules: [
          {
            sources: [{ group: "g-admins" }, { tag: "laptop" }],
            destinations: [{ cidr: "10.20.0.0/28" }],
            protocol: "PROTOCOL_TCP",
            ports: [
              { first: 22, last: 22 },
              { first: 443, last: 443 },
            ],
            action: "ACTION_ALLOW",
          },
          // ports typed while TCP was selected are dropped for ICMP instead of being refused
          { sources: [{ any: true }], destinations: [{ any: true }], protocol: "PROTOCOL_ICMP", ports: [], action: "ACTION_DENY" },
        ],
      },
    });
  });

  it("names the rule whose ports cannot be read", () => {
    const bad = { ...form, rules: [form.rules[1]!, { ...form.rules[0]!, ports: "ssh" }] };
    const r = policyToApi(bad);
    expect(r).toMatchObject({ rule: 1 });
    expect("error" in r && r.error).toMatch(/^Rule 2: "ssh"/);
  });

  it("refuses a priority that is not a whole number", () => {
    expect("error" in policyToApi({ ...form, priority: "1.5" })).toBe(true);
    expect("error" in policyToApi({ ...form, priority: "abc" })).toBe(true);
  });

  it("sends an empty priority as 0", () => {
    const r = policyToApi({ ...emptyPolicy(), name: "p", priority: "" });
    expect("body" in r && r.body.priority).toBe(0);
  });

  it("round-trips through the API shape", () => {
    const r = policyToApi(form);
    if (!("body" in r)) throw new Error(r.error);
    const back = policyFromApi(r.body);
    expect(back.name).toBe("web");
    expect(back.rules[0]).toEqual({ ...form.rules[0], ports: "22, 443" });
    expect(back.rules[1]).toEqual({ ...form.rules[1], ports: "" });
  });

  it("fills proto3 defaults the server leaves out", () => {
    const f = policyFromApi({ name: "p", rules: [{ sources: [{ any: true }], destinations: [{ tag: "db" }], action: "ACTION_ALLOW" }] });
    expect(f.priority).toBe("0");
    expect(f.rules[0]?.protocol).toBe("PROTOCOL_ANY");
    expect(f.rules[0]?.ports).toBe("");
  });
});
