//! The control socket protocol between `vrouterctl` and `vrouterd`: Unix stream, one JSON
//! request line, one JSON response line. Plus the human rendering `vrouterctl` prints.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Commands.
pub const COMMANDS: &[&str] = &["status", "tables", "peers", "keypairs", "counters", "punt"];

/// A request.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Request {
    /// One of [`COMMANDS`].
    pub cmd: String,
}

/// A response: `data` on success, `error` otherwise.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Response {
    /// Success.
    pub ok: bool,
    /// The answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// What went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    /// Success.
    #[must_use]
    pub fn ok(data: Value) -> Self {
        Self {
            ok: true,
            data: Some(data),
            error: None,
        }
    }

    /// Failure.
    #[must_use]
    pub fn err(e: impl Into<String>) -> Self {
        Self {
            ok: false,
            data: None,
            error: Some(e.into()),
        }
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(x) => x.clone(),
        o => o.to_string(),
    }
}

fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < w.len() {
                w[i] = w[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| -> String {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w.get(i).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(head.iter().map(|h| h.to_string()).collect());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.clone()));
        out.push('\n');
    }
    out
}

fn kv(v: &Value, prefix: &str, out: &mut String) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                kv(x, &p, out);
            }
        }
        Value::Array(a) if a.iter().all(|x| !x.is_object()) => {
            out.push_str(&format!(
                "{prefix}: {}\n",
                a.iter().map(s).collect::<Vec<_>>().join(", ")
            ));
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                kv(x, &format!("{prefix}[{i}]"), out);
            }
        }
        o => out.push_str(&format!("{prefix}: {}\n", s(o))),
    }
}

/// Human rendering of a command's data.
#[must_use]
pub fn render(cmd: &str, data: &Value) -> String {
    let rows = |key: &str, cols: &[&str]| -> Vec<Vec<String>> {
        data.get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|r| cols.iter().map(|c| s(&r[*c])).collect())
                    .collect()
            })
            .unwrap_or_default()
    };
    match cmd {
        "peers" => {
            let cols = [
                "slot",
                "node_id",
                "tenant",
                "endpoint",
                "current_age_s",
                "next",
                "initiating",
            ];
            table(&cols, &rows("peers", &cols))
        }
        "keypairs" => {
            let cols = [
                "node_id",
                "role",
                "receiver_index",
                "age_s",
                "initiator",
                "install_id",
            ];
            table(&cols, &rows("keypairs", &cols))
        }
        _ => {
            let mut out = String::new();
            kv(data, "", &mut out);
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_render_as_a_table_and_other_commands_as_key_values() {
        let d = serde_json::json!({"peers": [{"slot": 0, "node_id": "n1", "tenant": "t", "endpoint": "192.0.2.1:1",
            "current_age_s": 3, "next": false, "initiating": false}]});
        let t = render("peers", &d);
        assert!(
            t.lines().next().is_some_and(|l| l.starts_with("slot")),
            "{t}"
        );
        assert!(t.contains("n1") && t.contains("192.0.2.1:1"), "{t}");
        let st = render(
            "status",
            &serde_json::json!({"generation": 4, "control": {"connected": true}}),
        );
        assert!(
            st.contains("generation: 4") && st.contains("control.connected: true"),
            "{st}"
        );
    }

    #[test]
    fn requests_and_responses_are_one_json_line() {
        let r = serde_json::to_string(&Request {
            cmd: "status".into(),
        })
        .expect("json");
        assert!(!r.contains('\n'));
        let e = serde_json::to_string(&Response::err("nope")).expect("json");
        assert_eq!(e, r#"{"ok":false,"error":"nope"}"#);
    }
}
