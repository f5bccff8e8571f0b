//! The `http://` and `https://` URLs the HTTP check requests, and the
//! `Location` of a redirect resolved against them (RFC 3986 §5.2, for the
//! forms servers send). Only what a request needs is kept: scheme, host,
//! port, the path with its query, and user information for Basic auth.

use std::fmt;

/// Why a URL cannot be requested.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("`{0}` is not an http:// or https:// URL")]
    Scheme(String),
    #[error("`{0}` has no host")]
    NoHost(String),
    #[error("`{0}` has a bad port")]
    Port(String),
    #[error("`{0}` has a bad IPv6 address")]
    Ipv6(String),
    #[error("`{0}` contains spaces or control characters")]
    Characters(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub scheme: Scheme,
    /// A name, an IPv4 address, or an IPv6 address without its brackets.
    pub host: String,
    pub port: u16,
    /// The request target: the path and query, never empty.
    pub target: String,
    /// `user:password` written before the host, for Basic auth.
    pub userinfo: Option<String>,
}

impl Url {
    pub fn parse(text: &str) -> Result<Url, UrlError> {
        if text.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(UrlError::Characters(text.to_string()));
        }
        let (scheme, rest) = match text.split_once("://") {
            Some((s, rest)) if s.eq_ignore_ascii_case("http") => (Scheme::Http, rest),
            Some((s, rest)) if s.eq_ignore_ascii_case("https") => (Scheme::Https, rest),
            _ => return Err(UrlError::Scheme(text.to_string())),
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(split);
        let target = match target {
            "" => "/".to_string(),
            t if t.starts_with('?') => format!("/{t}"),
            t => t.to_string(),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_string()), h),
            None => (None, authority),
        };
        let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
            let (v6, after) = bracketed
                .split_once(']')
                .ok_or_else(|| UrlError::Ipv6(text.to_string()))?;
            if v6.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(UrlError::Ipv6(text.to_string()));
            }
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| UrlError::Port(text.to_string()))?),
            };
            (v6, port)
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(UrlError::NoHost(text.to_string()));
        }
        let port = match port {
            None | Some("") => scheme.default_port(),
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| UrlError::Port(text.to_string()))?,
        };
        Ok(Url {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
            target,
            userinfo,
        })
    }

    /// The `Host` header: the host, and the port unless it is the
    /// scheme's own.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == self.scheme.default_port() {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The URL a `Location` header points to, seen from this one.
    pub fn join(&self, location: &str) -> Result<Url, UrlError> {
        if location.contains("://") {
            return Url::parse(location);
        }
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        if let Some(rest) = location.strip_prefix("//") {
            return Url::parse(&format!("{scheme}://{rest}"));
        }
        let target = if location.starts_with('/') {
            location.to_string()
        } else if location.starts_with('?') {
            let path = self.target.split('?').next().unwrap_or("/");
            format!("{path}{location}")
        } else {
            let path = self.target.split('?').next().unwrap_or("/");
            let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
            format!("{dir}{location}")
        };
        Url::parse(&format!("{scheme}://{}{}", self.host_header(), normalise(&target)))
    }
}

/// Removes `.` and `..` segments from a path (RFC 3986 §5.2.4).
fn normalise(target: &str) -> String {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *seg {
            "." => {
                if last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let mut result = format!("/{}", out.join("/"));
    if let Some(q) = query {
        result.push('?');
        result.push_str(q);
    }
    result
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        write!(f, "{scheme}://{}{}", self.host_header(), self.target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_duct_users_write() {
        let u = Url::parse("http://web-1.example.com/").unwrap();
        assert_eq!(
            (u.scheme, u.host.as_str(), u.port, u.target.as_str()),
            (Scheme::Http, "web-1.example.com", 80, "/")
        );
        let u = Url::parse("https://127.0.0.1:8443/health?full=1#top").unwrap();
        assert_eq!((u.port, u.target.as_str()), (8443, "/health?full=1"));
        assert_eq!(u.to_string(), "https://127.0.0.1:8443/health?full=1");
        let u = Url::parse("HTTP://Example.COM?q").unwrap();
        assert_eq!((u.host.as_str(), u.target.as_str()), ("example.com", "/?q"));
        let u = Url::parse("http://[::1]:8080").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 8080));
        assert_eq!(u.host_header(), "[::1]:8080");
        let u = Url::parse("http://admin:s3cret@stats.local:81/x").unwrap();
        assert_eq!(u.userinfo.as_deref(), Some("admin:s3cret"));
        assert_eq!(u.host_header(), "stats.local:81");
    }

    #[test]
    fn refuses_what_cannot_be_requested() {
        assert!(matches!(Url::parse("ftp://x/"), Err(UrlError::Scheme(_))));
        assert!(matches!(Url::parse("example.com"), Err(UrlError::Scheme(_))));
        assert!(matches!(Url::parse("http:///path"), Err(UrlError::NoHost(_))));
        assert!(matches!(Url::parse("http://x:99999/"), Err(UrlError::Port(_))));
        assert!(matches!(Url::parse("http://x:0/"), Err(UrlError::Port(_))));
        assert!(matches!(Url::parse("http://x:abc/"), Err(UrlError::Port(_))));
        assert!(matches!(Url::parse("http://[::g]/"), Err(UrlError::Ipv6(_))));
        assert!(matches!(Url::parse("http://a b/"), Err(UrlError::Characters(_))));
    }

    #[test]
    fn redirects_resolve_against_the_current_url() {
        let base = Url::parse("https://shop.example:8443/a/b/page?x=1").unwrap();
        let join = |l: &str| base.join(l).unwrap().to_string();
        assert_eq!(join("http://other/"), "http://other/");
        assert_eq!(join("//cdn.example/img"), "https://cdn.example/img");
        assert_eq!(join("/login"), "https://shop.example:8443/login");
        assert_eq!(join("next"), "https://shop.example:8443/a/b/next");
        assert_eq!(join("../up?y=2"), "https://shop.example:8443/a/up?y=2");
        assert_eq!(join("./"), "https://shop.example:8443/a/b/");
        assert_eq!(join("?page=2"), "https://shop.example:8443/a/b/page?page=2");
    }
}
