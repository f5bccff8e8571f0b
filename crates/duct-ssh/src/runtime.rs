//! The thread every SSH session runs on.
//!
//! A session is shared by sources on different actor threads, and those
//! threads' runtimes come and go with reloads; so sessions live on one
//! runtime of their own, started on first use. Callers hand it work with
//! [`spawn`] and await the result from whatever runtime they are on.

use std::future::Future;
use std::sync::OnceLock;

/// The SSH runtime, started on first use.
fn handle() -> &'static tokio::runtime::Handle {
    static HANDLE: OnceLock<tokio::runtime::Handle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        // Failing to create a runtime or a thread means the process is out
        // of file descriptors or threads at start-up: nothing to carry on with.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("the SSH runtime starts");
        let handle = rt.handle().clone();
        std::thread::Builder::new()
            .name("duct-ssh".into())
            .spawn(move || rt.block_on(std::future::pending::<()>()))
            .expect("the SSH thread starts");
        handle
    })
}

/// Runs `work` on the SSH runtime; the result can be awaited anywhere.
/// Dropping the handle does not stop the work, which is bounded by its
/// own timeouts.
pub(crate) fn spawn<F>(work: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    handle().spawn(work)
}

/// Runs blocking `work` (key derivation) off the SSH thread.
pub(crate) fn spawn_blocking<F, T>(work: F) -> tokio::task::JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    handle().spawn_blocking(work)
}
