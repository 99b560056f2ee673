//! The API request (RFC 8620 3.3) and its processing: `using`, method
//! calls in order, result references (3.7) and creation ids (3.3, 5.3).

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::error::{MethodError, Problem, NOT_REQUEST, UNKNOWN_CAPABILITY};
use axum::http::StatusCode;

/// One method call: name, arguments, call id.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub name: String,
    pub args: Map<String, Value>,
    pub id: String,
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub using: Vec<String>,
    pub calls: Vec<Call>,
    pub created_ids: Option<HashMap<String, String>>,
}

/// Parses the request object (after JSON parsing), checking `using`
/// against `capabilities` and the number of calls against `max_calls`.
pub fn parse(v: Value, capabilities: &[&str], max_calls: usize) -> Result<Request, Problem> {
    let bad = |d: &str| Problem::new(StatusCode::BAD_REQUEST, NOT_REQUEST, d);
    let Value::Object(mut o) = v else {
        return Err(bad("the request is not a JSON object"));
    };
    let using = match o.remove("using") {
        Some(Value::Array(a)) => a
            .into_iter()
            .map(|x| match x {
                Value::String(s) => Ok(s),
                _ => Err(bad("using must be an array of strings")),
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(bad("using is missing or not an array")),
    };
    for u in &using {
        if !capabilities.contains(&u.as_str()) {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                UNKNOWN_CAPABILITY,
                format!("unknown capability: {}", truncate(u, 100)),
            ));
        }
    }
    let calls = match o.remove("methodCalls") {
        Some(Value::Array(a)) => a,
        _ => return Err(bad("methodCalls is missing or not an array")),
    };
    if calls.len() > max_calls {
        return Err(Problem::limit(
            StatusCode::BAD_REQUEST,
            "maxCallsInRequest",
            format!("at most {max_calls} method calls per request"),
        ));
    }
    let mut out = Vec::with_capacity(calls.len());
    for c in calls {
        let Value::Array(mut a) = c else {
            return Err(bad("a method call is not an array"));
        };
        if a.len() != 3 {
            return Err(bad("a method call is not [name, arguments, id]"));
        }
        let id = a.pop();
        let args = a.pop();
        let name = a.pop();
        match (name, args, id) {
            (Some(Value::String(name)), Some(Value::Object(args)), Some(Value::String(id))) => {
                out.push(Call { name, args, id })
            }
            _ => return Err(bad("a method call is not [string, object, string]")),
        }
    }
    let created_ids = match o.remove("createdIds") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(
            m.into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k, s)),
                    _ => Err(bad("createdIds values must be strings")),
                })
                .collect::<Result<HashMap<_, _>, _>>()?,
        ),
        Some(_) => return Err(bad("createdIds is not an object")),
    };
    Ok(Request {
        using,
        calls: out,
        created_ids,
    })
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Replaces every `#name` argument by the value its result reference
/// points to (RFC 8620 3.7). `responses` are the responses so far
/// (name, arguments, call id).
pub fn resolve_references(
    args: Map<String, Value>,
    responses: &[(String, Value, String)],
) -> Result<Map<String, Value>, MethodError> {
    let mut out = Map::with_capacity(args.len());
    let mut plain = Vec::new();
    for (k, v) in args {
        if let Some(name) = k.strip_prefix('#') {
            let r = reference(&v, responses)?;
            out.insert(name.to_string(), r);
        } else {
            plain.push((k, v));
        }
    }
    for (k, v) in plain {
        if out.contains_key(&k) {
            return Err(MethodError::invalid(format!("both {k} and #{k} are given")));
        }
        out.insert(k, v);
    }
    Ok(out)
}

fn reference(v: &Value, responses: &[(String, Value, String)]) -> Result<Value, MethodError> {
    let bad = |d: &str| MethodError::InvalidResultReference(d.to_string());
    let (Some(result_of), Some(name), Some(path)) = (
        v.get("resultOf").and_then(Value::as_str),
        v.get("name").and_then(Value::as_str),
        v.get("path").and_then(Value::as_str),
    ) else {
        return Err(bad("a result reference needs resultOf, name and path"));
    };
    let Some((rname, rargs, _)) = responses.iter().find(|(_, _, id)| id == result_of) else {
        return Err(bad("no response with that call id"));
    };
    if rname != name {
        return Err(bad("the referenced response has another name"));
    }
    pointer(rargs, path).ok_or_else(|| bad("the path does not match the response"))
}

/// Evaluates a JSON pointer (RFC 6901) with JMAP's `*` extension (RFC
/// 8620 3.7): `*` on an array maps the rest of the path over its items,
/// flattening arrays the rest yields.
pub fn pointer(v: &Value, path: &str) -> Option<Value> {
    if path.is_empty() {
        return Some(v.clone());
    }
    let rest = path.strip_prefix('/')?;
    let (token, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let token = token.replace("~1", "/").replace("~0", "~");
    match v {
        Value::Array(a) if token == "*" => {
            let mut out = Vec::new();
            for item in a {
                match pointer(item, tail)? {
                    Value::Array(inner) => out.extend(inner),
                    x => out.push(x),
                }
            }
            Some(Value::Array(out))
        }
        Value::Array(a) => {
            if token.len() > 1 && token.starts_with('0') {
                return None;
            }
            let i: usize = token.parse().ok()?;
            pointer(a.get(i)?, tail)
        }
        Value::Object(o) => pointer(o.get(&token)?, tail),
        _ => None,
    }
}

/// Replaces `#creationId` references in an id by the id created for it
/// in this request (RFC 8620 5.3); None for an unknown creation id.
pub fn resolve_id(id: &str, created: &HashMap<String, String>) -> Option<String> {
    match id.strip_prefix('#') {
        Some(c) => created.get(c).cloned(),
        None => Some(id.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CAPS: &[&str] = &["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"];

    #[test]
    fn rfc8620_3_3_request_parses() {
        let r = parse(
            json!({"using": ["urn:ietf:params:jmap:core"],
                   "methodCalls": [["Core/echo", {"a": 1}, "c1"]],
                   "createdIds": {"k": "M0000000000000001"}}),
            CAPS,
            16,
        )
        .unwrap();
        assert_eq!(r.calls[0].name, "Core/echo");
        assert_eq!(r.calls[0].id, "c1");
        assert_eq!(r.created_ids.unwrap()["k"], "M0000000000000001");
    }

    #[test]
    fn rfc8620_3_6_1_request_level_errors() {
        let e = parse(json!([1]), CAPS, 16).unwrap_err();
        assert_eq!(e.kind, NOT_REQUEST);
        let e = parse(json!({"using": ["x:y"], "methodCalls": []}), CAPS, 16).unwrap_err();
        assert_eq!(e.kind, UNKNOWN_CAPABILITY);
        let e = parse(
            json!({"using": [], "methodCalls": [["a", {}, "1"], ["a", {}, "2"]]}),
            CAPS,
            1,
        )
        .unwrap_err();
        assert_eq!(e.limit, Some("maxCallsInRequest"));
        let e = parse(
            json!({"using": [], "methodCalls": [["a", [], "1"]]}),
            CAPS,
            16,
        )
        .unwrap_err();
        assert_eq!(e.kind, NOT_REQUEST);
    }

    #[test]
    fn rfc8620_3_7_result_references() {
        let responses = vec![(
            "Email/query".to_string(),
            json!({"ids": ["a", "b"], "list": [{"threadId": "t1", "x": [1, 2]}, {"threadId": "t2", "x": [3]}]}),
            "c0".to_string(),
        )];
        let args = json!({"#ids": {"resultOf": "c0", "name": "Email/query", "path": "/ids"}})
            .as_object()
            .unwrap()
            .clone();
        let r = resolve_references(args, &responses).unwrap();
        assert_eq!(r["ids"], json!(["a", "b"]));
        let v = &responses[0].1;
        assert_eq!(pointer(v, "/list/*/threadId"), Some(json!(["t1", "t2"])));
        assert_eq!(pointer(v, "/list/*/x"), Some(json!([1, 2, 3])));
        assert_eq!(pointer(v, "/ids/1"), Some(json!("b")));
        assert_eq!(pointer(v, "/nope"), None);
        for bad in [
            json!({"resultOf": "c9", "name": "Email/query", "path": "/ids"}),
            json!({"resultOf": "c0", "name": "Email/get", "path": "/ids"}),
            json!({"resultOf": "c0", "name": "Email/query", "path": "/zz"}),
            json!({"resultOf": "c0"}),
        ] {
            let args = json!({"#ids": bad}).as_object().unwrap().clone();
            assert!(matches!(
                resolve_references(args, &responses),
                Err(MethodError::InvalidResultReference(_))
            ));
        }
        let args =
            json!({"ids": [], "#ids": {"resultOf": "c0", "name": "Email/query", "path": "/ids"}})
                .as_object()
                .unwrap()
                .clone();
        assert!(matches!(
            resolve_references(args, &responses),
            Err(MethodError::InvalidArguments(_))
        ));
    }

    #[test]
    fn rfc8620_5_3_creation_ids_resolve() {
        let mut c = HashMap::new();
        c.insert("k1".to_string(), "F0000000000000009".to_string());
        assert_eq!(resolve_id("#k1", &c).as_deref(), Some("F0000000000000009"));
        assert_eq!(resolve_id("#k2", &c), None);
        assert_eq!(resolve_id("F1", &c).as_deref(), Some("F1"));
    }
}
