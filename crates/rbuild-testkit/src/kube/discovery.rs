//! Discovery documents and the `meta.k8s.io/v1` Table that `kubectl get` asks for.
//!
//! Plain (non-aggregated) discovery: kubectl asks `/api` and `/apis` for
//! `as=APIGroupDiscoveryList` first and falls back to the legacy documents when the answer's
//! Content-Type is plain `application/json` (client-go `discovery/aggregated_discovery.go`).

use serde_json::{Value, json};

/// `/version`.
pub(crate) fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": "v1.32.0-rbuild-fake",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.23.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `/api`.
pub(crate) fn api_versions(addr: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr}],
    })
}

fn apps_group_body() -> Value {
    json!({
        "name": "apps",
        "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
        "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"},
    })
}

/// `/apis`.
pub(crate) fn api_groups() -> Value {
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [apps_group_body()]})
}

/// `/apis/apps`.
pub(crate) fn apps_group() -> Value {
    let mut group = apps_group_body();
    group["kind"] = json!("APIGroup");
    group["apiVersion"] = json!("v1");
    group
}

/// `/api/v1`.
pub(crate) fn core_v1() -> Value {
    json!({
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [{
            "name": "namespaces",
            "singularName": "namespace",
            "namespaced": false,
            "kind": "Namespace",
            "verbs": ["get", "list"],
            "shortNames": ["ns"],
        }],
    })
}

/// `/apis/apps/v1`.
pub(crate) fn apps_v1() -> Value {
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "apps/v1",
        "resources": [{
            "name": "deployments",
            "singularName": "deployment",
            "namespaced": true,
            "kind": "Deployment",
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
            "shortNames": ["deploy"],
            "categories": ["all"],
        }],
    })
}

/// `GET /api/v1/namespaces/NAME`: every namespace exists.
pub(crate) fn namespace(name: &str) -> Value {
    json!({
        "kind": "Namespace",
        "apiVersion": "v1",
        "metadata": {"name": name},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    })
}

/// The Table the apps/v1 Deployment printer produces (`pkg/printers/internalversion`):
/// NAME, READY, UP-TO-DATE, AVAILABLE, AGE, and with `-o wide` CONTAINERS, IMAGES, SELECTOR.
pub(crate) fn table(objects: &[&Value], resource_version: &str) -> Value {
    let column = |name: &str, kind: &str, priority: u8| {
        json!({"name": name, "type": kind, "format": if name == "Name" { "name" } else { "" },
               "description": name, "priority": priority})
    };
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let containers = o["spec"]["template"]["spec"]["containers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let join = |field: &str| {
                containers
                    .iter()
                    .filter_map(|c| c[field].as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let selector = o["spec"]["selector"]["matchLabels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            let st = &o["status"];
            let ready = format!(
                "{}/{}",
                st["readyReplicas"].as_i64().unwrap_or(0),
                o["spec"]["replicas"].as_i64().unwrap_or(0)
            );
            let mut metadata = o["metadata"].clone();
            if let Some(m) = metadata.as_object_mut() {
                m.remove("managedFields");
            }
            json!({
                "cells": [
                    o["metadata"]["name"], ready,
                    st["updatedReplicas"].as_i64().unwrap_or(0),
                    st["availableReplicas"].as_i64().unwrap_or(0),
                    age(&o["metadata"]["creationTimestamp"]), join("name"), join("image"), selector,
                ],
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": metadata,
                },
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [
            column("Name", "string", 0),
            column("Ready", "string", 0),
            column("Up-to-date", "integer", 0),
            column("Available", "integer", 0),
            column("Age", "string", 0),
            column("Containers", "string", 1),
            column("Images", "string", 1),
            column("Selector", "string", 1),
        ],
        "rows": rows,
    })
}

/// kubectl's `duration.HumanDuration` for the AGE column, coarsened past ten minutes.
fn age(created: &Value) -> String {
    let parsed = created.as_str().and_then(|t| {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
    });
    let Some(created) = parsed else {
        return "<unknown>".to_owned();
    };
    let secs = (time::OffsetDateTime::now_utc() - created)
        .whole_seconds()
        .max(0);
    match secs {
        0..120 => format!("{secs}s"),
        120..600 if secs % 60 == 0 => format!("{}m", secs / 60),
        120..600 => format!("{}m{}s", secs / 60, secs % 60),
        600..10800 => format!("{}m", secs / 60),
        _ => format!("{}h", secs / 3600),
    }
}
