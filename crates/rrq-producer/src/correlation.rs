//! Correlation attributes derived from params (the reference's rules).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

const MAX_ATTRIBUTES: usize = 16;
const MAX_NAME_BYTES: usize = 64;
const MAX_VALUE_BYTES: usize = 256;

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

fn lookup<'a>(params: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let path = path.trim();
    let path = path.strip_prefix("params.").unwrap_or(path);
    let mut segments = path.split('.');
    let first = segments.next().filter(|s| !s.is_empty())?;
    let mut cur = params.get(first)?;
    for seg in segments {
        if seg.is_empty() {
            return None;
        }
        cur = cur.as_object()?.get(seg)?;
    }
    Some(cur)
}

/// Computes the correlation context of a job: for each mapping (attribute →
/// path into params), the trace context's value of the same name if present,
/// else the scalar found at the path. At most 16 attributes; names of 1–64
/// bytes; values truncated to 256 bytes.
pub fn correlation_context(
    mappings: &BTreeMap<String, String>,
    params: &Map<String, Value>,
    trace_context: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, path) in mappings {
        if out.len() >= MAX_ATTRIBUTES {
            break;
        }
        let name = name.trim();
        if name.is_empty() || name.len() > MAX_NAME_BYTES {
            continue;
        }
        let value = match trace_context.get(name).filter(|v| !v.is_empty()) {
            Some(v) => Some(v.clone()),
            None => match lookup(params, path) {
                Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                Some(Value::Bool(b)) => Some(b.to_string()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            },
        };
        if let Some(v) = value {
            out.insert(name.to_owned(), truncate(v, MAX_VALUE_BYTES));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matches_the_reference_example() {
        let mappings: BTreeMap<String, String> =
            [("tenant_id", "params.tenant.id"), ("user", "user_id"), ("big", "blob")]
                .into_iter()
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .collect();
        let params = json!({"tenant":{"id":7},"user_id":"u-1","blob":{"x":1}});
        let trace: BTreeMap<String, String> = [("user".to_owned(), "from-trace".to_owned())].into();
        let got = correlation_context(&mappings, params.as_object().unwrap(), &trace);
        let want: BTreeMap<String, String> =
            [("user", "from-trace"), ("tenant_id", "7")].into_iter().map(|(a, b)| (a.into(), b.into())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn values_are_truncated_on_a_char_boundary() {
        let mappings: BTreeMap<String, String> = [("v".to_owned(), "v".to_owned())].into();
        let params = json!({"v": "é".repeat(200)});
        let got = correlation_context(&mappings, params.as_object().unwrap(), &BTreeMap::new());
        assert_eq!(got["v"].len(), 256);
    }
}
