//! The `file` option of log sources: one path, or a shell-style pattern
//! (`/var/log/nginx/*.log`, `/srv/*/logs/access.log`) expanded on every
//! poll so that files appearing later are picked up.
//!
//! Only `*`, `?` and `[...]` (with ranges and `!`/`^` negation) are
//! understood, within one path component; a pattern never crosses `/`.
//! That is all log paths need, and it keeps the `glob` crate (and its
//! directory-walking options nobody sets) out of the build. Names starting
//! with `.` match only a component that starts with `.` itself, as in the
//! shell. Compressed rotations (`.gz`, `.bz2`, `.xz`, `.zst`, `.lz4`,
//! `.zip`) never match: a pattern like `access.log*` would otherwise feed
//! gzip bytes to the parser.

use std::path::{Component, Path, PathBuf};

/// Endings of files that are compressed rotations, never tailed.
const COMPRESSED: &[&str] = &[".gz", ".bz2", ".xz", ".zst", ".lz4", ".zip"];

/// A parsed `file` option.
#[derive(Debug, Clone)]
pub struct FilePattern {
    /// As written, for messages and for naming the state file.
    text: String,
    /// `None` for a plain path.
    components: Option<Vec<Part>>,
}

#[derive(Debug, Clone)]
enum Part {
    /// The root or a component without wildcards.
    Literal(std::ffi::OsString),
    Wild(String),
}

impl FilePattern {
    pub fn new(text: &str) -> FilePattern {
        let path = Path::new(text);
        let wild = path
            .components()
            .any(|c| matches!(c, Component::Normal(n) if has_wildcard(&n.to_string_lossy())));
        let components = wild.then(|| {
            path.components()
                .map(|c| match c {
                    Component::Normal(n) if has_wildcard(&n.to_string_lossy()) => {
                        Part::Wild(n.to_string_lossy().into_owned())
                    }
                    other => Part::Literal(other.as_os_str().to_owned()),
                })
                .collect()
        });
        FilePattern {
            text: text.to_string(),
            components,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The regular files the pattern names now, sorted. A plain path is
    /// returned whether or not it exists (the tailer waits for it).
    pub fn expand(&self) -> Vec<PathBuf> {
        let Some(parts) = &self.components else {
            return vec![PathBuf::from(&self.text)];
        };
        let mut found = vec![PathBuf::new()];
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let mut next = Vec::new();
            for base in &found {
                match part {
                    Part::Literal(name) => next.push(base.join(name)),
                    Part::Wild(pattern) => {
                        let dir = if base.as_os_str().is_empty() {
                            Path::new(".")
                        } else {
                            base
                        };
                        let Ok(entries) = std::fs::read_dir(dir) else { continue };
                        for entry in entries.flatten() {
                            let name = entry.file_name();
                            let name = name.to_string_lossy();
                            if !matches(pattern, &name) {
                                continue;
                            }
                            let Ok(meta) = std::fs::metadata(entry.path()) else {
                                continue;
                            };
                            if (last && meta.is_file()) || (!last && meta.is_dir()) {
                                next.push(base.join(&*name));
                            }
                        }
                    }
                }
            }
            found = next;
        }
        found.retain(|p| !is_compressed(p) && p.is_file());
        found.sort();
        found
    }
}

/// Whether `path` names a compressed rotation (never tailed).
pub fn is_compressed(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    COMPRESSED.iter().any(|ext| name.ends_with(ext))
}

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Whether `name` matches the one-component `pattern`.
pub fn matches(pattern: &str, name: &str) -> bool {
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    match_from(&p, &n)
}

/// Iterative wildcard matching with one backtrack point (the last `*`),
/// linear in practice and never exponential.
fn match_from(p: &[char], n: &[char]) -> bool {
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ni));
                    pi += 1;
                    continue;
                }
                '?' => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                '[' => {
                    if let Some((hit, len)) = class(&p[pi..], n[ni]) {
                        if hit {
                            pi += len;
                            ni += 1;
                            continue;
                        }
                    } else if n[ni] == '[' {
                        // An unclosed `[` is a literal character.
                        pi += 1;
                        ni += 1;
                        continue;
                    }
                }
                c if c == n[ni] => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, sn)) => {
                pi = sp + 1;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Matches `c` against the class at the start of `p` (`[...]`): whether it
/// matched and the class's length, or `None` when the class is unclosed.
fn class(p: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(p.get(i), Some('!' | '^'));
    if negate {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    while i < p.len() {
        let lo = p[i];
        if lo == ']' && !first {
            return Some((hit != negate, i + 1));
        }
        first = false;
        if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|&hi| hi != ']') {
            let hi = p[i + 2];
            hit |= lo <= c && c <= hi;
            i += 3;
        } else {
            hit |= lo == c;
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_within_a_name() {
        assert!(matches("*.log", "access.log"));
        assert!(!matches("*.log", ".log"));
        assert!(!matches("*.log", "access.log.1"));
        assert!(matches("access.log*", "access.log.1"));
        assert!(matches("a?c", "abc"));
        assert!(!matches("a?c", "ac"));
        assert!(matches("*a*b*c", "xxaxxbxxbc"));
        assert!(matches("[ab]*", "b1"));
        assert!(!matches("[!ab]*", "b1"));
        assert!(matches("site[0-9].log", "site7.log"));
        assert!(!matches("site[0-9].log", "sitex.log"));
        assert!(matches("[]x]", "]"));
        assert!(matches("a[b", "a[b"));
        assert!(matches(".*", ".hidden"));
        assert!(!matches("*", ".hidden"));
    }

    #[test]
    fn expansion_walks_directories_and_skips_compressed_rotations() {
        let dir = std::env::temp_dir().join(format!("duct-glob-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["a", "b", "c"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        for f in [
            "a/access.log",
            "b/access.log",
            "b/access.log.1",
            "b/access.log.2.gz",
            "c/other.log",
        ] {
            std::fs::write(dir.join(f), "x\n").unwrap();
        }
        let all = FilePattern::new(&format!("{}/*/access.log*", dir.display()));
        let names: Vec<String> = all
            .expand()
            .iter()
            .map(|p| p.strip_prefix(&dir).unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["a/access.log", "b/access.log", "b/access.log.1"]);

        let plain = FilePattern::new(&format!("{}/none.log", dir.display()));
        assert_eq!(plain.expand().len(), 1, "a plain path is kept until it appears");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
