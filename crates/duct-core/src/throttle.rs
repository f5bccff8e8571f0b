//! Thinning of log lines for faults that repeat every tick or every line:
//! the first report goes out, the next ones are counted until a period has
//! passed.

use std::time::{Duration, Instant};

/// Lets a repeating log line through at most once per period, counting
/// what it held back.
#[derive(Debug, Default)]
pub struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// `Some(n)` when the line may be logged now (`n` lines were held back
    /// since the last one), `None` to stay quiet.
    pub fn allow(&mut self, period: Duration) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(t) if now.duration_since(t) < period => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// Forgets the history (the fault went away).
    pub fn reset(&mut self) {
        *self = Throttle::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_counts_what_it_holds_back() {
        let mut t = Throttle::default();
        assert_eq!(t.allow(Duration::from_secs(60)), Some(0));
        assert_eq!(t.allow(Duration::from_secs(60)), None);
        assert_eq!(t.allow(Duration::from_secs(60)), None);
        assert_eq!(t.allow(Duration::ZERO), Some(2));
    }
}
