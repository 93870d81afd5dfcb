//! Cancelling a build: a token checked between steps and handed to the executor of a running
//! step, which stops the step's processes when it fires.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

type Hook = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Inner {
    cancelled: AtomicBool,
    /// Called once when the token fires; registered by running steps.
    hooks: Mutex<Vec<(u64, Hook)>>,
    next_id: std::sync::atomic::AtomicU64,
}

/// Stops a build: [`Builder::build`](crate::Builder::build) cancels its token when its future is
/// dropped; [`BuildOptions::cancel_token`](crate::BuildOptions::cancel_token) lets a caller
/// cancel it from elsewhere. Cheap to clone; every clone cancels the same build.
///
/// A cancelled build stops between steps, or in the middle of a RUN step by killing the step's
/// processes; it returns [`Error::Cancelled`](crate::Error::Cancelled) and leaves nothing
/// half-written in the store (steps that completed stay cached).
///
/// ```
/// let token = rbuild::CancelToken::new();
/// let other = token.clone();
/// assert!(!token.is_cancelled());
/// other.cancel();
/// assert!(token.is_cancelled());
/// ```
#[derive(Clone, Default)]
pub struct CancelToken {
    inner: Arc<Inner>,
}

impl fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelToken")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

impl CancelToken {
    /// A token that has not fired.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fires the token: the build stops as soon as it can. Idempotent.
    pub fn cancel(&self) {
        if self.inner.cancelled.swap(true, Ordering::SeqCst) {
            return;
        }
        let hooks = match self.inner.hooks.lock() {
            Ok(mut h) => std::mem::take(&mut *h),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        };
        for (_, hook) in hooks {
            hook();
        }
    }

    /// Whether the token has fired.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// Calls `hook` when the token fires (at once if it already has) — how an executor stops a
    /// running step. The hook is dropped without being called when the returned guard is.
    pub fn on_cancel(&self, hook: impl FnOnce() + Send + 'static) -> OnCancel<'_> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut hooks) = self.inner.hooks.lock() {
            hooks.push((id, Box::new(hook)));
        }
        // Registered after a concurrent cancel() emptied the list: run it now.
        if self.is_cancelled() {
            let mine = self.inner.hooks.lock().ok().and_then(|mut h| {
                let pos = h.iter().position(|(i, _)| *i == id)?;
                Some(h.remove(pos).1)
            });
            if let Some(hook) = mine {
                hook();
            }
        }
        OnCancel { token: self, id }
    }
}

/// Keeps a hook of [`CancelToken::on_cancel`] registered; dropping it unregisters the hook.
#[must_use = "the hook is unregistered when this guard is dropped"]
pub struct OnCancel<'a> {
    token: &'a CancelToken,
    id: u64,
}

impl fmt::Debug for OnCancel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnCancel").field("id", &self.id).finish()
    }
}

impl Drop for OnCancel<'_> {
    fn drop(&mut self) {
        if let Ok(mut hooks) = self.token.inner.hooks.lock() {
            hooks.retain(|(i, _)| *i != self.id);
        }
    }
}

/// Cancels a token when dropped, unless disarmed: what makes dropping a build's future stop it.
pub(crate) struct CancelOnDrop(pub Option<CancelToken>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            t.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn hooks_run_once_and_only_while_registered() {
        let t = CancelToken::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let dropped = t.on_cancel(move || {
            c.fetch_add(100, Ordering::SeqCst);
        });
        drop(dropped);
        let c = calls.clone();
        let _kept = t.on_cancel(move || {
            c.fetch_add(1, Ordering::SeqCst);
        });
        t.cancel();
        t.cancel();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Registered after firing: runs at once.
        let c = calls.clone();
        let _late = t.on_cancel(move || {
            c.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn dropping_the_guard_cancels_unless_disarmed() {
        let t = CancelToken::new();
        drop(CancelOnDrop(Some(t.clone())));
        assert!(t.is_cancelled());
        let t = CancelToken::new();
        let mut g = CancelOnDrop(Some(t.clone()));
        g.0 = None;
        drop(g);
        assert!(!t.is_cancelled());
    }
}
