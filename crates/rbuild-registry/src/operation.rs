//! What a request is for: the operation and target that every error names.

use http::StatusCode;
use rbuild_oci::Reference;

use crate::body::read_limited;
use crate::error::Error;
use crate::response;

/// What a request is for: names the operation and target in errors, and the token scope.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub operation: &'static str,
    pub registry: String,
    pub repository: String,
}

impl Ctx {
    pub(crate) fn new(operation: &'static str, reference: &Reference) -> Self {
        Self {
            operation,
            registry: reference.registry().to_owned(),
            repository: reference.repository().to_owned(),
        }
    }

    pub(crate) fn target(&self) -> String {
        if self.repository.is_empty() {
            self.registry.clone()
        } else {
            format!("{}/{}", self.registry, self.repository)
        }
    }

    pub(crate) fn protocol(&self, reason: impl Into<String>) -> Error {
        Error::Protocol {
            operation: self.operation,
            target: self.target(),
            reason: reason.into(),
        }
    }

    pub(crate) fn http(&self, source: reqwest::Error) -> Error {
        Error::Http {
            operation: self.operation,
            target: self.target(),
            source,
        }
    }

    /// Maps a non-success response to an error, reading (a bounded part of) its body.
    pub(crate) async fn status_error(&self, resp: reqwest::Response, what: &str) -> Error {
        let status = resp.status();
        // Only the start of an error body is shown; never buffer an unbounded one.
        let body = read_limited(resp, 64 * 1024)
            .await
            .map(|(b, _)| b)
            .unwrap_or_default();
        self.status_error_with(status, &body, what)
    }

    pub(crate) fn status_error_with(&self, status: StatusCode, body: &[u8], what: &str) -> Error {
        let target = self.target();
        match status {
            StatusCode::UNAUTHORIZED => Error::Unauthorized {
                operation: self.operation,
                target,
                registry: self.registry.clone(),
            },
            StatusCode::FORBIDDEN => Error::Denied {
                operation: self.operation,
                target,
            },
            StatusCode::NOT_FOUND => Error::NotFound {
                operation: self.operation,
                target,
                what: what.to_owned(),
            },
            _ => Error::Status {
                operation: self.operation,
                target,
                status,
                body: response::error_summary(body),
            },
        }
    }
}
