//! The server's store: Deployments as JSON, a global resourceVersion, the event log that watches
//! replay, and the simulated deployment controller.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::Scenario;

/// One watch event as kept in the log.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    /// The resourceVersion the event produced.
    pub rv: u64,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    /// The object after the change (before, for `DELETED`, with the deletion's version).
    pub object: Value,
}

/// A stored Deployment plus the controller's private bookkeeping.
#[derive(Debug)]
pub(crate) struct Stored {
    pub object: Value,
    pub scenario: Scenario,
    /// The pod template the controller last rolled out.
    rolled_template: Value,
    /// Ticks spent in the current rollout, `None` when there is none.
    rollout_ticks: Option<u32>,
    /// Templates that completed a rollout: going back to one (a rollback) scales up pods known
    /// to be healthy, so it always succeeds whatever the scenario.
    good_templates: Vec<Value>,
    /// The scenario of the current rollout.
    current: Scenario,
}

/// Everything the server knows.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub deployments: BTreeMap<(String, String), Stored>,
    pub rv: u64,
    pub events: Vec<Event>,
    uid: u64,
}

/// A Deployment's (namespace, name).
type Key = (String, String);

impl State {
    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn record(&mut self, kind: &'static str, key: &Key) {
        let rv = self.next_rv();
        if let Some(stored) = self.deployments.get_mut(key) {
            stored.object["metadata"]["resourceVersion"] = json!(rv.to_string());
            let object = stored.object.clone();
            self.events.push(Event { rv, kind, object });
        }
    }

    /// Creates a Deployment (already fully rolled out), returning the stored object.
    ///
    /// `object` needs `metadata.name`, `spec.template`; `namespace` wins over the body's.
    pub(super) fn create(
        &mut self,
        namespace: &str,
        mut object: Value,
        scenario: Scenario,
    ) -> Value {
        let name = object["metadata"]["name"].as_str().unwrap_or("").to_owned();
        self.uid += 1;
        object["apiVersion"] = json!("apps/v1");
        object["kind"] = json!("Deployment");
        let metadata = &mut object["metadata"];
        metadata["namespace"] = json!(namespace);
        metadata["uid"] = json!(format!("00000000-0000-4000-8000-{:012x}", self.uid));
        metadata["generation"] = json!(1);
        metadata["creationTimestamp"] = json!(now_rfc3339());
        if object["spec"]["replicas"].is_null() {
            object["spec"]["replicas"] = json!(1);
        }
        if object["spec"]["progressDeadlineSeconds"].is_null() {
            object["spec"]["progressDeadlineSeconds"] = json!(600);
        }
        let replicas = object["spec"]["replicas"].as_i64().unwrap_or(1);
        let template = object["spec"]["template"].clone();
        object["status"] = complete_status(&name, &template, 1, replicas);
        let key = (namespace.to_owned(), name);
        self.deployments.insert(
            key.clone(),
            Stored {
                object,
                scenario,
                rolled_template: template.clone(),
                rollout_ticks: None,
                good_templates: vec![template],
                current: scenario,
            },
        );
        self.record("ADDED", &key);
        self.deployments[&key].object.clone()
    }

    /// Replaces the spec/metadata of a stored Deployment with `updated` (after a patch or PUT),
    /// keeping the status and the server-owned metadata, bumping `generation` when the spec
    /// changed (as the registry strategy of apps/v1 Deployments does).
    pub(super) fn update(&mut self, key: &Key, mut updated: Value) -> Option<Value> {
        let stored = self.deployments.get_mut(key)?;
        let old = &stored.object;
        // The main resource ignores status changes; status is written through /status only.
        updated["status"] = old["status"].clone();
        for field in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "generation",
        ] {
            updated["metadata"][field] = old["metadata"][field].clone();
        }
        updated["apiVersion"] = json!("apps/v1");
        updated["kind"] = json!("Deployment");
        if updated["spec"] != old["spec"] {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            updated["metadata"]["generation"] = json!(generation);
        }
        if updated == *old {
            // A no-op patch does not write, so no new resourceVersion and no event.
            return Some(updated);
        }
        stored.object = updated;
        self.record("MODIFIED", key);
        Some(self.deployments[key].object.clone())
    }

    /// Deletes a Deployment, logging the `DELETED` event.
    pub(super) fn delete(&mut self, key: &Key) -> Option<Value> {
        let rv = self.next_rv();
        let mut stored = self.deployments.remove(key)?;
        stored.object["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.events.push(Event {
            rv,
            kind: "DELETED",
            object: stored.object.clone(),
        });
        Some(stored.object)
    }

    /// One step of the simulated deployment controller over all Deployments. Returns whether
    /// anything changed.
    pub(super) fn tick(&mut self) -> bool {
        let before = self.rv;
        let keys: Vec<Key> = self.deployments.keys().cloned().collect();
        for key in keys {
            self.tick_one(&key);
        }
        self.rv != before
    }

    fn tick_one(&mut self, key: &Key) {
        let Some(stored) = self.deployments.get_mut(key) else {
            return;
        };
        let name = key.1.clone();
        let object = &mut stored.object;
        let generation = object["metadata"]["generation"].as_i64().unwrap_or(1);
        let observed = object["status"]["observedGeneration"].as_i64().unwrap_or(0);
        let replicas = object["spec"]["replicas"].as_i64().unwrap_or(1);
        let template = object["spec"]["template"].clone();
        if generation > observed {
            if stored.scenario == Scenario::Stuck {
                // The controller never observes the new spec.
                return;
            }
            if template == stored.rolled_template && stored.rollout_ticks.is_none() {
                object["status"] = complete_status(&name, &template, generation, replicas);
            } else {
                // A new ReplicaSet: one new pod surged next to the old ones (maxSurge 1).
                stored.rolled_template = template.clone();
                stored.rollout_ticks = Some(0);
                stored.current = if stored.good_templates.contains(&template) {
                    Scenario::Healthy
                } else {
                    stored.scenario
                };
                let updated = replicas.min(1);
                object["status"] = status(
                    generation,
                    replicas + updated,
                    updated,
                    replicas,
                    progressing(&name, &template, "True", "ReplicaSetUpdated"),
                );
            }
            self.record("MODIFIED", key);
            return;
        }
        let Some(ticks) = stored.rollout_ticks else {
            return;
        };
        stored.rollout_ticks = Some(ticks + 1);
        match stored.current {
            Scenario::Healthy | Scenario::Stuck => {
                let st = &object["status"];
                let updated = st["updatedReplicas"].as_i64().unwrap_or(0);
                let current = st["replicas"].as_i64().unwrap_or(0);
                let cond = progressing(&name, &template, "True", "ReplicaSetUpdated");
                object["status"] = if updated < replicas {
                    status(generation, replicas + 1, updated + 1, replicas, cond)
                } else if current > updated {
                    // Old pods terminated; the last new one is not available yet.
                    status(generation, updated, updated, (updated - 1).max(0), cond)
                } else {
                    stored.rollout_ticks = None;
                    stored.good_templates.push(template.clone());
                    complete_status(&name, &template, generation, replicas)
                };
                self.record("MODIFIED", key);
            }
            Scenario::ProgressDeadlineExceeded => {
                if ticks >= 1 {
                    object["status"]["conditions"][1] =
                        progressing(&name, &template, "False", "ProgressDeadlineExceeded");
                    stored.rollout_ticks = None;
                    self.record("MODIFIED", key);
                }
            }
            Scenario::DeletedMidWait => {
                if ticks >= 1 {
                    self.delete(key);
                }
            }
        }
    }
}

fn status(
    generation: i64,
    replicas: i64,
    updated: i64,
    available: i64,
    progressing: Value,
) -> Value {
    json!({
        "observedGeneration": generation,
        "replicas": replicas,
        "updatedReplicas": updated,
        "readyReplicas": available,
        "availableReplicas": available,
        "unavailableReplicas": (replicas - available).max(0),
        "conditions": [
            {
                "type": "Available",
                "status": "True",
                "reason": "MinimumReplicasAvailable",
                "message": "Deployment has minimum availability.",
                "lastUpdateTime": now_rfc3339(),
                "lastTransitionTime": now_rfc3339(),
            },
            progressing,
        ],
    })
}

fn complete_status(name: &str, template: &Value, generation: i64, replicas: i64) -> Value {
    status(
        generation,
        replicas,
        replicas,
        replicas,
        progressing(name, template, "True", "NewReplicaSetAvailable"),
    )
}

/// The `Progressing` condition with the reasons and messages of the upstream controller
/// (`pkg/controller/deployment/util/deployment_util.go`).
fn progressing(name: &str, template: &Value, status: &str, reason: &str) -> Value {
    let rs = format!("{name}-{}", template_hash(template));
    let message = match reason {
        "NewReplicaSetAvailable" => format!("ReplicaSet \"{rs}\" has successfully progressed."),
        "ProgressDeadlineExceeded" => format!("ReplicaSet \"{rs}\" has timed out progressing."),
        _ => format!("ReplicaSet \"{rs}\" is progressing."),
    };
    json!({
        "type": "Progressing",
        "status": status,
        "reason": reason,
        "message": message,
        "lastUpdateTime": now_rfc3339(),
        "lastTransitionTime": now_rfc3339(),
    })
}

/// A stable short hash of the pod template, standing in for `pod-template-hash` (FNV-1a).
fn template_hash(template: &Value) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in template.to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:010x}", h & 0xff_ffff_ffff)
}

/// The current time as Kubernetes writes it (`2006-01-02T15:04:05Z`, seconds precision).
pub(crate) fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}
