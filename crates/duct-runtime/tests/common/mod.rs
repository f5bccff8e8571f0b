//! What the runtime's actor tests share.

use std::time::{Duration, Instant};

/// Polls `cond` until it holds or `timeout` passes; its last answer.
pub async fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}
