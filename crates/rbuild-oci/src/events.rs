//! Where progress events go: an owned, cheaply cloned callback — the one shape every rbuild
//! crate reports progress through (build steps, push and pull, pipeline jobs).
//!
//! The sink is owned (an `Arc`, not a borrowed `&dyn Fn`) so that futures holding it (a
//! registry push or pull) borrow nothing from their caller: they are `Send + 'static` and can
//! be handed to `tokio::spawn` as they are.

use std::fmt;
use std::sync::Arc;

/// A receiver of progress events (`BuildEvent`, `PushEvent`, `PullEvent`, pipeline events).
/// Called from the working thread or task — for a push, several blobs interleaved — so the
/// callback must be quick and thread-safe.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use rbuild_oci::Events;
///
/// let lines = Arc::new(Mutex::new(Vec::new()));
/// let seen = Arc::clone(&lines);
/// let events = Events::new(move |e: String| seen.lock().unwrap().push(e));
/// events.clone().emit("pulled".to_owned());
/// assert_eq!(lines.lock().unwrap().len(), 1);
/// ```
pub struct Events<E>(Arc<dyn Fn(E) + Send + Sync>);

impl<E> Events<E> {
    /// Sends every event to `f`.
    pub fn new(f: impl Fn(E) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// Drops every event.
    pub fn none() -> Self {
        Self(Arc::new(|_| {}))
    }

    /// Delivers one event.
    pub fn emit(&self, event: E) {
        (self.0)(event);
    }
}

impl<E> Clone for Events<E> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<E> Default for Events<E> {
    fn default() -> Self {
        Self::none()
    }
}

impl<E> fmt::Debug for Events<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

impl<E> From<Arc<dyn Fn(E) + Send + Sync>> for Events<E> {
    fn from(f: Arc<dyn Fn(E) + Send + Sync>) -> Self {
        Self(f)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn clones_share_one_callback() {
        let count = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&count);
        let events = Events::new(move |n: usize| {
            c.fetch_add(n, Ordering::Relaxed);
        });
        let other = events.clone();
        events.emit(2);
        other.emit(3);
        assert_eq!(count.load(Ordering::Relaxed), 5);
        Events::<usize>::none().emit(7);
        Events::<usize>::default().emit(7);
        assert_eq!(count.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn sinks_are_send_sync_and_static() {
        fn owned<T: Send + Sync + 'static>(_: &T) {}
        owned(&Events::<String>::none());
    }
}
