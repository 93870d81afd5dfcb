//! The deploy history, kept in an annotation on the Deployment itself.
//!
//! Rolling back then needs neither ReplicaSet history (which `revisionHistoryLimit` may have
//! pruned) nor any state outside the cluster: whoever can read the Deployment can roll it back.

use serde::{Deserialize, Serialize};

/// The annotation holding the history: a JSON array of [`HistoryEntry`], oldest first.
pub const HISTORY_ANNOTATION: &str = "rbuild.dev/deploy-history";

/// How many entries the annotation keeps (annotations are limited to 256 KiB in total).
pub const HISTORY_LIMIT: usize = 20;

/// What produced a history entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// `rbuild deploy`.
    Deploy,
    /// `rbuild rollback`, or a deploy rolled back after a failed rollout.
    Rollback,
}

/// One image change of one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The container whose image changed.
    pub container: String,
    /// The image set (`repo:tag@sha256:…` for deploys).
    pub image: String,
    /// The image it replaced.
    pub previous: String,
    /// Deploy or rollback.
    pub action: Action,
    /// When, RFC 3339 UTC.
    pub at: String,
}

/// Parses the annotation value; an absent annotation is an empty history.
///
/// # Errors
///
/// When the annotation is not a JSON array of entries.
pub fn parse(annotation: Option<&str>) -> serde_json::Result<Vec<HistoryEntry>> {
    match annotation {
        None => Ok(Vec::new()),
        Some(text) => serde_json::from_str(text),
    }
}

/// Appends `entry` and serialises the history, dropping the oldest entries past
/// [`HISTORY_LIMIT`].
pub fn append(mut history: Vec<HistoryEntry>, entry: HistoryEntry) -> String {
    history.push(entry);
    let excess = history.len().saturating_sub(HISTORY_LIMIT);
    history.drain(..excess);
    // Serialising plain strings and enums cannot fail.
    serde_json::to_string(&history).unwrap_or_else(|_| "[]".to_owned())
}

/// The image a rollback of `container` goes to.
///
/// Without `to`: the image the newest entry of that container replaced, so two rollbacks in a
/// row toggle between the last two images, like `kubectl rollout undo`. With `to`: the newest
/// image in the history (set or replaced) whose tag is `to`, whose digest is `to` (`sha256:…`),
/// or which is `to` verbatim.
pub fn rollback_target(
    history: &[HistoryEntry],
    container: &str,
    to: Option<&str>,
) -> Option<String> {
    let entries = history.iter().rev().filter(|e| e.container == container);
    match to {
        None => entries.map(|e| e.previous.clone()).next(),
        Some(wanted) => entries
            .flat_map(|e| [&e.image, &e.previous])
            .find(|image| image_matches(image, wanted))
            .cloned(),
    }
}

fn image_matches(image: &str, wanted: &str) -> bool {
    if image == wanted {
        return true;
    }
    let (name_and_tag, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    if digest == Some(wanted) {
        return true;
    }
    // The tag is after the last ':' that follows the last '/' (a registry port is not a tag).
    let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
    name_and_tag[last_slash..]
        .rsplit_once(':')
        .is_some_and(|(_, tag)| tag == wanted)
}

/// The current time as RFC 3339 UTC.
pub(crate) fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn entry(image: &str, previous: &str, action: Action) -> HistoryEntry {
        HistoryEntry {
            container: "app".to_owned(),
            image: image.to_owned(),
            previous: previous.to_owned(),
            action,
            at: "2026-01-01T00:00:00Z".to_owned(),
        }
    }

    #[test]
    fn rollback_goes_to_the_replaced_image_and_toggles() {
        let one = format!("localhost:5000/web:1@{D1}");
        let two = format!("localhost:5000/web:2@{D2}");
        let mut history = vec![entry(&one, "web:0", Action::Deploy)];
        history.push(entry(&two, &one, Action::Deploy));
        assert_eq!(rollback_target(&history, "app", None), Some(one.clone()));
        history.push(entry(&one, &two, Action::Rollback));
        assert_eq!(rollback_target(&history, "app", None), Some(two.clone()));
        assert_eq!(rollback_target(&history, "other", None), None);
    }

    #[test]
    fn rollback_to_tag_or_digest() {
        let one = format!("localhost:5000/web:1@{D1}");
        let two = format!("localhost:5000/web:2@{D2}");
        let history = vec![
            entry(&one, "web:0", Action::Deploy),
            entry(&two, &one, Action::Deploy),
        ];
        assert_eq!(
            rollback_target(&history, "app", Some("1")),
            Some(one.clone())
        );
        assert_eq!(rollback_target(&history, "app", Some(D2)), Some(two));
        assert_eq!(
            rollback_target(&history, "app", Some("0")),
            Some("web:0".to_owned())
        );
        // `5000` is the registry port, not a tag.
        assert_eq!(rollback_target(&history, "app", Some("5000")), None);
    }

    #[test]
    fn append_caps_and_round_trips() {
        let mut history = Vec::new();
        for i in 0..HISTORY_LIMIT + 5 {
            let text = append(history, entry(&format!("web:{i}"), "x", Action::Deploy));
            history = parse(Some(&text)).unwrap();
        }
        assert_eq!(history.len(), HISTORY_LIMIT);
        assert_eq!(history[0].image, "web:5");
        assert!(parse(None).unwrap().is_empty());
        assert!(parse(Some("{")).is_err());
    }
}
