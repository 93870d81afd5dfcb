//! HTTP routing of the fake API server: discovery, Deployments (get, list, watch, create,
//! patch, put, delete), Table output for `kubectl get`, bearer-token checks.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};

use super::patch::{self, PatchKind};
use super::state::{Event, State};
use super::{Access, Scenario};

/// The response body: a whole JSON document, or a stream of watch events.
pub(crate) type Body = BoxBody<Bytes, Infallible>;

/// What the request handlers share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub state: Mutex<State>,
    /// The latest resourceVersion, so that watches wake up on a change.
    pub changed: tokio::sync::watch::Sender<u64>,
    /// Bearer token → access; empty means no authentication.
    pub tokens: HashMap<String, Access>,
    /// Every request as `METHOD path?query content-type`, for assertions.
    pub requests: Mutex<Vec<String>>,
    /// The server's own address, for `/api`'s `serverAddressByClientCIDRs`.
    pub addr: String,
    /// Whether the controller is paused.
    pub paused: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// Locks the store, surviving a panicked holder (tests go on to report the real failure).
    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes the watches after a change.
    pub(super) fn notify(&self) {
        let rv = self.state().rv;
        self.changed.send_replace(rv);
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// A `metav1.Status` failure, the body every API error has.
fn status_error(code: StatusCode, reason: &str, message: &str, details: Value) -> Response<Body> {
    json_response(
        code,
        &json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "details": details,
            "code": code.as_u16(),
        }),
    )
}

fn not_found(name: &str) -> Response<Body> {
    status_error(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("deployments.apps \"{name}\" not found"),
        json!({"name": name, "group": "apps", "kind": "deployments"}),
    )
}

fn no_route() -> Response<Body> {
    status_error(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the server could not find the requested resource",
        json!({}),
    )
}

fn query_map(query: Option<&str>) -> HashMap<String, String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// Handles one request.
pub(crate) async fn handle(shared: Arc<Shared>, request: Request<Incoming>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let content_type = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let accept = parts
        .headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    shared
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(
            format!("{} {} {}", parts.method, parts.uri, content_type)
                .trim_end()
                .to_owned(),
        );
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return status_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("reading the request body: {e}"),
                json!({}),
            );
        }
    };
    let path = parts.uri.path().to_owned();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let query = query_map(parts.uri.query());

    // Authentication and authorization, as the real server orders them: 401 before 403.
    let access = if shared.tokens.is_empty() {
        Access::Admin
    } else {
        // kubectl (client-go) does not send a bearer token to an `http://` server, but it does
        // send the impersonation header of the kubeconfig's `as:`, so either names the caller.
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let token = header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .or_else(|| header("impersonate-user"));
        match token.and_then(|t| shared.tokens.get(t)) {
            Some(access) => *access,
            None if segments == ["version"] => Access::ReadOnly,
            None => {
                return status_error(
                    StatusCode::UNAUTHORIZED,
                    "Unauthorized",
                    "Unauthorized",
                    json!({}),
                );
            }
        }
    };

    match segments.as_slice() {
        ["version"] => json_response(StatusCode::OK, &super::discovery::version()),
        ["api"] => json_response(
            StatusCode::OK,
            &super::discovery::api_versions(&shared.addr),
        ),
        ["apis"] => json_response(StatusCode::OK, &super::discovery::api_groups()),
        ["api", "v1"] => json_response(StatusCode::OK, &super::discovery::core_v1()),
        ["apis", "apps"] => json_response(StatusCode::OK, &super::discovery::apps_group()),
        ["apis", "apps", "v1"] => json_response(StatusCode::OK, &super::discovery::apps_v1()),
        ["api", "v1", "namespaces", ns] if parts.method == Method::GET => {
            json_response(StatusCode::OK, &super::discovery::namespace(ns))
        }
        ["apis", "apps", "v1", "deployments"] if parts.method == Method::GET => {
            collection(&shared, None, &query, &accept).await
        }
        ["apis", "apps", "v1", "namespaces", ns, "deployments"] => match parts.method {
            Method::GET => collection(&shared, Some(ns), &query, &accept).await,
            Method::POST => {
                if let Some(denied) = forbid(access, "create", ns, "") {
                    return denied;
                }
                create(&shared, ns, &body)
            }
            _ => method_not_allowed(),
        },
        ["apis", "apps", "v1", "namespaces", ns, "deployments", name] => {
            let verb = match parts.method {
                Method::GET => "get",
                Method::PATCH => "patch",
                Method::PUT => "update",
                Method::DELETE => "delete",
                _ => return method_not_allowed(),
            };
            if verb != "get"
                && let Some(denied) = forbid(access, verb, ns, name)
            {
                return denied;
            }
            let key = ((*ns).to_owned(), (*name).to_owned());
            match verb {
                "get" => get(&shared, &key, &accept),
                "patch" => patch_one(&shared, &key, &content_type, &body),
                "update" => put(&shared, &key, &body),
                _ => delete(&shared, &key),
            }
        }
        _ => no_route(),
    }
}

fn method_not_allowed() -> Response<Body> {
    status_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
        json!({}),
    )
}

/// The RBAC denial message of the real server (`apiserver/pkg/endpoints/handlers/responsewriters`).
fn forbid(access: Access, verb: &str, ns: &str, name: &str) -> Option<Response<Body>> {
    if access == Access::Admin {
        return None;
    }
    let subject = if name.is_empty() {
        "deployments.apps".to_owned()
    } else {
        format!("deployments.apps \"{name}\"")
    };
    Some(status_error(
        StatusCode::FORBIDDEN,
        "Forbidden",
        &format!(
            "{subject} is forbidden: User \"reader\" cannot {verb} resource \"deployments\" in API group \"apps\" in the namespace \"{ns}\""
        ),
        json!({"name": name, "group": "apps", "kind": "deployments"}),
    ))
}

fn wants_table(accept: &str) -> bool {
    accept.contains("as=Table")
}

fn get(shared: &Shared, key: &(String, String), accept: &str) -> Response<Body> {
    let state = shared.state();
    match state.deployments.get(key) {
        Some(stored) if wants_table(accept) => {
            let rv = state.rv.to_string();
            json_response(
                StatusCode::OK,
                &super::discovery::table(&[&stored.object], &rv),
            )
        }
        Some(stored) => json_response(StatusCode::OK, &stored.object),
        None => not_found(&key.1),
    }
}

/// Whether `object` passes the `fieldSelector` and `labelSelector` (equality terms only).
fn selected(object: &Value, query: &HashMap<String, String>) -> bool {
    let fields = query.get("fieldSelector").map_or("", String::as_str);
    let fields_ok = fields.split(',').filter(|t| !t.is_empty()).all(|term| {
        let (field, wanted, negate) = match term.split_once("!=") {
            Some((f, v)) => (f, v, true),
            None => match term.split_once("==").or_else(|| term.split_once('=')) {
                Some((f, v)) => (f, v, false),
                None => return true,
            },
        };
        let actual = match field {
            "metadata.name" => object["metadata"]["name"].as_str(),
            "metadata.namespace" => object["metadata"]["namespace"].as_str(),
            _ => None,
        };
        (actual == Some(wanted)) != negate
    });
    let labels = query.get("labelSelector").map_or("", String::as_str);
    let labels_ok = labels.split(',').filter(|t| !t.is_empty()).all(|term| {
        match term.split_once("==").or_else(|| term.split_once('=')) {
            Some((k, v)) => object["metadata"]["labels"][k].as_str() == Some(v),
            None => object["metadata"]["labels"].get(term).is_some(),
        }
    });
    fields_ok && labels_ok
}

fn in_scope(object: &Value, ns: Option<&str>, query: &HashMap<String, String>) -> bool {
    ns.is_none_or(|ns| object["metadata"]["namespace"].as_str() == Some(ns))
        && selected(object, query)
}

async fn collection(
    shared: &Arc<Shared>,
    ns: Option<&str>,
    query: &HashMap<String, String>,
    accept: &str,
) -> Response<Body> {
    let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    if watch {
        return watch_response(shared, ns, query, wants_table(accept));
    }
    let state = shared.state();
    let items: Vec<&Value> = state
        .deployments
        .values()
        .map(|s| &s.object)
        .filter(|o| in_scope(o, ns, query))
        .collect();
    let rv = state.rv.to_string();
    if wants_table(accept) {
        return json_response(StatusCode::OK, &super::discovery::table(&items, &rv));
    }
    // Items of a real list carry no kind/apiVersion of their own.
    let items: Vec<Value> = items
        .into_iter()
        .map(|o| {
            let mut o = o.clone();
            if let Some(map) = o.as_object_mut() {
                map.remove("kind");
                map.remove("apiVersion");
            }
            o
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "kind": "DeploymentList",
            "apiVersion": "apps/v1",
            "metadata": {"resourceVersion": rv},
            "items": items,
        }),
    )
}

/// One watch event line; with `table`, the object is a one-row Table, as the real server sends
/// to `kubectl get --watch`.
fn event_line(kind: &str, object: &Value, table: bool) -> Bytes {
    let object = if table && kind != "BOOKMARK" {
        let rv = object["metadata"]["resourceVersion"].as_str().unwrap_or("");
        super::discovery::table(&[object], rv)
    } else {
        object.clone()
    };
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

/// A watch, following the API's resourceVersion semantics: unset or `"0"` starts with
/// synthetic `ADDED` events for what exists; a version replays the log after it;
/// `sendInitialEvents=true` ends the initial events with the `k8s.io/initial-events-end`
/// bookmark (KEP-3157 watch-list).
fn watch_response(
    shared: &Arc<Shared>,
    ns: Option<&str>,
    query: &HashMap<String, String>,
    table: bool,
) -> Response<Body> {
    let ns = ns.map(str::to_owned);
    let query = query.clone();
    let mut initial = Vec::new();
    let start_rv;
    {
        let state = shared.state();
        let requested = query.get("resourceVersion").map_or("", String::as_str);
        let send_initial = query.get("sendInitialEvents").map(String::as_str) == Some("true");
        if requested.is_empty() || requested == "0" || send_initial {
            for stored in state.deployments.values() {
                if in_scope(&stored.object, ns.as_deref(), &query) {
                    initial.push(event_line("ADDED", &stored.object, table));
                }
            }
            if send_initial {
                initial.push(event_line(
                    "BOOKMARK",
                    &json!({
                        "kind": "Deployment",
                        "apiVersion": "apps/v1",
                        "metadata": {
                            "resourceVersion": state.rv.to_string(),
                            "annotations": {"k8s.io/initial-events-end": "true"},
                        },
                    }),
                    false,
                ));
            }
            start_rv = state.rv;
        } else {
            start_rv = requested.parse().unwrap_or(0);
        }
    }
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let deadline = tokio::time::Instant::now() + timeout;
    let receiver = shared.changed.subscribe();
    let stream_shared = Arc::clone(shared);
    let live = futures::stream::unfold((start_rv, receiver), move |(mut last, mut receiver)| {
        let shared = Arc::clone(&stream_shared);
        let ns = ns.clone();
        let query = query.clone();
        async move {
            loop {
                let pending: Vec<Event> = shared
                    .state()
                    .events
                    .iter()
                    .filter(|e| e.rv > last && in_scope(&e.object, ns.as_deref(), &query))
                    .cloned()
                    .collect();
                if let Some(newest) = pending.last() {
                    last = newest.rv;
                    let chunk: Vec<u8> = pending
                        .iter()
                        .flat_map(|e| event_line(e.kind, &e.object, table).to_vec())
                        .collect();
                    return Some((Bytes::from(chunk), (last, receiver)));
                }
                // Events that do not match still move our position forward.
                last = last.max(*receiver.borrow_and_update());
                match tokio::time::timeout_at(deadline, receiver.changed()).await {
                    Ok(Ok(())) => {}
                    // The server stops, or the watch's timeoutSeconds is over.
                    Ok(Err(_)) | Err(_) => return None,
                }
            }
        }
    });
    let stream = futures::stream::iter(initial)
        .chain(live)
        .map(|b| Ok::<_, Infallible>(Frame::data(b)));
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// The JSON body, or the `400` answer (boxed: a response is large).
fn parse_body(body: &Bytes) -> Result<Value, Box<Response<Body>>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(status_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("the body of the request was in an unknown format: {e}"),
            json!({}),
        ))
    })
}

fn create(shared: &Shared, ns: &str, body: &Bytes) -> Response<Body> {
    let object = match parse_body(body) {
        Ok(v) => v,
        Err(response) => return *response,
    };
    let Some(name) = object["metadata"]["name"].as_str().map(str::to_owned) else {
        return status_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "Deployment.apps is invalid: metadata.name: Required value: name is required",
            json!({}),
        );
    };
    let created = {
        let mut state = shared.state();
        if state
            .deployments
            .contains_key(&(ns.to_owned(), name.clone()))
        {
            return status_error(
                StatusCode::CONFLICT,
                "AlreadyExists",
                &format!("deployments.apps \"{name}\" already exists"),
                json!({"name": name, "group": "apps", "kind": "deployments"}),
            );
        }
        state.create(ns, object, Scenario::Healthy)
    };
    shared.notify();
    json_response(StatusCode::CREATED, &created)
}

fn patch_one(
    shared: &Shared,
    key: &(String, String),
    content_type: &str,
    body: &Bytes,
) -> Response<Body> {
    let Some(kind) = PatchKind::from_content_type(content_type) else {
        return status_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            &format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {content_type:?})"
            ),
            json!({}),
        );
    };
    let patch_body = match parse_body(body) {
        Ok(v) => v,
        Err(response) => return *response,
    };
    let updated = {
        let mut state = shared.state();
        let Some(stored) = state.deployments.get(key) else {
            return not_found(&key.1);
        };
        let mut object = stored.object.clone();
        if let Err(message) = patch::apply(kind, &mut object, &patch_body) {
            return status_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                &message,
                json!({}),
            );
        }
        state.update(key, object)
    };
    shared.notify();
    match updated {
        Some(object) => json_response(StatusCode::OK, &object),
        None => not_found(&key.1),
    }
}

fn put(shared: &Shared, key: &(String, String), body: &Bytes) -> Response<Body> {
    let object = match parse_body(body) {
        Ok(v) => v,
        Err(response) => return *response,
    };
    let updated = {
        let mut state = shared.state();
        let Some(stored) = state.deployments.get(key) else {
            return not_found(&key.1);
        };
        // Optimistic concurrency: a stale resourceVersion in the body is a conflict.
        let sent = object["metadata"]["resourceVersion"].as_str();
        if sent.is_some() && sent != stored.object["metadata"]["resourceVersion"].as_str() {
            return status_error(
                StatusCode::CONFLICT,
                "Conflict",
                &format!(
                    "Operation cannot be fulfilled on deployments.apps \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                    key.1
                ),
                json!({"name": key.1, "group": "apps", "kind": "deployments"}),
            );
        }
        state.update(key, object)
    };
    shared.notify();
    match updated {
        Some(object) => json_response(StatusCode::OK, &object),
        None => not_found(&key.1),
    }
}

fn delete(shared: &Shared, key: &(String, String)) -> Response<Body> {
    let deleted = shared.state().delete(key);
    shared.notify();
    match deleted {
        Some(object) => json_response(StatusCode::OK, &object),
        None => not_found(&key.1),
    }
}
