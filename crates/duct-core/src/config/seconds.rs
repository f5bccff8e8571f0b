//! Durations in configuration: every option written in seconds (`interval`,
//! `timeout`, `ttl`, a kind's own `idle_timeout` …) is checked here, once,
//! so that a value that passes `ductd check` can always become a
//! [`Duration`] and be added to a clock reading without overflow.

use std::time::Duration;

/// The longest duration any option may have: 365 days. Longer is a typo
/// (`interval: 1e20` once passed `check` and then panicked at start), and a
/// value that fits keeps `Instant + Duration` far from overflowing.
pub const MAX_SECONDS: f64 = 365.0 * 86_400.0;

/// The shortest `interval` a source or output runs at: 1 ms. A shorter one
/// is raised to it with a warning (`interval: 1e-9` asks for a billion ticks
/// a second, which no source can deliver); load generators at 1 ms still run.
pub const MIN_INTERVAL: f64 = 0.001;

/// What zero means for an option, which decides whether it is allowed and
/// how the message reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zero {
    /// Zero is refused: the option must be positive.
    Refused,
    /// Zero is an ordinary value (`ttl: 0`, `start_delay: 0`).
    Allowed,
    /// Zero switches something off; the text says what (`"never"`).
    Means(&'static str),
}

/// A number of seconds checked against [`Zero`] and [`MAX_SECONDS`]; `Err`
/// is the message to show after the option's name.
pub fn check_seconds(value: f64, zero: Zero) -> Result<f64, String> {
    let sign_ok = match zero {
        Zero::Refused => value > 0.0,
        Zero::Allowed | Zero::Means(_) => value >= 0.0,
    };
    if !(sign_ok && value.is_finite()) {
        return Err(match zero {
            Zero::Refused => "must be a positive number of seconds".to_string(),
            Zero::Allowed => "must be zero or a positive number of seconds".to_string(),
            Zero::Means(what) => format!("must be zero ({what}) or a positive number of seconds"),
        });
    }
    if value > MAX_SECONDS {
        return Err(format!(
            "{} seconds is too long: at most {MAX_SECONDS} (365 days)",
            readable(value)
        ));
    }
    Ok(value)
}

/// [`check_seconds`] as a [`Duration`], which cannot fail once checked.
pub fn check_duration(value: f64, zero: Zero) -> Result<Duration, String> {
    check_seconds(value, zero).map(Duration::from_secs_f64)
}

/// An interval: positive, at most [`MAX_SECONDS`], and raised to
/// [`MIN_INTERVAL`] if shorter. `Ok` holds the interval to use and, if it
/// was raised, the warning to show.
pub fn check_interval(value: f64) -> Result<(f64, Option<String>), String> {
    let value = check_seconds(value, Zero::Refused)?;
    if value < MIN_INTERVAL {
        return Ok((
            MIN_INTERVAL,
            Some(format!(
                "{} seconds is shorter than the shortest interval, {MIN_INTERVAL} s; using {MIN_INTERVAL} s",
                readable(value)
            )),
        ));
    }
    Ok((value, None))
}

/// `1e20` rather than twenty-one digits.
fn readable(value: f64) -> String {
    if value != 0.0 && !(1e-3..1e9).contains(&value.abs()) {
        format!("{value:e}")
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_finite_signed_as_asked_and_bounded() {
        assert_eq!(check_seconds(5.0, Zero::Refused), Ok(5.0));
        assert!(check_seconds(0.0, Zero::Refused).unwrap_err().contains("positive"));
        assert_eq!(check_seconds(0.0, Zero::Allowed), Ok(0.0));
        assert_eq!(
            check_seconds(-1.0, Zero::Means("never")).unwrap_err(),
            "must be zero (never) or a positive number of seconds"
        );
        assert!(check_seconds(f64::NAN, Zero::Allowed).is_err());
        assert!(check_seconds(f64::INFINITY, Zero::Allowed).is_err());
        assert_eq!(check_seconds(MAX_SECONDS, Zero::Refused), Ok(MAX_SECONDS));
        let e = check_seconds(1e20, Zero::Refused).unwrap_err();
        assert!(e.contains("too long") && e.contains("365 days"), "{e}");
        // Past u64::MAX seconds, which Duration::from_secs_f64 panics on.
        assert!(check_duration(1e20, Zero::Refused).is_err());
        assert_eq!(check_duration(1.5, Zero::Refused), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn intervals_below_the_floor_are_raised_with_a_warning() {
        assert_eq!(check_interval(0.5), Ok((0.5, None)));
        assert_eq!(check_interval(MIN_INTERVAL), Ok((MIN_INTERVAL, None)));
        let (used, warning) = check_interval(1e-9).unwrap();
        assert_eq!(used, MIN_INTERVAL);
        assert!(warning.unwrap().contains("shorter than the shortest interval"));
        assert!(check_interval(0.0).is_err());
        assert!(check_interval(1e20).is_err());
    }
}
