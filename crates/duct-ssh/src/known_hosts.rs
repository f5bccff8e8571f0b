//! OpenSSH's `known_hosts` format: which keys a host may present.
//!
//! Each line is `[@marker] patterns keytype base64-key [comment]`
//! (sshd(8), *SSH_KNOWN_HOSTS FILE FORMAT*). Patterns are a comma-separated
//! list of names with `*` and `?` wildcards, `!` negations and
//! `[host]:port` for ports other than 22, or one hashed name
//! `|1|salt|HMAC-SHA1(salt, name)` as `HashKnownHosts` writes them.
//! `@revoked` keys are refused for every host they name; `@cert-authority`
//! lines sign host certificates, which ductd does not ask for, so they are
//! kept out of the plain key comparison.
//!
//! Parsing and checking are pure; reading the file and appending to it
//! (`ssh_accept_new`) are the two thin functions at the end.

use std::io::Write;
use std::path::Path;

use data_encoding::BASE64;
use russh::keys::ssh_key::PublicKey;
use russh::keys::Algorithm;

/// The known hosts of one file.
#[derive(Debug, Default)]
pub struct KnownHosts {
    entries: Vec<Entry>,
    /// Lines that could not be read (line number, why): skipped, and
    /// logged by the caller.
    pub problems: Vec<(usize, String)>,
}

#[derive(Debug)]
struct Entry {
    /// 1-based, for messages.
    line: usize,
    marker: Marker,
    hosts: Hosts,
    key: PublicKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    Plain,
    CertAuthority,
    Revoked,
}

#[derive(Debug)]
enum Hosts {
    Patterns(Vec<Pattern>),
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
}

#[derive(Debug)]
struct Pattern {
    negated: bool,
    /// Lower-cased, as OpenSSH compares names.
    glob: String,
}

/// What the file says of a host's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The key is listed for the host, on this line.
    Trusted { line: usize },
    /// The file names the host with other keys only (on these lines): the
    /// key changed, or someone is in the middle.
    Changed { lines: Vec<usize> },
    /// The key is marked `@revoked` on this line.
    Revoked { line: usize },
    /// The file does not name the host.
    Unknown,
}

/// The name a host is looked up by: `host`, or `[host]:port` off port 22,
/// lower-cased, as OpenSSH writes and looks it up.
pub fn lookup_name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

impl KnownHosts {
    /// Reads the text of a known_hosts file; bad lines are listed in
    /// [`KnownHosts::problems`], not fatal.
    pub fn parse(text: &str) -> KnownHosts {
        let mut known = KnownHosts::default();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match parse_line(line, line_no) {
                Ok(entry) => known.entries.push(entry),
                Err(why) => known.problems.push((line_no, why)),
            }
        }
        known
    }

    /// What the file says of `key` presented by `host` on `port`.
    pub fn check(&self, host: &str, port: u16, key: &PublicKey) -> Verdict {
        let name = lookup_name(host, port);
        let mut other_keys = Vec::new();
        let mut trusted = None;
        for entry in &self.entries {
            if !entry.hosts.matches(&name) {
                continue;
            }
            let same = entry.key.key_data() == key.key_data();
            match entry.marker {
                Marker::Revoked if same => return Verdict::Revoked { line: entry.line },
                Marker::Revoked | Marker::CertAuthority => {}
                Marker::Plain if same => {
                    trusted.get_or_insert(entry.line);
                }
                Marker::Plain => other_keys.push(entry.line),
            }
        }
        match trusted {
            Some(line) => Verdict::Trusted { line },
            None if other_keys.is_empty() => Verdict::Unknown,
            None => Verdict::Changed { lines: other_keys },
        }
    }

    /// The key algorithms the file holds for the host, in file order: asked
    /// for first, so that a host known by its RSA key is not refused for
    /// offering an Ed25519 one (OpenSSH orders its offer the same way).
    pub fn algorithms_for(&self, host: &str, port: u16) -> Vec<Algorithm> {
        let name = lookup_name(host, port);
        let mut found: Vec<Algorithm> = Vec::new();
        for entry in &self.entries {
            if entry.marker == Marker::Plain && entry.hosts.matches(&name) {
                let algorithm = entry.key.algorithm();
                if !found.contains(&algorithm) {
                    found.push(algorithm);
                }
            }
        }
        found
    }
}

fn parse_line(line: &str, line_no: usize) -> Result<Entry, String> {
    let mut fields = line.split_ascii_whitespace();
    let mut first = fields.next().ok_or("empty line")?;
    let marker = match first {
        "@cert-authority" => Marker::CertAuthority,
        "@revoked" => Marker::Revoked,
        m if m.starts_with('@') => return Err(format!("unknown marker `{m}`")),
        _ => Marker::Plain,
    };
    if marker != Marker::Plain {
        first = fields.next().ok_or("no host patterns after the marker")?;
    }
    let hosts = parse_hosts(first)?;
    let kind = fields.next().ok_or("no key type")?;
    let blob = fields.next().ok_or("no key")?;
    let key = PublicKey::from_openssh(&format!("{kind} {blob}")).map_err(|e| format!("unreadable {kind} key: {e}"))?;
    Ok(Entry {
        line: line_no,
        marker,
        hosts,
        key,
    })
}

fn parse_hosts(field: &str) -> Result<Hosts, String> {
    if let Some(rest) = field.strip_prefix("|1|") {
        let (salt, hash) = rest.split_once('|').ok_or("a hashed name needs |1|salt|hash")?;
        let decode = |what: &str, b64: &str| {
            BASE64
                .decode(b64.as_bytes())
                .map_err(|e| format!("the hashed name's {what} is not base64: {e}"))
        };
        return Ok(Hosts::Hashed {
            salt: decode("salt", salt)?,
            hash: decode("hash", hash)?,
        });
    }
    let patterns = field
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| match p.strip_prefix('!') {
            Some(rest) => Pattern {
                negated: true,
                glob: rest.to_ascii_lowercase(),
            },
            None => Pattern {
                negated: false,
                glob: p.to_ascii_lowercase(),
            },
        })
        .collect::<Vec<_>>();
    if patterns.is_empty() {
        return Err("no host patterns".into());
    }
    Ok(Hosts::Patterns(patterns))
}

impl Hosts {
    /// OpenSSH's rule: a negated pattern that matches excludes the host
    /// whatever else matches; otherwise any matching pattern includes it.
    fn matches(&self, name: &str) -> bool {
        match self {
            Hosts::Hashed { salt, hash } => hash_name(salt, name) == *hash,
            Hosts::Patterns(patterns) => {
                let mut hit = false;
                for p in patterns {
                    if glob_match(p.glob.as_bytes(), name.as_bytes()) {
                        if p.negated {
                            return false;
                        }
                        hit = true;
                    }
                }
                hit
            }
        }
    }
}

/// HMAC-SHA1 of `name` keyed by `salt`: the hash of a hashed entry.
fn hash_name(salt: &[u8], name: &str) -> Vec<u8> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, salt);
    ring::hmac::sign(&key, name.as_bytes()).as_ref().to_vec()
}

/// `*` (any run) and `?` (any one byte) wildcards, iteratively with one
/// backtrack point, so that no pattern can take exponential time.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// A hashed known_hosts line for `key` of `host` on `port`, with `salt`
/// (20 random bytes, as OpenSSH uses).
pub fn hashed_line(host: &str, port: u16, key: &PublicKey, salt: &[u8]) -> String {
    let name = lookup_name(host, port);
    let hash = hash_name(salt, &name);
    let key_text = key.to_openssh().unwrap_or_default();
    // The comment (if any) is dropped: the line names no host in clear.
    let mut parts = key_text.split_ascii_whitespace();
    let kind = parts.next().unwrap_or_default();
    let blob = parts.next().unwrap_or_default();
    format!("|1|{}|{} {kind} {blob}", BASE64.encode(salt), BASE64.encode(&hash))
}

/// The file's entries; a missing file knows no host.
pub fn read(path: &Path) -> std::io::Result<KnownHosts> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(KnownHosts::parse(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KnownHosts::default()),
        Err(e) => Err(e),
    }
}

/// Records `key` for `host` at the end of the file (hashed, as Debian's
/// OpenSSH does by default), creating the file and its directory.
pub fn append(path: &Path, host: &str, port: u16, key: &PublicKey) -> std::io::Result<()> {
    let mut salt = [0u8; 20];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
        .map_err(|_| std::io::Error::other("no random bytes for the salt"))?;
    let line = hashed_line(host, port, key, &salt);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    // One write: a line from another connection never lands inside it.
    let needs_newline = file.metadata()?.len() > 0 && !ends_with_newline(path)?;
    let text = format!("{}{line}\n", if needs_newline { "\n" } else { "" });
    file.write_all(text.as_bytes())
}

fn ends_with_newline(path: &Path) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    f.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    // Keys made with ssh-keygen for these tests.
    const ED_A: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGS/gquCmsVmOE3FmtZ8NcYlXJYdqL2S3ki4PQ6totdk";
    const ED_B: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPqk72KohY2krKw+OO340G/96bXVQkyD0C+i76clzfNy";

    fn key(text: &str) -> PublicKey {
        PublicKey::from_openssh(text).unwrap()
    }

    #[test]
    fn plain_names_wildcards_negations_and_ports() {
        let file = format!(
            "# comment\n\
             web1,web1.example.org,10.0.0.5 {ED_A}\n\
             *.db.example.org,!evil.db.example.org {ED_A} a comment\n\
             [127.0.0.1]:2222 {ED_A}\n\
             [127.0.0.1]:* {ED_B}\n"
        );
        let k = KnownHosts::parse(&file);
        assert!(k.problems.is_empty(), "{:?}", k.problems);
        let a = key(ED_A);
        assert_eq!(k.check("WEB1.example.org", 22, &a), Verdict::Trusted { line: 2 });
        assert_eq!(k.check("10.0.0.5", 22, &a), Verdict::Trusted { line: 2 });
        assert_eq!(k.check("x.db.example.org", 22, &a), Verdict::Trusted { line: 3 });
        assert_eq!(k.check("evil.db.example.org", 22, &a), Verdict::Unknown);
        assert_eq!(
            k.check("web1", 2200, &a),
            Verdict::Unknown,
            "another port is another host"
        );
        assert_eq!(k.check("127.0.0.1", 2222, &a), Verdict::Trusted { line: 4 });
        assert_eq!(k.check("127.0.0.1", 2223, &a), Verdict::Changed { lines: vec![5] });
        assert_eq!(k.check("127.0.0.1", 22, &a), Verdict::Unknown);
    }

    #[test]
    fn a_different_key_is_a_change_and_revoked_keys_are_refused() {
        let file = format!("host1 {ED_A}\n@revoked * {ED_B}\n@cert-authority *.example.org {ED_A}\n");
        let k = KnownHosts::parse(&file);
        assert_eq!(k.check("host1", 22, &key(ED_B)), Verdict::Revoked { line: 2 });
        assert_eq!(k.check("other", 22, &key(ED_B)), Verdict::Revoked { line: 2 });
        let file = format!("host1 {ED_A}\n");
        let k = KnownHosts::parse(&file);
        assert_eq!(k.check("host1", 22, &key(ED_B)), Verdict::Changed { lines: vec![1] });
        // A CA line is no plain key for the host.
        let k = KnownHosts::parse(&format!("@cert-authority x.example.org {ED_A}\n"));
        assert_eq!(k.check("x.example.org", 22, &key(ED_A)), Verdict::Unknown);
    }

    #[test]
    fn hashed_entries_match_their_name_only() {
        let a = key(ED_A);
        // `[127.0.0.1]:2222` hashed by `ssh-keygen -H` (OpenSSH 9.2).
        let by_openssh = format!("|1|hjzPnM2q1AAMVwcde6JhqaXLtXE=|MJPZkHtWUQ0Ir4xaPZ2wXSzf7js= {ED_A}\n");
        for file in [by_openssh, hashed_line("127.0.0.1", 2222, &a, b"01234567890123456789")] {
            let k = KnownHosts::parse(&file);
            assert!(k.problems.is_empty(), "{:?}", k.problems);
            assert_eq!(k.check("127.0.0.1", 2222, &a), Verdict::Trusted { line: 1 }, "{file}");
            assert_eq!(k.check("127.0.0.1", 22, &a), Verdict::Unknown);
            assert_eq!(k.check("127.0.0.2", 2222, &a), Verdict::Unknown);
            assert_eq!(
                k.check("127.0.0.1", 2222, &key(ED_B)),
                Verdict::Changed { lines: vec![1] }
            );
        }
    }

    #[test]
    fn bad_lines_are_listed_and_skipped() {
        let file = format!("@weird h {ED_A}\nhost-only\nh ssh-ed25519 !!!\n|1|x {ED_A}\ngood {ED_A}\n");
        let k = KnownHosts::parse(&file);
        let lines: Vec<usize> = k.problems.iter().map(|p| p.0).collect();
        assert_eq!(lines, [1, 2, 3, 4]);
        assert_eq!(k.check("good", 22, &key(ED_A)), Verdict::Trusted { line: 5 });
    }

    #[test]
    fn known_algorithms_are_listed_for_the_offer() {
        let k = KnownHosts::parse(&format!("h {ED_A}\nh {ED_B}\nother {ED_A}\n"));
        assert_eq!(k.algorithms_for("h", 22), [Algorithm::Ed25519]);
        assert!(k.algorithms_for("nobody", 22).is_empty());
    }

    #[test]
    fn globs_backtrack_without_blowing_up() {
        assert!(glob_match(b"a*b*c", b"axxbyyc"));
        assert!(!glob_match(b"a*b*c", b"axxbyy"));
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"h?st", b"host"));
        assert!(!glob_match(
            &[b'*'; 40].iter().chain(b"x").copied().collect::<Vec<_>>(),
            &[b'a'; 200]
        ));
    }

    #[test]
    fn append_creates_the_file_and_keeps_lines_whole() {
        let dir = std::env::temp_dir().join(format!("duct-ssh-kh-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub/known_hosts");
        append(&path, "h", 22, &key(ED_A)).unwrap();
        std::fs::write(
            &path,
            format!("{}no-newline {ED_B}", std::fs::read_to_string(&path).unwrap()),
        )
        .unwrap();
        append(&path, "127.0.0.1", 2222, &key(ED_B)).unwrap();
        let k = read(&path).unwrap();
        assert!(k.problems.is_empty(), "{:?}", k.problems);
        assert_eq!(k.check("h", 22, &key(ED_A)), Verdict::Trusted { line: 1 });
        assert_eq!(k.check("127.0.0.1", 2222, &key(ED_B)), Verdict::Trusted { line: 3 });
        assert!(read(&dir.join("absent")).unwrap().entries.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
