//! Small helpers that keep one fault from becoming many: panics caught at
//! the edge of a tick or a handler, and backoff delays for restarts and
//! retries (log lines are thinned with [`Throttle`]).

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

pub use duct_core::source::panic_message;
pub use duct_core::throttle::Throttle;

/// A future that turns a panic while polling into an `Err` with the panic
/// message, so a faulty source cannot take its thread down.
pub struct CatchUnwind<F>(pub F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(payload) => Poll::Ready(Err(panic_message(payload.as_ref()))),
        }
    }
}

/// Runs `f`; the panic message if it panicked. Supervised actors run their
/// handlers through this and stop on a panic, so that their supervisor
/// restarts them from a known state with their mailbox intact.
pub fn contain<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| panic_message(payload.as_ref()))
}

/// Makes the actor that handles it (a router shard, an output, a source)
/// panic in a handler, as a bug would: the supervision tests (and fault
/// drills) send it to see the actor come back with its mailbox still
/// flowing.
pub struct InjectPanic;

impl actix::Message for InjectPanic {
    type Result = ();
}

/// Exponential backoff: `base × 2^(failures-1)`, capped, with ±20 % jitter so
/// that many clients of one destination do not retry in step.
pub fn backoff(failures: u32, base: Duration, cap: Duration) -> Duration {
    let exp = base.as_secs_f64() * 2f64.powi(failures.saturating_sub(1).min(30) as i32);
    let capped = exp.min(cap.as_secs_f64());
    Duration::from_secs_f64((capped * (0.8 + 0.4 * jitter())).min(cap.as_secs_f64()))
}

/// A number in [0, 1) that differs from call to call; good enough to spread
/// retries, not for anything else.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.write_u128(nanos);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_errors() {
        let fut = CatchUnwind(Box::pin(async {
            panic!("boom");
        }));
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let got: Result<(), String> = rt.block_on(fut);
        assert_eq!(got.unwrap_err(), "boom");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(500);
        let cap = Duration::from_secs(30);
        let first = backoff(1, base, cap);
        assert!(
            first >= Duration::from_millis(400) && first <= Duration::from_millis(600),
            "{first:?}"
        );
        let fourth = backoff(4, base, cap);
        assert!(
            fourth >= Duration::from_millis(3200) && fourth <= Duration::from_millis(4800),
            "{fourth:?}"
        );
        assert!(backoff(40, base, cap) <= cap);
    }
}
