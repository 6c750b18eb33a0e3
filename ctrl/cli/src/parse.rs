//! Pure parsers for the compact forms the command line accepts: durations, policy rules and
//! their selectors, group members, roles, CVLAN modes. Each returns the proto3 canonical JSON
//! the REST API expects, or a message clap shows as a usage error.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

/// A duration such as `90s`, `30m`, `24h`, `7d`, `2w`, or a plain number of seconds.
///
/// # Errors
/// A message naming the accepted forms.
pub fn duration(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a duration like 30m, 24h or 7d");
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err(bad());
    }
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    let secs = n.checked_mul(mult).ok_or_else(bad)?;
    if secs == 0 {
        return Err(format!("{s:?} must be longer than zero"));
    }
    Ok(secs)
}

/// A policy selector: `any`, `group:X`, `tag:X`, `node:X` or `cidr:X`.
///
/// # Errors
/// Unknown kinds and empty values.
pub fn selector(s: &str) -> Result<Value, String> {
    let s = s.trim();
    if s == "any" || s == "*" {
        return Ok(json!({"any": true}));
    }
    let Some((kind, value)) = s.split_once(':') else {
        return Err(format!(
            "selector {s:?} must be any, group:X, tag:X, node:X or cidr:X"
        ));
    };
    if value.is_empty() {
        return Err(format!("selector {s:?} has no value after {kind:?}"));
    }
    match kind {
        "group" | "tag" | "node" | "cidr" => Ok(json!({ kind: value })),
        _ => Err(format!(
            "selector kind {kind:?} is not one of group, tag, node, cidr (or any)"
        )),
    }
}

/// A group member: `user:ID`, `node:ID` or `tag:T`.
///
/// # Errors
/// Unknown kinds and empty values.
pub fn member(s: &str) -> Result<Value, String> {
    let Some((kind, value)) = s.trim().split_once(':') else {
        return Err(format!("member {s:?} must be user:ID, node:ID or tag:T"));
    };
    if value.is_empty() {
        return Err(format!("member {s:?} has no value after {kind:?}"));
    }
    let field = match kind {
        "user" => "userId",
        "node" => "nodeId",
        "tag" => "tag",
        _ => {
            return Err(format!(
                "member kind {kind:?} is not one of user, node, tag"
            ));
        }
    };
    Ok(json!({ field: value }))
}

/// Destination ports: `443`, `5432,8000-8100`.
///
/// # Errors
/// Non-numbers, zero, ports above 65535 and reversed ranges.
pub fn ports(s: &str) -> Result<Vec<Value>, String> {
    let port = |p: &str| -> Result<u32, String> {
        match p.trim().parse::<u32>() {
            Ok(n) if (1..=65_535).contains(&n) => Ok(n),
            _ => Err(format!("{p:?} is not a port between 1 and 65535")),
        }
    };
    s.split(',')
        .map(|part| {
            let (first, last) = match part.split_once('-') {
                Some((a, b)) => (port(a)?, port(b)?),
                None => {
                    let p = port(part)?;
                    (p, p)
                }
            };
            if first > last {
                return Err(format!("port range {part:?} runs backwards"));
            }
            Ok(json!({"first": first, "last": last}))
        })
        .collect()
}

/// A policy rule in `key=value` words:
/// `src=group:eng dst=tag:db proto=tcp ports=5432,8000-8100 action=allow`.
///
/// `src` and `dst` take comma-separated selectors and may repeat; `proto` defaults to any;
/// `action` is required so that no rule allows traffic by accident.
///
/// # Errors
/// Unknown keys, missing sources/destinations/action, and bad values.
pub fn rule(s: &str) -> Result<Value, String> {
    let mut sources = Vec::new();
    let mut destinations = Vec::new();
    let mut protocol: Option<&str> = None;
    let mut port_list: Option<Vec<Value>> = None;
    let mut action: Option<&str> = None;
    for word in s.split_whitespace() {
        let Some((key, value)) = word.split_once('=') else {
            return Err(format!(
                "rule word {word:?} is not key=value (keys: src, dst, proto, ports, action)"
            ));
        };
        match key {
            "src" | "source" | "sources" => {
                for sel in value.split(',') {
                    sources.push(selector(sel)?);
                }
            }
            "dst" | "destination" | "destinations" => {
                for sel in value.split(',') {
                    destinations.push(selector(sel)?);
                }
            }
            "proto" | "protocol" => {
                protocol = Some(match value.to_ascii_lowercase().as_str() {
                    "any" | "all" => "PROTOCOL_ANY",
                    "tcp" => "PROTOCOL_TCP",
                    "udp" => "PROTOCOL_UDP",
                    "icmp" => "PROTOCOL_ICMP",
                    "icmpv6" => "PROTOCOL_ICMPV6",
                    _ => {
                        return Err(format!(
                            "proto {value:?} is not one of any, tcp, udp, icmp, icmpv6"
                        ));
                    }
                });
            }
            "ports" | "port" => port_list = Some(ports(value)?),
            "action" => {
                action = Some(match value.to_ascii_lowercase().as_str() {
                    "allow" | "accept" => "ACTION_ALLOW",
                    "deny" | "drop" => "ACTION_DENY",
                    _ => return Err(format!("action {value:?} is not allow or deny")),
                });
            }
            _ => {
                return Err(format!(
                    "unknown rule key {key:?} (keys: src, dst, proto, ports, action)"
                ));
            }
        }
    }
    if sources.is_empty() {
        return Err("a rule needs src=… (use src=any for every node)".into());
    }
    if destinations.is_empty() {
        return Err("a rule needs dst=… (use dst=any for every node)".into());
    }
    let Some(action) = action else {
        return Err("a rule needs action=allow or action=deny".into());
    };
    let protocol = protocol.unwrap_or("PROTOCOL_ANY");
    if port_list.is_some() && !matches!(protocol, "PROTOCOL_TCP" | "PROTOCOL_UDP") {
        return Err("ports need proto=tcp or proto=udp".into());
    }
    let mut r = Map::new();
    r.insert("sources".into(), Value::Array(sources));
    r.insert("destinations".into(), Value::Array(destinations));
    r.insert("protocol".into(), Value::from(protocol));
    if let Some(p) = port_list {
        r.insert("ports".into(), Value::Array(p));
    }
    r.insert("action".into(), Value::from(action));
    Ok(Value::Object(r))
}

/// An SSO group mapping `CLAIM=GROUP_ID`.
///
/// # Errors
/// Missing `=` or an empty side.
pub fn mapping(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((c, g)) if !c.is_empty() && !g.is_empty() => Ok((c.to_string(), g.to_string())),
        _ => Err(format!("{s:?} is not CLAIM=GROUP_ID")),
    }
}

/// A user role as the API names it.
///
/// # Errors
/// Unknown role words.
pub fn role(s: &str) -> Result<&'static str, String> {
    match s.to_ascii_lowercase().as_str() {
        "viewer" => Ok("ROLE_VIEWER"),
        "operator" => Ok("ROLE_OPERATOR"),
        "admin" | "tenant-admin" => Ok("ROLE_TENANT_ADMIN"),
        "superadmin" => Ok("ROLE_SUPERADMIN"),
        _ => Err(format!(
            "role {s:?} is not one of viewer, operator, admin, superadmin"
        )),
    }
}

/// A CVLAN mode as the API names it.
///
/// # Errors
/// Unknown mode words.
pub fn cvlan_mode(s: &str) -> Result<&'static str, String> {
    match s.to_ascii_lowercase().as_str() {
        "mesh" => Ok("CVLAN_MODE_MESH"),
        "hub-and-spoke" | "hub" => Ok("CVLAN_MODE_HUB_AND_SPOKE"),
        _ => Err(format!("mode {s:?} is not mesh or hub-and-spoke")),
    }
}

/// A vrouter assignment `TENANT[/CVLAN]`, split into its parts.
///
/// # Errors
/// Empty parts.
pub fn assignment(s: &str) -> Result<(String, Option<String>), String> {
    let (t, c) = match s.split_once('/') {
        Some((t, c)) => (t, Some(c)),
        None => (s, None),
    };
    if t.is_empty() || c.is_some_and(str::is_empty) {
        return Err(format!("assignment {s:?} must be TENANT or TENANT/CVLAN"));
    }
    Ok((t.to_string(), c.map(String::from)))
}

/// An audit time bound: an RFC 3339 time passed through, or a duration meaning "that long ago".
///
/// # Errors
/// Neither form.
pub fn time_bound(s: &str) -> Result<String, String> {
    if let Ok(secs) = duration(s) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_secs();
        return Ok(rfc3339(now.saturating_sub(secs)));
    }
    let b = s.as_bytes();
    if b.len() >= 20 && b[4] == b'-' && b[7] == b'-' && matches!(b[10], b'T' | b't') {
        return Ok(s.to_string());
    }
    Err(format!(
        "{s:?} is neither an RFC 3339 time (2026-01-31T12:00:00Z) nor a duration like 24h"
    ))
}

/// Seconds since the Unix epoch as an RFC 3339 UTC time.
pub fn rfc3339(secs: u64) -> String {
    // Civil-from-days (H. Hinnant), for the proleptic Gregorian calendar.
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_seconds_minutes_hours_days_and_weeks() {
        assert_eq!(duration("90"), Ok(90));
        assert_eq!(duration("90s"), Ok(90));
        assert_eq!(duration("30m"), Ok(1800));
        assert_eq!(duration("24h"), Ok(86_400));
        assert_eq!(duration("7d"), Ok(604_800));
        assert_eq!(duration("2w"), Ok(1_209_600));
    }

    #[test]
    fn durations_reject_garbage_zero_and_overflow() {
        for bad in [
            "",
            "h",
            "24x",
            "1.5h",
            "-3h",
            "24 h",
            "0",
            "0m",
            "99999999999999999999d",
        ] {
            assert!(duration(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn selectors_map_to_proto_json_oneof_fields() {
        assert_eq!(selector("any"), Ok(json!({"any": true})));
        assert_eq!(selector("group:eng"), Ok(json!({"group": "eng"})));
        assert_eq!(selector("tag:db"), Ok(json!({"tag": "db"})));
        assert_eq!(selector("node:0190"), Ok(json!({"node": "0190"})));
        assert_eq!(selector("cidr:fd20::/64"), Ok(json!({"cidr": "fd20::/64"})));
    }

    #[test]
    fn selectors_reject_unknown_kinds_and_empty_values() {
        for bad in ["eng", "team:eng", "group:", "", "cidr"] {
            assert!(selector(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn the_documented_rule_parses_into_proto_json() {
        let r =
            rule("src=group:eng dst=tag:db proto=tcp ports=5432,8000-8100 action=allow").unwrap();
        assert_eq!(
            r,
            json!({
                "sources": [{"group": "eng"}],
                "destinations": [{"tag": "db"}],
                "protocol": "PROTOCOL_TCP",
                "ports": [{"first": 5432, "last": 5432}, {"first": 8000, "last": 8100}],
                "action": "ACTION_ALLOW",
            })
        );
    }

    #[test]
    fn rules_take_several_selectors_and_default_to_any_protocol() {
        let r = rule("src=group:a,tag:b src=cidr:10.0.0.0/8 dst=any action=deny").unwrap();
        assert_eq!(
            r["sources"],
            json!([{"group": "a"}, {"tag": "b"}, {"cidr": "10.0.0.0/8"}])
        );
        assert_eq!(r["destinations"], json!([{"any": true}]));
        assert_eq!(r["protocol"], "PROTOCOL_ANY");
        assert_eq!(r["action"], "ACTION_DENY");
        assert!(r.get("ports").is_none());
    }

    #[test]
    fn rules_without_sources_destinations_or_action_are_refused() {
        assert!(rule("dst=any action=allow").unwrap_err().contains("src"));
        assert!(rule("src=any action=allow").unwrap_err().contains("dst"));
        assert!(rule("src=any dst=any").unwrap_err().contains("action"));
    }

    #[test]
    fn rules_with_bad_words_ports_or_protocols_are_refused() {
        for bad in [
            "src=any dst=any action=allow color=red",
            "src=any dst=any action=maybe",
            "src=any dst=any proto=sctp action=allow",
            "src=any dst=any ports=80 action=allow",
            "src=any dst=any proto=icmp ports=80 action=allow",
            "src=any dst=any proto=tcp ports=0 action=allow",
            "src=any dst=any proto=tcp ports=70000 action=allow",
            "src=any dst=any proto=tcp ports=90-80 action=allow",
            "src=any dst=any proto=tcp ports=http action=allow",
            "src=team:x dst=any action=allow",
            "src dst=any action=allow",
        ] {
            assert!(rule(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn members_map_to_user_node_or_tag_fields() {
        assert_eq!(member("user:u1"), Ok(json!({"userId": "u1"})));
        assert_eq!(member("node:n1"), Ok(json!({"nodeId": "n1"})));
        assert_eq!(member("tag:web"), Ok(json!({"tag": "web"})));
        assert!(member("group:x").is_err());
        assert!(member("tag:").is_err());
        assert!(member("web").is_err());
    }

    #[test]
    fn roles_and_modes_map_to_enum_names() {
        assert_eq!(role("viewer"), Ok("ROLE_VIEWER"));
        assert_eq!(role("operator"), Ok("ROLE_OPERATOR"));
        assert_eq!(role("admin"), Ok("ROLE_TENANT_ADMIN"));
        assert_eq!(role("superadmin"), Ok("ROLE_SUPERADMIN"));
        assert!(role("root").is_err());
        assert_eq!(cvlan_mode("mesh"), Ok("CVLAN_MODE_MESH"));
        assert_eq!(cvlan_mode("hub-and-spoke"), Ok("CVLAN_MODE_HUB_AND_SPOKE"));
        assert!(cvlan_mode("star").is_err());
    }

    #[test]
    fn assignments_split_tenant_and_optional_cvlan() {
        assert_eq!(assignment("acme"), Ok(("acme".into(), None)));
        assert_eq!(
            assignment("acme/lab"),
            Ok(("acme".into(), Some("lab".into())))
        );
        assert!(assignment("/lab").is_err());
        assert!(assignment("acme/").is_err());
    }

    #[test]
    fn epoch_seconds_format_as_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_798_761_599), "2026-12-31T23:59:59Z");
    }

    #[test]
    fn time_bounds_take_rfc3339_or_a_duration_ago() {
        assert_eq!(
            time_bound("2026-01-31T12:00:00Z"),
            Ok("2026-01-31T12:00:00Z".into())
        );
        let ago = time_bound("1h").unwrap();
        assert!(ago.ends_with('Z') && ago.len() == 20, "{ago}");
        assert!(time_bound("yesterday").is_err());
    }
}
