//! The three patch types the API server accepts on a Deployment.
//!
//! JSON merge patch (RFC 7386) and JSON patch (RFC 6902) come from the `json-patch` crate. The
//! strategic merge patch is Kubernetes' own format (apimachinery
//! `pkg/util/strategicpatch/patch.go`): like a merge patch, but lists whose Go field carries a
//! `patchMergeKey` are merged element by element on that key, and `$patch`, `$setElementOrder/…`,
//! `$retainKeys` and `$deleteFromPrimitiveList/…` directives are understood. The merge keys below
//! are those of the core/v1 and apps/v1 types that a Deployment embeds.

use serde_json::{Map, Value};

/// The patch formats of `PATCH` requests, by their `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/json-patch+json` (RFC 6902).
    Json,
}

impl PatchKind {
    /// The patch kind for a request `Content-Type`, parameters ignored.
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        match content_type.split(';').next().unwrap_or("").trim() {
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/json-patch+json" => Some(Self::Json),
            _ => None,
        }
    }
}

/// Applies `patch` of `kind` to `target`.
///
/// # Errors
///
/// A message for a `422`/`400` answer when the patch body is malformed or a JSON patch
/// operation fails (for example `test` does not match).
pub fn apply(kind: PatchKind, target: &mut Value, patch: &Value) -> Result<(), String> {
    match kind {
        PatchKind::Merge => {
            json_patch::merge(target, patch);
            Ok(())
        }
        PatchKind::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| format!("invalid JSON patch: {e}"))?;
            json_patch::patch(target, &ops).map_err(|e| format!("the JSON patch failed: {e}"))
        }
        PatchKind::Strategic => {
            if !patch.is_object() {
                return Err("a strategic merge patch must be a JSON object".to_owned());
            }
            strategic_merge(target, patch);
            Ok(())
        }
    }
}

/// The merge key of a list field, by field name (upstream `patchMergeKey` struct tags).
fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims" => "name",
        "readinessGates" => "conditionType",
        "ports" => "containerPort",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "conditions" => "type",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        _ => return None,
    })
}

/// Strategic merge of `patch` into `target` (both objects at the top level).
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Some(patch_map) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    match patch_map.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut replaced = patch_map.clone();
            replaced.remove("$patch");
            *target = Value::Object(replaced);
            return;
        }
        Some("delete") => {
            *target = Value::Null;
            return;
        }
        _ => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(target_map) = target.as_object_mut() else {
        return;
    };
    if let Some(Value::Array(keep)) = patch_map.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        target_map.retain(|k, _| keep.contains(&k.as_str()));
    }
    let mut orders = Vec::new();
    for (key, value) in patch_map {
        if key == "$patch" || key == "$retainKeys" {
            continue;
        }
        if let Some(field) = key.strip_prefix("$setElementOrder/") {
            orders.push((field.to_owned(), value.clone()));
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(remove)) =
                (target_map.get_mut(field), value)
            {
                list.retain(|v| !remove.contains(v));
            }
            continue;
        }
        if value.is_null() {
            target_map.remove(key);
            continue;
        }
        match (target_map.get_mut(key), value) {
            (Some(existing @ Value::Object(_)), Value::Object(_)) => {
                strategic_merge(existing, value);
                if existing.is_null() {
                    target_map.remove(key);
                }
            }
            (Some(Value::Array(existing)), Value::Array(items)) => {
                merge_list(key, existing, items);
            }
            (_, Value::Array(items)) => {
                // No list yet: the patch's elements, directives removed.
                let mut fresh = Vec::new();
                merge_list(key, &mut fresh, items);
                target_map.insert(key.clone(), Value::Array(fresh));
            }
            (_, Value::Object(_)) => {
                let mut fresh = Value::Object(Map::new());
                strategic_merge(&mut fresh, value);
                if !fresh.is_null() {
                    target_map.insert(key.clone(), fresh);
                }
            }
            _ => {
                target_map.insert(key.clone(), value.clone());
            }
        }
    }
    for (field, order) in orders {
        if let (Some(Value::Array(list)), Value::Array(order)) = (target_map.get_mut(&field), order)
        {
            reorder(&field, list, &order);
        }
    }
}

fn merge_list(field: &str, existing: &mut Vec<Value>, items: &[Value]) {
    let Some(key) = merge_key(field) else {
        // Lists without a merge key are replaced (patchStrategy "replace", the default).
        *existing = items.to_vec();
        return;
    };
    if items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *existing = items
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .cloned()
            .collect();
        return;
    }
    for item in items {
        let id = item.get(key);
        let position = id.and_then(|id| existing.iter().position(|e| e.get(key) == Some(id)));
        if item.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(p) = position {
                existing.remove(p);
            }
            continue;
        }
        match position {
            Some(p) => strategic_merge(&mut existing[p], item),
            None => {
                let mut fresh = Value::Object(Map::new());
                strategic_merge(&mut fresh, item);
                existing.push(fresh);
            }
        }
    }
}

/// `$setElementOrder/<field>`: the listed elements first, in the listed order, then the rest in
/// their current order (upstream `normalizeElementOrder`).
fn reorder(field: &str, list: &mut Vec<Value>, order: &[Value]) {
    let Some(key) = merge_key(field) else {
        return;
    };
    let mut ordered = Vec::with_capacity(list.len());
    for wanted in order {
        if let Some(p) = list.iter().position(|e| e.get(key) == wanted.get(key)) {
            ordered.push(list.remove(p));
        }
    }
    ordered.append(list);
    *list = ordered;
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn deployment() -> Value {
        json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "side", "image": "s:1"}
        ]}}}})
    }

    #[test]
    fn strategic_patch_merges_containers_by_name() {
        let mut d = deployment();
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "side", "image": "s:2"}
        ]}}}});
        apply(PatchKind::Strategic, &mut d, &patch).unwrap();
        let containers = &d["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["image"], "a:1");
        assert_eq!(containers[0]["env"][0]["value"], "1");
        assert_eq!(containers[1]["image"], "s:2");
    }

    #[test]
    fn merge_patch_replaces_lists() {
        let mut d = deployment();
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "side", "image": "s:2"}
        ]}}}});
        apply(PatchKind::Merge, &mut d, &patch).unwrap();
        let containers = d["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(containers.len(), 1);
    }

    #[test]
    fn json_patch_replaces_one_path() {
        let mut d = deployment();
        let patch = json!([{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "a:2"}]);
        apply(PatchKind::Json, &mut d, &patch).unwrap();
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["image"],
            "a:2"
        );
        let failing = json!([{"op": "test", "path": "/spec/template/spec/containers/0/image", "value": "zzz"}]);
        assert!(apply(PatchKind::Json, &mut d, &failing).is_err());
    }

    #[test]
    fn directives_order_delete_and_null() {
        let mut d = deployment();
        // What `kubectl set image` sends, plus a deletion and a null.
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "side"}, {"name": "app"}],
            "containers": [
                {"name": "app", "image": "a:2", "env": [{"name": "X", "$patch": "delete"}]}
            ],
            "nodeSelector": null
        }}}});
        apply(PatchKind::Strategic, &mut d, &patch).unwrap();
        let containers = &d["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["name"], "side");
        assert_eq!(containers[1]["image"], "a:2");
        assert_eq!(containers[1]["env"], json!([]));
        assert!(
            d["spec"]["template"]["spec"]
                .get("$setElementOrder/containers")
                .is_none()
        );
    }
}
