//! Configuration problems, each tied to the place in a file that caused it.
//!
//! Loading collects every problem it can find instead of stopping at the
//! first, so `ductd check` shows an operator the whole list at once.

use std::fmt;
use std::path::Path;

use super::node::Mark;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem: where, how bad, and what.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Absent for problems that belong to no file position (a missing file).
    pub mark: Option<Mark>,
    pub message: String,
}

impl Diagnostic {
    pub fn error(mark: impl Into<Option<Mark>>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            mark: mark.into(),
            message: message.into(),
        }
    }

    pub fn warning(mark: impl Into<Option<Mark>>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            mark: mark.into(),
            message: message.into(),
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The message followed by the offending line of the file and a caret
    /// under the column, when the file can still be read.
    pub fn with_excerpt(&self) -> String {
        let mut out = self.to_string();
        if let Some(excerpt) = self.mark.as_ref().and_then(excerpt) {
            out.push('\n');
            out.push_str(&excerpt);
        }
        out
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(mark) = &self.mark {
            write!(f, "{mark}: ")?;
        }
        if self.severity == Severity::Warning {
            write!(f, "warning: ")?;
        }
        write!(f, "{}", self.message)
    }
}

/// `  12 | interval: abc` and a caret line below it.
fn excerpt(mark: &Mark) -> Option<String> {
    if mark.file.as_ref() == Path::new(super::EMBEDDED_NAME) {
        return None;
    }
    let text = std::fs::read_to_string(&mark.file).ok()?;
    let line = text.lines().nth(mark.line.checked_sub(1)?)?;
    let number = mark.line.to_string();
    let pad = " ".repeat(number.len());
    let indent: String = line
        .chars()
        .take(mark.col.saturating_sub(1))
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    Some(format!("{number} | {line}\n{pad} | {indent}^"))
}

/// Every problem found while loading; at least one is an error when this
/// is returned as `Err`.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Diagnostic::is_error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.is_error())
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| !d.is_error())
    }

    pub fn extend(&mut self, other: impl IntoIterator<Item = Diagnostic>) {
        self.0.extend(other);
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// The closest of `candidates` to `name`, if it is close enough to be what
/// the user meant: a typo (within one edit for names of three letters or
/// fewer, so `foo` does not "mean" `cos`; within two, or a quarter of the
/// length for long dotted names), a wrong case, or a bare class name for a
/// dotted one. Ties go to the earlier candidate.
pub fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = name.to_ascii_lowercase();
    let len = name.chars().count();
    let limit = if len <= 3 { 1 } else { (len / 4).max(2) };
    let mut best: Option<(usize, &'a str)> = None;
    for cand in candidates {
        let cand_lower = cand.to_ascii_lowercase();
        let tail = cand_lower.rsplit('.').next().unwrap_or(&cand_lower);
        let d = if tail == lower && cand_lower != lower {
            0
        } else {
            edit_distance(&lower, &cand_lower)
        };
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, cand));
        }
    }
    best.map(|(_, c)| c)
}

/// Optimal-string-alignment distance: Levenshtein plus adjacent
/// transpositions, so `atna` is one edit from `atan`.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // rows[i][j]: distance between the first i chars of a and first j of b.
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = d;
        }
    }
    rows[a.len()][b.len()]
}

/// ", did you mean `x`?" or nothing.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    suggest(name, candidates)
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_catch_typos_and_bare_class_names() {
        let names = ["duct.sources.linux.basic.CPU", "duct.sources.generator.Function"];
        assert_eq!(
            suggest("duct.sources.generator.Fucntion", names),
            Some("duct.sources.generator.Function")
        );
        assert_eq!(suggest("Function", names), Some("duct.sources.generator.Function"));
        assert_eq!(suggest("interval", ["intervall", "ttl"]), Some("intervall"));
        assert_eq!(suggest("completely-different", names), None);
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("atna", "atan"), 1);
        assert_eq!(edit_distance("sine", "sin"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn display_names_file_line_and_column() {
        let mark = Mark::new(std::sync::Arc::from(Path::new("duct.yml")), 4, 7);
        let d = Diagnostic::error(mark.clone(), "bad");
        assert_eq!(d.to_string(), "duct.yml:4:7: bad");
        let w = Diagnostic::warning(mark, "odd");
        assert_eq!(w.to_string(), "duct.yml:4:7: warning: odd");
    }
}
