//! The three patch formats: JSON merge (RFC 7386), strategic merge (merge
//! plus lists of named containers merged by name), JSON patch (RFC 6902).

use super::status_error;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Value};

/// RFC 7386 merge patch; with `strategic`, lists of named items (containers)
/// merge by `name` the way strategic-merge-patch does for them, and `$`-keys
/// are directives, not data (`$setElementOrder/containers` orders the list).
fn merge(target: &mut Value, patch: &Value, strategic: bool) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if strategic && k.starts_with('$') {
                    continue;
                }
                if v.is_null() {
                    t.remove(k);
                } else if strategic && (k == "containers" || k == "initContainers") && v.is_array() {
                    let existing = t.entry(k.clone()).or_insert_with(|| json!([]));
                    for item in v.as_array().unwrap() {
                        let name = item["name"].clone();
                        match existing.as_array_mut().unwrap().iter_mut().find(|c| c["name"] == name) {
                            Some(c) => merge(c, item, true),
                            None => existing.as_array_mut().unwrap().push(item.clone()),
                        }
                    }
                    if let Some(order) = p.get(&format!("$setElementOrder/{k}")).and_then(Value::as_array) {
                        let position =
                            |c: &Value| order.iter().position(|o| o["name"] == c["name"]).unwrap_or(usize::MAX);
                        existing.as_array_mut().unwrap().sort_by_key(position);
                    }
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v, strategic);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// RFC 6902 JSON patch: add, replace, remove (what kubectl rollout undo sends).
fn json_patch(target: &mut Value, ops: &Value) -> Result<(), String> {
    for op in ops.as_array().ok_or("a JSON patch is a list")? {
        let path = op["path"].as_str().ok_or("op without path")?;
        let (parent_path, last) = path.rsplit_once('/').ok_or("bad path")?;
        let last = last.replace("~1", "/").replace("~0", "~");
        let parent = target.pointer_mut(parent_path).ok_or(format!("no {parent_path}"))?;
        match op["op"].as_str() {
            Some("add") | Some("replace") => {
                parent.as_object_mut().ok_or("parent is not an object")?.insert(last, op["value"].clone());
            }
            Some("remove") => {
                parent.as_object_mut().ok_or("parent is not an object")?.remove(&last);
            }
            other => return Err(format!("unsupported op {other:?}")),
        }
    }
    Ok(())
}

pub(super) fn apply_patch(object: &mut Value, headers: &HeaderMap, body: &[u8]) -> Result<(), Response> {
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    let patch: Value = serde_json::from_slice(body).map_err(|e| status_error(400, "BadRequest", &e.to_string()))?;
    if let Some(rv) = patch["metadata"]["resourceVersion"].as_str() {
        if object["metadata"]["resourceVersion"].as_str() != Some(rv) {
            return Err(status_error(
                409,
                "Conflict",
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
    }
    match content_type.split(';').next().unwrap_or("") {
        "application/strategic-merge-patch+json" => merge(object, &patch, true),
        "application/merge-patch+json" => merge(object, &patch, false),
        "application/json-patch+json" => json_patch(object, &patch).map_err(|e| status_error(422, "Invalid", &e))?,
        other => {
            return Err(status_error(
                415,
                "UnsupportedMediaType",
                &format!("the body of the request was in an unknown format: {other}"),
            ))
        }
    }
    Ok(())
}
