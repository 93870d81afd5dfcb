//! Stopping a run from another thread: [`CancelHandle`].

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rustix::event::{EventfdFlags, eventfd};

/// Cancels a [`run`](crate::run_cancellable) in progress, from any thread or task.
///
/// Cheap to clone (one reference count) and `Send + Sync`: hand a clone to the thread that
/// calls [`run_cancellable`](crate::run_cancellable) and keep one where cancellation is
/// decided (a Ctrl-C handler's task, a build that failed elsewhere, a tokio
/// `CancellationToken`'s callback). [`cancel`](Self::cancel) is final: once cancelled, every
/// run given this handle, in progress or started later, ends with
/// [`Error::Cancelled`](crate::Error::Cancelled).
///
/// A run in progress is woken through an eventfd in its poll set, so cancellation takes
/// effect at once, sends no signal to this process and needs no signal handler. The run then
/// kills the step's whole process tree (SIGKILL to pid 1 of its pid namespace, after which the
/// kernel kills every other process in it; the run's cgroup too, where the kernel has
/// `cgroup.kill`), waits for it, and cleans up as after a normal exit: the mounts vanish with
/// the mount namespace, the cgroup directories and the scratch directory are removed. The
/// overlay's upper directory keeps what the command wrote until then; it is the caller's.
///
/// ```no_run
/// use rbuild_sandbox::{CancelHandle, RunSpec};
///
/// let cancel = CancelHandle::new();
/// let spec = RunSpec::default().args(["sleep", "1000"]);
/// let runner = {
///     let cancel = cancel.clone();
///     std::thread::spawn(move || rbuild_sandbox::run_cancellable(&spec, &cancel, &mut |_| {}))
/// };
/// std::thread::sleep(std::time::Duration::from_secs(1));
/// cancel.cancel();
/// assert!(matches!(runner.join().unwrap(), Err(rbuild_sandbox::Error::Cancelled)));
/// ```
#[derive(Clone, Default)]
pub struct CancelHandle {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    cancelled: AtomicBool,
    /// Created by the first run that waits on this handle; once cancelled, its counter stays
    /// non-zero (nobody reads it), so it is readable for every run that polls it.
    waker: Mutex<Option<Arc<OwnedFd>>>,
}

impl CancelHandle {
    /// A handle that has not been cancelled.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels every run given this handle, now and later. Returns at once: it does not wait
    /// for the runs to end (they return [`Error::Cancelled`](crate::Error::Cancelled) when
    /// their process tree is gone). Calling it again does nothing more.
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::SeqCst);
        let waker = self
            .inner
            .waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(fd) = waker.as_ref() {
            // An eventfd write only fails when the counter would overflow, i.e. it is already
            // non-zero and so already wakes the runs.
            let _ = rustix::io::write(fd.as_fd(), &1u64.to_ne_bytes());
        }
    }

    /// Whether [`cancel`](Self::cancel) was called.
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// The descriptor a run polls; readable once cancelled.
    ///
    /// The order matters: `cancel` sets the flag before it takes the lock, and this checks
    /// the flag after it has put the eventfd in place, so a cancel that races with a run's
    /// start is seen through the flag or through the eventfd, never missed.
    pub(crate) fn waker(&self) -> std::io::Result<Waker> {
        let fd = {
            let mut waker = self
                .inner
                .waker
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match waker.as_ref() {
                Some(fd) => Arc::clone(fd),
                None => {
                    let fd = Arc::new(eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?);
                    *waker = Some(Arc::clone(&fd));
                    fd
                }
            }
        };
        Ok(Waker {
            fd,
            cancelled: self.is_cancelled(),
        })
    }
}

impl std::fmt::Debug for CancelHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelHandle")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

/// A run's view of its handle: the eventfd to poll, and whether it was already cancelled.
pub(crate) struct Waker {
    fd: Arc<OwnedFd>,
    pub cancelled: bool,
}

impl Waker {
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_is_seen_by_clones_and_wakes_a_registered_run() {
        let handle = CancelHandle::new();
        let clone = handle.clone();
        let waker = handle.waker().unwrap();
        assert!(!waker.cancelled);
        let mut fds = [rustix::event::PollFd::from_borrowed_fd(
            waker.fd(),
            rustix::event::PollFlags::IN,
        )];
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        assert_eq!(rustix::event::poll(&mut fds, Some(&zero)).unwrap(), 0);
        clone.cancel();
        assert!(handle.is_cancelled());
        assert_eq!(rustix::event::poll(&mut fds, Some(&zero)).unwrap(), 1);
        // A run that starts after the cancel sees it without polling.
        assert!(handle.waker().unwrap().cancelled);
        assert!(format!("{handle:?}").contains("cancelled: true"));
    }

    #[test]
    fn handles_cross_threads() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<CancelHandle>();
        let handle = CancelHandle::new();
        let clone = handle.clone();
        std::thread::spawn(move || clone.cancel()).join().unwrap();
        assert!(handle.is_cancelled());
    }
}
