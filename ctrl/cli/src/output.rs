//! Rendering: pretty JSON as the server sent it, or tables with the useful columns per noun.

use std::io::Write;

use comfy_table::{Table, presets};
use serde_json::Value;

use crate::cli::Output;

/// The kinds of object the CLI prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Noun {
    Tenant,
    Cvlan,
    User,
    Group,
    Policy,
    Node,
    Token,
    Vrouter,
    Region,
    Relay,
    Address,
    ExternalPeer,
    Sso,
    Audit,
}

impl Noun {
    /// The word used in messages.
    pub fn word(self) -> &'static str {
        match self {
            Noun::Tenant => "tenant",
            Noun::Cvlan => "cvlan",
            Noun::User => "user",
            Noun::Group => "group",
            Noun::Policy => "policy",
            Noun::Node => "node",
            Noun::Token => "token",
            Noun::Vrouter => "vrouter",
            Noun::Region => "region",
            Noun::Relay => "relay",
            Noun::Address => "address",
            Noun::ExternalPeer => "external peer",
            Noun::Sso => "SSO provider",
            Noun::Audit => "audit event",
        }
    }
}

/// Writes to stdout; a closed pipe (`| head`) is not an error worth reporting.
pub fn emit(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes()).and_then(|()| out.flush());
}

/// Pretty JSON plus a newline.
pub fn json(v: &Value) {
    emit(&format!(
        "{}\n",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    ));
}

/// A list response: JSON as is, or one table row per item (and a hint when more pages exist).
pub fn list(out: Output, noun: Noun, page: &Value) {
    if out == Output::Json {
        return json(page);
    }
    let cols = columns(noun, false);
    let mut t = table();
    t.set_header(cols.iter().map(|c| c.0));
    let empty = Vec::new();
    let items = page
        .get("items")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    for item in items {
        t.add_row(cols.iter().map(|c| (c.1)(item)));
    }
    emit(&render(&t));
    if let Some(next) = page
        .get("nextPageToken")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        eprintln!("more results: add --page-token {next} (or --all)");
    }
}

/// One object: JSON as is, or a two-column field/value table.
pub fn one(out: Output, noun: Noun, v: &Value) {
    if out == Output::Json {
        return json(v);
    }
    emit(&render(&detail(noun, v)));
}

/// A field/value table for one object.
pub fn detail(noun: Noun, v: &Value) -> Table {
    let mut t = table();
    for (name, f) in columns(noun, true) {
        t.add_row([name.to_string(), f(v)]);
    }
    t
}

/// A table as text, one line per row without the padding after the last column.
pub fn render(t: &Table) -> String {
    t.to_string()
        .lines()
        .map(|l| format!("{}\n", l.trim_end()))
        .collect()
}

fn table() -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    t
}

type Col = (&'static str, fn(&Value) -> String);

/// A field as text: strings bare, arrays comma-joined, absent as empty.
fn text(v: &Value, field: &str) -> String {
    match v.get(field) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| match x {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => other.to_string(),
    }
}

fn flag(v: &Value, field: &str) -> String {
    if v.get(field).and_then(Value::as_bool).unwrap_or(false) {
        "yes"
    } else {
        "no"
    }
    .into()
}

/// An enum name without its prefix, lowercased: `ROLE_TENANT_ADMIN` → `tenant-admin`.
fn enum_word(v: &Value, field: &str, prefix: &str) -> String {
    let s = text(v, field);
    s.strip_prefix(prefix)
        .unwrap_or(&s)
        .to_ascii_lowercase()
        .replace('_', "-")
}

fn members(v: &Value) -> String {
    let Some(ms) = v.get("members").and_then(Value::as_array) else {
        return String::new();
    };
    ms.iter()
        .map(|m| {
            [("userId", "user"), ("nodeId", "node"), ("tag", "tag")]
                .iter()
                .find_map(|(k, w)| {
                    m.get(*k)
                        .and_then(Value::as_str)
                        .map(|x| format!("{w}:{x}"))
                })
                .unwrap_or_else(|| m.to_string())
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn selector(s: &Value) -> String {
    if s.get("any").and_then(Value::as_bool) == Some(true) {
        return "any".into();
    }
    ["group", "tag", "node", "cidr"]
        .iter()
        .find_map(|k| {
            s.get(*k)
                .and_then(Value::as_str)
                .map(|x| format!("{k}:{x}"))
        })
        .unwrap_or_else(|| s.to_string())
}

/// A rule in the same words `--rule` accepts.
pub fn rule_words(r: &Value) -> String {
    let sels = |f: &str| -> String {
        r.get(f)
            .and_then(Value::as_array)
            .map(|a| a.iter().map(selector).collect::<Vec<_>>().join(","))
            .unwrap_or_default()
    };
    let mut s = format!("src={} dst={}", sels("sources"), sels("destinations"));
    let proto = enum_word(r, "protocol", "PROTOCOL_");
    if !proto.is_empty() && proto != "any" {
        s.push_str(&format!(" proto={proto}"));
    }
    if let Some(ps) = r
        .get("ports")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
    {
        let ps: Vec<String> = ps
            .iter()
            .map(|p| {
                let (a, b) = (text(p, "first"), text(p, "last"));
                if a == b || b.is_empty() {
                    a
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        s.push_str(&format!(" ports={}", ps.join(",")));
    }
    s.push_str(&format!(" action={}", enum_word(r, "action", "ACTION_")));
    s
}

fn rules(v: &Value) -> String {
    v.get("rules")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(rule_words).collect::<Vec<_>>().join("\n"))
        .unwrap_or_default()
}

fn count(v: &Value, field: &str) -> String {
    v.get(field)
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
        .to_string()
}

fn clip(s: String, n: usize) -> String {
    if s.chars().count() <= n {
        return s;
    }
    let mut c: String = s.chars().take(n.saturating_sub(1)).collect();
    c.push('…');
    c
}

fn columns(noun: Noun, detail: bool) -> Vec<Col> {
    let mut c: Vec<Col> = match noun {
        Noun::Tenant => vec![
            ("NAME", |v| text(v, "name")),
            ("DISPLAY NAME", |v| text(v, "displayName")),
            ("ID", |v| text(v, "id")),
        ],
        Noun::Cvlan => vec![
            ("NAME", |v| text(v, "name")),
            ("IPV4", |v| text(v, "ipv4Prefix")),
            ("IPV6", |v| text(v, "ipv6Prefix")),
            ("MODE", |v| enum_word(v, "mode", "CVLAN_MODE_")),
            ("USED", |v| {
                let used = text(v, "addressesUsed");
                let total = text(v, "addressesTotal");
                format!(
                    "{}/{}",
                    if used.is_empty() { "0" } else { &used },
                    if total.is_empty() { "?" } else { &total }
                )
            }),
            ("DESCRIPTION", |v| text(v, "description")),
            ("ID", |v| text(v, "id")),
        ],
        Noun::User => vec![
            ("EMAIL", |v| text(v, "email")),
            ("ROLE", |v| enum_word(v, "role", "ROLE_")),
            ("DISPLAY NAME", |v| text(v, "displayName")),
            ("TENANT", |v| text(v, "tenantId")),
            ("ID", |v| text(v, "id")),
        ],
        Noun::Group => vec![
            ("NAME", |v| text(v, "name")),
            ("MEMBERS", members),
            ("DESCRIPTION", |v| text(v, "description")),
            ("ID", |v| text(v, "id")),
        ],
        Noun::Policy if detail => vec![
            ("NAME", |v| text(v, "name")),
            ("PRIORITY", |v| {
                v.get("priority")
                    .map_or_else(|| "0".into(), |_| text(v, "priority"))
            }),
            ("DESCRIPTION", |v| text(v, "description")),
            ("RULES", rules),
            ("ID", |v| text(v, "id")),
        ],
        Noun::Policy => vec![
            ("NAME", |v| text(v, "name")),
            ("PRIORITY", |v| {
                v.get("priority")
                    .map_or_else(|| "0".into(), |_| text(v, "priority"))
            }),
            ("RULES", |v| count(v, "rules")),
            ("DESCRIPTION", |v| text(v, "description")),
            ("ID", |v| text(v, "id")),
        ],
        Noun::Node => vec![
            ("NAME", |v| text(v, "name")),
            ("IPV4", |v| text(v, "ipv4")),
            ("IPV6", |v| text(v, "ipv6")),
            ("ONLINE", |v| flag(v, "online")),
            ("TAGS", |v| text(v, "tags")),
            ("LAST SEEN", |v| text(v, "lastSeen")),
            ("ID", |v| text(v, "id")),
        ],
        Noun::Token => vec![
            ("ID", |v| text(v, "id")),
            ("CVLAN", |v| text(v, "cvlanId")),
            ("REUSABLE", |v| flag(v, "reusable")),
            ("EPHEMERAL", |v| flag(v, "ephemeral")),
            ("TAGS", |v| text(v, "tags")),
            ("EXPIRES", |v| text(v, "expiresAt")),
            ("USES", |v| {
                v.get("uses")
                    .map_or_else(|| "0".into(), |_| text(v, "uses"))
            }),
            ("REVOKED", |v| flag(v, "revoked")),
        ],
        Noun::Vrouter => vec![
            ("NAME", |v| text(v, "name")),
            ("REGION", |v| text(v, "regionId")),
            ("ENDPOINT", |v| text(v, "endpoint")),
            ("ASSIGNMENTS", |v| {
                v.get("assignments")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .map(|x| {
                                let (t, c) = (text(x, "tenantId"), text(x, "cvlanId"));
                                if c.is_empty() { t } else { format!("{t}/{c}") }
                            })
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default()
            }),
            ("ID", |v| text(v, "id")),
        ],
        Noun::Region => vec![
            ("NAME", |v| text(v, "name")),
            ("DESCRIPTION", |v| text(v, "description")),
            ("ID", |v| text(v, "id")),
        ],
        Noun::Relay => vec![
            ("NAME", |v| text(v, "name")),
            ("REGION", |v| text(v, "regionId")),
            ("ENDPOINT", |v| text(v, "endpoint")),
            ("ID", |v| text(v, "id")),
        ],
        Noun::Address => vec![
            ("ADDRESS", |v| text(v, "address")),
            ("ADDRESS V6", |v| text(v, "addressV6")),
            ("NODE", |v| text(v, "nodeId")),
            ("DESCRIPTION", |v| text(v, "description")),
            ("ID", |v| text(v, "id")),
        ],
        Noun::ExternalPeer => vec![
            ("NAME", |v| text(v, "name")),
            ("CVLAN", |v| text(v, "cvlanId")),
            ("ENDPOINT", |v| text(v, "endpoint")),
            ("ALLOWED IPS", |v| text(v, "allowedIps")),
            ("PUBLIC KEY", |v| text(v, "wgPublicKey")),
            ("ID", |v| text(v, "id")),
        ],
        Noun::Sso => vec![
            ("NAME", |v| text(v, "name")),
            ("ISSUER", |v| text(v, "issuer")),
            ("CLIENT", |v| text(v, "clientId")),
            ("SECRET", |v| {
                if v["clientSecretSet"] == Value::Bool(true) {
                    "set".into()
                } else {
                    "-".into()
                }
            }),
            ("DOMAINS", |v| text(v, "allowedDomains")),
            ("ENABLED", |v| {
                if v["enabled"] == Value::Bool(true) {
                    "yes".into()
                } else {
                    "no".into()
                }
            }),
            ("ID", |v| text(v, "id")),
        ],
        Noun::Audit if detail => vec![
            ("TIME", |v| text(v, "time")),
            ("ACTOR", |v| text(v, "actor")),
            ("ACTOR ID", |v| text(v, "actorId")),
            ("TENANT", |v| text(v, "tenantId")),
            ("ACTION", |v| text(v, "action")),
            ("TARGET", |v| {
                format!("{}:{}", text(v, "targetType"), text(v, "targetId"))
            }),
            ("SOURCE", |v| text(v, "sourceAddress")),
            ("SUMMARY", |v| text(v, "summary")),
            ("ID", |v| text(v, "id")),
        ],
        Noun::Audit => vec![
            ("TIME", |v| text(v, "time")),
            ("ACTOR", |v| text(v, "actor")),
            ("ACTION", |v| text(v, "action")),
            ("TARGET", |v| {
                format!("{}:{}", text(v, "targetType"), text(v, "targetId"))
            }),
            ("SOURCE", |v| text(v, "sourceAddress")),
            ("SUMMARY", |v| clip(text(v, "summary"), 60)),
        ],
    };
    if detail && noun != Noun::Audit {
        c.push(("CREATED", |v| text(v, "createdAt")));
        if !matches!(noun, Noun::Token | Noun::Address) {
            c.push(("UPDATED", |v| text(v, "updatedAt")));
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::parse;

    #[test]
    fn rules_render_back_into_the_words_the_parser_takes() {
        let words =
            "src=group:eng,cidr:10.0.0.0/8 dst=tag:db proto=tcp ports=5432,8000-8100 action=allow";
        let r = parse::rule(words).unwrap();
        assert_eq!(rule_words(&r), words);
        assert_eq!(parse::rule(&rule_words(&r)).unwrap(), r);
    }

    #[test]
    fn list_tables_show_one_row_per_item_with_the_useful_columns() {
        let page = json!({"items": [
            {"name": "lab", "ipv4Prefix": "10.20.0.0/24", "mode": "CVLAN_MODE_HUB_AND_SPOKE", "addressesUsed": "3", "addressesTotal": "254"}
        ]});
        let cols = columns(Noun::Cvlan, false);
        let row: Vec<String> = cols.iter().map(|c| (c.1)(&page["items"][0])).collect();
        assert_eq!(row[0], "lab");
        assert_eq!(row[3], "hub-and-spoke");
        assert_eq!(row[4], "3/254");
    }

    #[test]
    fn group_members_show_as_kind_value() {
        let g = json!({"members": [{"userId": "u1"}, {"tag": "web"}]});
        assert_eq!(members(&g), "user:u1,tag:web");
    }
}
