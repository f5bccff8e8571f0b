//! Access-log formats: nginx's `log_format` strings compiled once into a
//! matcher, and the lines they describe split into fields.
//!
//! A format is text with `$variable` (or `${variable}`) where nginx writes
//! a value, as in `nginx.conf`. Named formats: `combined` (nginx's
//! built-in), `main` (the one in Debian's and nginx's sample config, which
//! adds `$http_x_forwarded_for`), and Duct's `common` and `vhcommon`. Duct
//! itself took Apache's `%h %l %u %t "%r" %>s %b` syntax (its parser came
//! from Apache's); such strings are translated, so a Duct configuration
//! keeps working.
//!
//! Matching, per line, with no regular expression: the format becomes a
//! sequence of literal text and fields; a field runs up to the next
//! occurrence of the literal after it (found with a precompiled `memmem`
//! searcher), and the whole line must be used up. If the first split does
//! not fit, later occurrences are tried (bounded), so a field that happens
//! to contain the text after it — a user name with a space before `[` —
//! still parses. A value never holds a bare `"` (nginx escapes it as
//! `\x22`, or `\"` with `escape=json`), which keeps `combined` from
//! swallowing a longer format's extra fields. `$time_local` and `$time_iso8601` have fixed widths. A
//! field written as `-` is absent, as nginx means it.

use duct_core::civil::seconds_from_civil;
use memchr::memmem::Finder;

/// Most split attempts per line before giving up on it: matching stays
/// linear-ish even for hostile lines.
const MAX_ATTEMPTS: usize = 256;

/// nginx's `combined`.
pub const COMBINED: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent""#;

/// `main` from nginx's sample configuration.
pub const MAIN: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" "$http_x_forwarded_for""#;

/// Duct's `common` (Apache's Common Log Format).
pub const COMMON: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent"#;

/// Duct's `vhcommon`: Common Log Format after the virtual host.
pub const VHCOMMON: &str =
    r#"$server_name $remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent"#;

/// A compiled format.
#[derive(Debug)]
pub struct LogFormat {
    /// As configured (a name or the string).
    source: String,
    /// Literal text before the first field.
    head: Vec<u8>,
    steps: Vec<Step>,
    /// Variable names, by field index.
    names: Vec<String>,
    /// Indexes of the fields the sources give meaning to.
    pub roles: Roles,
}

#[derive(Debug)]
struct Step {
    field: usize,
    width: Option<usize>,
    /// The literal after the field; `None` when the field ends the line.
    then: Option<Finder<'static>>,
    /// The literal starts with `"`, which nginx never writes inside a value
    /// (it escapes it as `\x22`): only its first occurrence can end the
    /// field.
    quoted: bool,
}

/// Where the fields with a meaning are, if the format has them.
#[derive(Debug, Default, Clone, Copy)]
pub struct Roles {
    pub client: Option<usize>,
    pub status: Option<usize>,
    /// `$body_bytes_sent`, else `$bytes_sent`.
    pub bytes: Option<usize>,
    pub user_agent: Option<usize>,
    /// `$request` (the request line), else `$request_uri`, else `$uri`.
    pub request: Option<usize>,
    pub request_is_line: bool,
    pub time: Option<(usize, TimeField)>,
    /// `$request_time` in seconds (or Apache's `%D` in microseconds).
    pub request_time: Option<(usize, f64)>,
}

/// How a time field is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeField {
    /// `03/Dec/2026:06:20:02 +0000`
    Local,
    /// `2026-12-03T06:20:02+00:00`
    Iso8601,
    /// `1796278802.037`
    Msec,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("is empty")]
    Empty,
    #[error("`{0}` is neither a known format (combined, main, common, vhcommon) nor a format string with $variables")]
    UnknownName(String),
    #[error("${0} is followed directly by ${1}: with nothing between them a line cannot be split")]
    Adjacent(String, String),
    #[error("`$` at byte {0} is not followed by a variable name")]
    BadVariable(usize),
    #[error("unknown Apache directive `{0}`")]
    UnknownDirective(String),
}

/// One parsed line: the field values, borrowed from the line.
pub struct Fields<'a> {
    pub line: &'a [u8],
    spans: &'a [(u32, u32)],
}

impl<'a> Fields<'a> {
    /// Field `i`'s raw text (`-` included).
    pub fn raw(&self, i: usize) -> &'a [u8] {
        let (a, b) = self.spans[i];
        &self.line[a as usize..b as usize]
    }

    /// Field `i`, absent when written `-` or empty.
    pub fn get(&self, i: usize) -> Option<&'a [u8]> {
        let v = self.raw(i);
        (!v.is_empty() && v != b"-").then_some(v)
    }
}

impl LogFormat {
    /// Compiles a format: a name or a format string (nginx's `$variable`
    /// syntax, or Duct's Apache `%` directives).
    pub fn compile(spec: &str) -> Result<LogFormat, FormatError> {
        let text = match spec.trim() {
            "" => return Err(FormatError::Empty),
            "combined" => COMBINED.to_string(),
            "main" => MAIN.to_string(),
            "common" => COMMON.to_string(),
            "vhcommon" => VHCOMMON.to_string(),
            s if s.contains('$') => unescape(s),
            s if s.contains('%') => from_apache(&unescape(s))?,
            s => return Err(FormatError::UnknownName(s.to_string())),
        };
        let mut format = Self::from_nginx(&text)?;
        format.source = spec.to_string();
        Ok(format)
    }

    fn from_nginx(text: &str) -> Result<LogFormat, FormatError> {
        // (literal before, variable) pairs, then a trailing literal.
        let bytes = text.as_bytes();
        let mut literals: Vec<Vec<u8>> = vec![Vec::new()];
        let mut names: Vec<String> = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] != b'$' {
                if let Some(l) = literals.last_mut() {
                    l.push(bytes[i]);
                }
                i += 1;
                continue;
            }
            let (name, next) = if bytes.get(i + 1) == Some(&b'{') {
                let close = text[i..].find('}').map(|c| i + c).ok_or(FormatError::BadVariable(i))?;
                (&text[i + 2..close], close + 1)
            } else {
                let len = text[i + 1..]
                    .bytes()
                    .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                    .count();
                (&text[i + 1..i + 1 + len], i + 1 + len)
            };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(FormatError::BadVariable(i));
            }
            if let (Some(prev), Some(last)) = (names.last(), literals.last()) {
                if last.is_empty() {
                    return Err(FormatError::Adjacent(prev.clone(), name.to_string()));
                }
            }
            names.push(name.to_string());
            literals.push(Vec::new());
            i = next;
        }
        let head = literals.remove(0);
        let steps = names
            .iter()
            .enumerate()
            .map(|(field, name)| Step {
                field,
                width: match name.as_str() {
                    "time_local" => Some(26),
                    "time_iso8601" => Some(25),
                    _ => None,
                },
                then: (!literals[field].is_empty()).then(|| Finder::new(&literals[field]).into_owned()),
                quoted: literals[field].first() == Some(&b'"'),
            })
            .collect();
        let roles = Roles::of(&names);
        Ok(LogFormat {
            source: text.to_string(),
            head,
            steps,
            names,
            roles,
        })
    }

    /// The format as configured.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Variable names, by field index.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The time a parsed line carries (`$time_local`, `$time_iso8601` or
    /// `$msec`), in seconds since the epoch.
    pub fn time_of(&self, fields: &Fields<'_>) -> Option<f64> {
        let (i, kind) = self.roles.time?;
        parse_time(kind, fields.raw(i))
    }

    /// Splits `line` into fields, using `spans` as scratch (no allocation
    /// once it has grown); `None` when the line does not fit the format.
    pub fn parse<'a>(&self, line: &'a [u8], spans: &'a mut Vec<(u32, u32)>) -> Option<Fields<'a>> {
        if !line.starts_with(&self.head) || line.len() > u32::MAX as usize {
            return None;
        }
        spans.clear();
        spans.resize(self.steps.len(), (0, 0));
        let mut budget = MAX_ATTEMPTS;
        if !self.split(0, line, self.head.len(), spans, &mut budget) {
            return None;
        }
        Some(Fields { line, spans })
    }

    fn split(&self, k: usize, line: &[u8], pos: usize, spans: &mut [(u32, u32)], budget: &mut usize) -> bool {
        let Some(step) = self.steps.get(k) else {
            return pos == line.len();
        };
        let rest = &line[pos..];
        let then_len = step.then.as_ref().map_or(0, |f| f.needle().len());
        if let Some(width) = step.width {
            let fits = match &step.then {
                Some(f) => rest.len() >= width && rest[width..].starts_with(f.needle()),
                None => rest.len() == width,
            };
            if !fits {
                return false;
            }
            spans[step.field] = (pos as u32, (pos + width) as u32);
            return self.split(k + 1, line, pos + width + then_len, spans, budget);
        }
        let Some(finder) = &step.then else {
            spans[step.field] = (pos as u32, line.len() as u32);
            return self.split(k + 1, line, line.len(), spans, budget);
        };
        for at in finder.find_iter(rest) {
            if *budget == 0 {
                return false;
            }
            *budget -= 1;
            let value = &rest[..at];
            if step.quoted && value.last() == Some(&b'\\') {
                // `\"`: a quote escaped inside the value (`escape=json`).
                continue;
            }
            if has_bare_quote(value) {
                // Values never hold a quote nginx did not escape: no later
                // split can fit either.
                return false;
            }
            spans[step.field] = (pos as u32, (pos + at) as u32);
            if self.split(k + 1, line, pos + at + then_len, spans, budget) {
                return true;
            }
            if step.quoted {
                break;
            }
        }
        false
    }
}

/// Whether `v` holds a `"` not preceded by a backslash.
fn has_bare_quote(v: &[u8]) -> bool {
    memchr::memchr_iter(b'"', v).any(|i| i == 0 || v[i - 1] != b'\\')
}

impl Roles {
    fn of(names: &[String]) -> Roles {
        let find = |n: &str| names.iter().position(|x| x == n);
        let request = find("request");
        Roles {
            client: find("remote_addr"),
            status: find("status"),
            bytes: find("body_bytes_sent").or_else(|| find("bytes_sent")),
            user_agent: find("http_user_agent"),
            request_is_line: request.is_some(),
            request: request.or_else(|| find("request_uri")).or_else(|| find("uri")),
            time: find("time_local")
                .map(|i| (i, TimeField::Local))
                .or_else(|| find("time_iso8601").map(|i| (i, TimeField::Iso8601)))
                .or_else(|| find("msec").map(|i| (i, TimeField::Msec))),
            request_time: find("request_time")
                .map(|i| (i, 1.0))
                .or_else(|| find("request_time_us").map(|i| (i, 1e-6))),
        }
    }
}

/// `\"` and `\\` as nginx's config parser reads them.
fn unescape(s: &str) -> String {
    s.replace("\\\"", "\"").replace("\\\\", "\\")
}

/// Duct's Apache-style formats in nginx's syntax.
fn from_apache(s: &str) -> Result<String, FormatError> {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        // `%>s`, `%<s`: the final or original status, both `$status`.
        if matches!(chars.peek(), Some('>' | '<')) {
            chars.next();
        }
        let var = match chars.next() {
            Some('%') => {
                out.push('%');
                continue;
            }
            Some('{') => {
                let name: String = chars.by_ref().take_while(|&c| c != '}').collect();
                match chars.next() {
                    Some('i') => format!("http_{}", name.to_ascii_lowercase().replace('-', "_")),
                    other => {
                        return Err(FormatError::UnknownDirective(format!(
                            "%{{{name}}}{}",
                            other.map(String::from).unwrap_or_default()
                        )))
                    }
                }
            }
            Some('h' | 'a') => "remote_addr".into(),
            Some('l') => "remote_ident".into(),
            Some('u') => "remote_user".into(),
            Some('t') => {
                out.push_str("[${time_local}]");
                continue;
            }
            Some('r') => "request".into(),
            Some('s') => "status".into(),
            Some('b' | 'B') => "body_bytes_sent".into(),
            Some('D') => "request_time_us".into(),
            Some('T') => "request_time".into(),
            Some('v') => "server_name".into(),
            Some('f') => "request_filename".into(),
            Some('U') => "uri".into(),
            Some('q') => "args".into(),
            Some('H') => "server_protocol".into(),
            Some('m') => "request_method".into(),
            other => return Err(FormatError::UnknownDirective(format!("%{}", other.unwrap_or(' ')))),
        };
        out.push_str("${");
        out.push_str(&var);
        out.push('}');
    }
    Ok(out)
}

/// Seconds since the epoch of a time field, `None` when it does not parse.
pub fn parse_time(kind: TimeField, v: &[u8]) -> Option<f64> {
    match kind {
        TimeField::Local => parse_local(v),
        TimeField::Iso8601 => parse_iso8601(v),
        TimeField::Msec => std::str::from_utf8(v).ok()?.parse().ok(),
    }
}

fn digits(v: &[u8]) -> Option<i64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
}

/// `+0100` or `+01:00` as seconds east of UTC.
fn offset(v: &[u8]) -> Option<i64> {
    let sign = match v.first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (h, m) = match v.len() {
        5 => (&v[1..3], &v[3..5]),
        6 if v[3] == b':' => (&v[1..3], &v[4..6]),
        _ => return None,
    };
    Some(sign * (digits(h)? * 3600 + digits(m)? * 60))
}

/// `03/Dec/2026:06:20:02 +0000`
fn parse_local(v: &[u8]) -> Option<f64> {
    if v.len() != 26 || v[2] != b'/' || v[6] != b'/' || v[11] != b':' || v[20] != b' ' {
        return None;
    }
    const MONTHS: [&[u8]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == &v[3..6])? as i64 + 1;
    let secs = seconds_from_civil(
        digits(&v[7..11])?,
        month,
        digits(&v[0..2])?,
        digits(&v[12..14])?,
        digits(&v[15..17])?,
        digits(&v[18..20])?,
    )?;
    Some((secs - offset(&v[21..26])?) as f64)
}

/// `2026-12-03T06:20:02+00:00`
fn parse_iso8601(v: &[u8]) -> Option<f64> {
    if v.len() != 25 || v[4] != b'-' || v[7] != b'-' || v[10] != b'T' {
        return None;
    }
    let secs = seconds_from_civil(
        digits(&v[0..4])?,
        digits(&v[5..7])?,
        digits(&v[8..10])?,
        digits(&v[11..13])?,
        digits(&v[14..16])?,
        digits(&v[17..19])?,
    )?;
    Some((secs - offset(&v[19..25])?) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use duct_core::civil::iso8601_utc;

    const COMBINED_LOG: &str = include_str!("../../tests/fixtures/nginx-log/combined.log");
    const MAIN_LOG: &str = include_str!("../../tests/fixtures/nginx-log/main.log");
    const TIMED_LOG: &str = include_str!("../../tests/fixtures/nginx-log/timed.log");
    const TIMED: &str = r#"$remote_addr $host [$time_iso8601] "$request" $status $bytes_sent $request_time $msec "$http_user_agent" ${request_length}b"#;

    fn field<'a>(f: &LogFormat, fields: &Fields<'a>, name: &str) -> Option<&'a str> {
        let i = f.names().iter().position(|n| n == name).unwrap();
        fields.get(i).map(|v| std::str::from_utf8(v).unwrap())
    }

    #[test]
    fn every_captured_line_parses_in_its_format() {
        for (name, log) in [("combined", COMBINED_LOG), ("main", MAIN_LOG), (TIMED, TIMED_LOG)] {
            let f = LogFormat::compile(name).unwrap();
            let mut spans = Vec::new();
            for line in log.lines() {
                assert!(f.parse(line.as_bytes(), &mut spans).is_some(), "{name}: {line}");
            }
        }
    }

    #[test]
    fn combined_fields_of_real_nginx_lines() {
        let f = LogFormat::compile("combined").unwrap();
        let mut spans = Vec::new();
        let lines: Vec<&str> = COMBINED_LOG.lines().collect();

        let p = f.parse(lines[1].as_bytes(), &mut spans).unwrap();
        assert_eq!(field(&f, &p, "remote_addr"), Some("127.0.0.1"));
        assert_eq!(field(&f, &p, "remote_user"), None, "`-` is absent");
        assert_eq!(field(&f, &p, "request"), Some("GET /static/app.min.js HTTP/1.1"));
        assert_eq!(field(&f, &p, "status"), Some("200"));
        assert_eq!(field(&f, &p, "body_bytes_sent"), Some("5000"));
        assert_eq!(field(&f, &p, "http_referer"), Some("https://example.com/page?a=1"));
        assert!(field(&f, &p, "http_user_agent")
            .unwrap()
            .starts_with("Mozilla/5.0 (X11"));
        let (ti, kind) = f.roles.time.unwrap();
        assert_eq!(parse_time(kind, p.raw(ti)), Some(1796278808.0));

        // nginx escapes quotes and backslashes in values.
        let p = f.parse(lines[2].as_bytes(), &mut spans).unwrap();
        assert_eq!(
            field(&f, &p, "http_user_agent"),
            Some(r"evil \x22quoted\x22 agent \x5C backslash")
        );
        // An IPv6 client.
        let p = f.parse(lines[3].as_bytes(), &mut spans).unwrap();
        assert_eq!(field(&f, &p, "remote_addr"), Some("::1"));
        // A 5 KB URL.
        let p = f.parse(lines[4].as_bytes(), &mut spans).unwrap();
        assert!(field(&f, &p, "request").unwrap().len() > 5000);
        // A user name with a space in it, before ` [`.
        let p = f.parse(lines[8].as_bytes(), &mut spans).unwrap();
        assert_eq!(field(&f, &p, "remote_user"), Some("ali ce"));
        assert_eq!(field(&f, &p, "status"), Some("401"));
        // A garbage request line.
        let p = f.parse(lines[11].as_bytes(), &mut spans).unwrap();
        assert_eq!(field(&f, &p, "request"), Some("garbage"));
        assert_eq!(field(&f, &p, "status"), Some("400"));
    }

    #[test]
    fn a_custom_format_with_fixed_width_times_and_empty_fields() {
        let f = LogFormat::compile(TIMED).unwrap();
        assert_eq!(f.roles.time.map(|t| t.1), Some(TimeField::Iso8601));
        assert_eq!(f.roles.request_time.map(|t| t.0), Some(6));
        let mut spans = Vec::new();
        let lines: Vec<&str> = TIMED_LOG.lines().collect();
        let p = f.parse(lines[3].as_bytes(), &mut spans).unwrap();
        assert_eq!(field(&f, &p, "host"), Some("[::1]"));
        assert_eq!(field(&f, &p, "request_length"), Some("81"));
        assert_eq!(parse_time(TimeField::Iso8601, p.raw(2)), Some(1796278808.0));
        assert_eq!(parse_time(TimeField::Msec, p.raw(7)), Some(1796278808.601));
        // HTTP/1.0 without Host: an empty field between two spaces.
        let p = f.parse(lines[12].as_bytes(), &mut spans).unwrap();
        assert_eq!(field(&f, &p, "host"), None);
        assert_eq!(field(&f, &p, "request"), Some("GET / HTTP/1.0"));
    }

    #[test]
    fn json_escaped_quotes_stay_inside_their_value() {
        let f = LogFormat::compile(r#"{"ua":"$http_user_agent","status":$status}"#).unwrap();
        let mut spans = Vec::new();
        let p = f.parse(br#"{"ua":"say \"hi\"","status":200}"#, &mut spans).unwrap();
        assert_eq!(field(&f, &p, "http_user_agent"), Some(r#"say \"hi\""#));
        assert_eq!(field(&f, &p, "status"), Some("200"));
    }

    #[test]
    fn lines_that_do_not_fit_are_rejected() {
        let f = LogFormat::compile("combined").unwrap();
        let mut spans = Vec::new();
        let main_line = MAIN_LOG.lines().next().unwrap();
        assert!(f.parse(main_line.as_bytes(), &mut spans).is_none(), "an extra field");
        let line = COMBINED_LOG.lines().next().unwrap();
        assert!(
            f.parse(&line.as_bytes()[..line.len() - 1], &mut spans).is_none(),
            "cut short"
        );
        assert!(f.parse(b"", &mut spans).is_none());
        assert!(f.parse(b"2026/12/03 06:20:02 [error] 1#1: oops", &mut spans).is_none());
        let hostile = format!("1 - {} [x", " [".repeat(10_000));
        assert!(f.parse(hostile.as_bytes(), &mut spans).is_none());
    }

    #[test]
    fn duct_apache_formats_are_translated() {
        let f = LogFormat::compile(r#"%h %l %u %t \"%r\" %>s %b \"%{Referer}i\" \"%{User-agent}i\""#).unwrap();
        assert_eq!(
            f.names(),
            [
                "remote_addr",
                "remote_ident",
                "remote_user",
                "time_local",
                "request",
                "status",
                "body_bytes_sent",
                "http_referer",
                "http_user_agent"
            ]
        );
        let mut spans = Vec::new();
        for line in COMBINED_LOG.lines() {
            assert!(f.parse(line.as_bytes(), &mut spans).is_some(), "{line}");
        }
        assert_eq!(
            LogFormat::compile("%h %Z").unwrap_err(),
            FormatError::UnknownDirective("%Z".into())
        );
    }

    #[test]
    fn bad_formats_are_reported() {
        assert_eq!(
            LogFormat::compile("combind").unwrap_err(),
            FormatError::UnknownName("combind".into())
        );
        assert_eq!(LogFormat::compile(" ").unwrap_err(), FormatError::Empty);
        assert_eq!(
            LogFormat::compile("$status$body_bytes_sent").unwrap_err(),
            FormatError::Adjacent("status".into(), "body_bytes_sent".into())
        );
        assert!(matches!(LogFormat::compile("a $ b"), Err(FormatError::BadVariable(2))));
    }

    #[test]
    fn times_convert_both_ways() {
        assert_eq!(parse_local(b"03/Dec/2026:06:20:02 +0000"), Some(1796278802.0));
        assert_eq!(parse_local(b"03/Dec/2026:07:20:02 +0100"), Some(1796278802.0));
        assert_eq!(parse_local(b"29/Feb/2024:23:59:59 -0530"), Some(1709251199.0 + 19800.0));
        assert_eq!(parse_local(b"03/Foo/2026:06:20:02 +0000"), None);
        assert_eq!(parse_iso8601(b"2026-12-03T06:20:02+00:00"), Some(1796278802.0));
        assert_eq!(iso8601_utc(1796278802.0), "2026-12-03T06:20:02Z");
        assert_eq!(iso8601_utc(1796278808.601), "2026-12-03T06:20:08.601Z");
        assert_eq!(iso8601_utc(951782400.0), "2000-02-29T00:00:00Z");
    }
}
