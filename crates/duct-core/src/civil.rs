//! Calendar dates in UTC, without a time-zone library: what certificate
//! expiry, log timestamps and dated index names need.
//!
//! The day arithmetic is Howard Hinnant's `days_from_civil` and
//! `civil_from_days` (proleptic Gregorian calendar).

use std::fmt::Write as _;

/// A UTC date and time of day, to the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    /// 1 to 12.
    pub month: i64,
    /// 1 to 31.
    pub day: i64,
    pub hour: i64,
    pub minute: i64,
    pub second: i64,
    /// 1 to 366.
    pub day_of_year: i64,
}

/// Days since 1970-01-01 of a date.
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Seconds since the epoch of a UTC date and time, or `None` when a field
/// is out of range (a leap second, 60, is accepted).
pub fn seconds_from_civil(year: i64, month: i64, day: i64, hour: i64, minute: i64, second: i64) -> Option<i64> {
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || !(0..=23).contains(&hour)
        || !(0..=59).contains(&minute)
        || !(0..=60).contains(&second)
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// The UTC date and time of `seconds` since the epoch.
pub fn civil_from_seconds(seconds: i64) -> Civil {
    let days = seconds.div_euclid(86_400);
    let rem = seconds.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    Civil {
        year,
        month,
        day,
        hour: rem / 3600,
        minute: rem % 3600 / 60,
        second: rem % 60,
        day_of_year: days - days_from_civil(year, 1, 1) + 1,
    }
}

/// Seconds since the epoch as ISO 8601 in UTC (`2026-12-03T06:20:02Z`, with
/// milliseconds when the time has them).
pub fn iso8601_utc(t: f64) -> String {
    let (second, ms) = split_millis(t);
    let mut out = String::with_capacity(24);
    write_second(&mut out, second);
    write_millis(&mut out, ms);
    out
}

/// [`iso8601_utc`] for many times in a row that mostly share their second,
/// as a batch's events do: the date and time of day are formatted once per
/// second, the milliseconds each time.
#[derive(Debug, Default)]
pub struct Iso8601Utc {
    /// The second `text` starts with, and the length of that start.
    second: Option<(i64, usize)>,
    text: String,
}

impl Iso8601Utc {
    /// `t` as [`iso8601_utc`] writes it.
    pub fn format(&mut self, t: f64) -> &str {
        let (second, ms) = split_millis(t);
        match self.second {
            Some((s, len)) if s == second => self.text.truncate(len),
            _ => {
                self.text.clear();
                write_second(&mut self.text, second);
                self.second = Some((second, self.text.len()));
            }
        }
        write_millis(&mut self.text, ms);
        &self.text
    }
}

/// `t` rounded to the millisecond: whole seconds, and milliseconds.
fn split_millis(t: f64) -> (i64, i64) {
    let millis = (t * 1000.0).round() as i64;
    (millis.div_euclid(1000), millis.rem_euclid(1000))
}

fn write_second(out: &mut String, second: i64) {
    let c = civil_from_seconds(second);
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    );
}

/// `.mmm` (when there are milliseconds) and the `Z`.
fn write_millis(out: &mut String, ms: i64) {
    if ms != 0 {
        let digit = |d: i64| char::from(b'0' + d as u8);
        out.push('.');
        out.push(digit(ms / 100));
        out.push(digit(ms / 10 % 10));
        out.push(digit(ms % 10));
    }
    out.push('Z');
}

/// A `strftime` pattern of the fields a dated name uses: `%Y %y %m %d %H
/// %M %S %j %%`, checked once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatePattern(String);

impl DatePattern {
    pub fn parse(pattern: &str) -> Result<DatePattern, String> {
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            if c == '%' {
                match chars.next() {
                    Some('Y' | 'y' | 'm' | 'd' | 'H' | 'M' | 'S' | 'j' | '%') => {}
                    Some(other) => {
                        return Err(format!(
                            "`%{other}` is not supported (use %Y %y %m %d %H %M %S %j or %%)"
                        ))
                    }
                    None => return Err("ends with a lone `%`".into()),
                }
            }
        }
        Ok(DatePattern(pattern.to_string()))
    }

    /// The pattern for the UTC time `t` (seconds since the epoch).
    pub fn format(&self, t: f64) -> String {
        let c = civil_from_seconds(t.floor() as i64);
        let mut out = String::with_capacity(self.0.len() + 8);
        let mut chars = self.0.chars();
        while let Some(ch) = chars.next() {
            if ch != '%' {
                out.push(ch);
                continue;
            }
            let _ = match chars.next() {
                Some('Y') => write!(out, "{:04}", c.year),
                Some('y') => write!(out, "{:02}", c.year.rem_euclid(100)),
                Some('m') => write!(out, "{:02}", c.month),
                Some('d') => write!(out, "{:02}", c.day),
                Some('H') => write!(out, "{:02}", c.hour),
                Some('M') => write!(out, "{:02}", c.minute),
                Some('S') => write!(out, "{:02}", c.second),
                Some('j') => write!(out, "{:03}", c.day_of_year),
                _ => write!(out, "%"),
            };
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_across_eras_and_leap_days() {
        for (y, m, d) in [
            (1970, 1, 1),
            (2000, 2, 29),
            (2024, 12, 31),
            (1969, 12, 31),
            (2400, 3, 1),
        ] {
            let s = seconds_from_civil(y, m, d, 13, 5, 9).unwrap();
            let c = civil_from_seconds(s);
            assert_eq!(
                (c.year, c.month, c.day, c.hour, c.minute, c.second),
                (y, m, d, 13, 5, 9)
            );
        }
        assert_eq!(seconds_from_civil(1970, 1, 1, 0, 0, 0), Some(0));
        assert_eq!(seconds_from_civil(2026, 13, 1, 0, 0, 0), None);
        assert_eq!(
            civil_from_seconds(seconds_from_civil(2024, 12, 31, 0, 0, 0).unwrap()).day_of_year,
            366
        );
    }

    #[test]
    fn iso8601_has_milliseconds_only_when_there_are_some() {
        assert_eq!(iso8601_utc(1_796_278_802.0), "2026-12-03T06:20:02Z");
        assert_eq!(iso8601_utc(1_796_278_802.25), "2026-12-03T06:20:02.250Z");
        assert_eq!(iso8601_utc(1_796_278_802.007), "2026-12-03T06:20:02.007Z");
        assert_eq!(iso8601_utc(-0.5), "1969-12-31T23:59:59.500Z");
    }

    #[test]
    fn the_cached_form_writes_what_iso8601_utc_writes() {
        let mut stamps = Iso8601Utc::default();
        let times = [
            1_796_278_802.0,
            1_796_278_802.25,
            1_796_278_802.999_6, // rounds into the next second
            1_796_278_803.5,
            1_796_278_802.001,
            -0.5,
            0.0,
            f64::NAN,
            1e300,
        ];
        for t in times {
            assert_eq!(stamps.format(t), iso8601_utc(t), "{t}");
        }
    }

    #[test]
    fn date_patterns_format_ducts_index_names() {
        let p = DatePattern::parse("duct-%Y.%m.%d").unwrap();
        assert_eq!(p.format(1_796_278_802.9), "duct-2026.12.03");
        let p = DatePattern::parse("x-%y%j-%H%M%S-100%%").unwrap();
        assert_eq!(p.format(1_796_278_802.0), "x-26337-062002-100%");
        assert!(DatePattern::parse("duct-%B").unwrap_err().contains("%B"));
        assert!(DatePattern::parse("duct-%").is_err());
    }
}
