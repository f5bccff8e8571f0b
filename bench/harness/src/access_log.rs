//! Realistic nginx access-log lines in `combined` format, generated for
//! the log scenario: a deterministic mix of IPv4 and IPv6 clients (a few
//! busy, most rare), pages, API calls with ids and query strings, static
//! files, statuses, sizes, referers and user agents as a public web server
//! logs them — some with a user name, one agent with quotes nginx escaped
//! as `\x22`.

use duct_core::civil::civil_from_seconds;

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

const AGENTS: [&str; 16] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.6045.163 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36 Edg/119.0.2151.72",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "curl/7.88.1",
    "python-requests/2.31.0",
    "Go-http-client/1.1",
    "Prometheus/2.42.0",
    "kube-probe/1.28",
    "Wget/1.21.3",
    "Mozilla/5.0 (X11; Linux x86_64) \\x22quoted\\x22 agent/1.0",
];

const PAGES: [&str; 12] = [
    "/",
    "/about",
    "/contact",
    "/pricing",
    "/login",
    "/logout",
    "/search",
    "/cart",
    "/checkout",
    "/docs/getting-started",
    "/docs/configuration",
    "/robots.txt",
];

const STATIC: [&str; 10] = [
    "/static/js/app.3f2a1b9c.js",
    "/static/js/vendor.8e1d44a0.js",
    "/static/css/main.c0ffee12.css",
    "/static/img/logo.svg",
    "/static/img/hero.jpg",
    "/static/fonts/inter-var.woff2",
    "/favicon.ico",
    "/apple-touch-icon.png",
    "/static/img/avatar-default.png",
    "/manifest.json",
];

/// A source of lines; the same seed gives the same lines.
pub struct AccessLog {
    state: u64,
    clients: Vec<String>,
    /// The formatted `$time_local` of `stamped`.
    stamp: String,
    stamped: i64,
}

impl AccessLog {
    pub fn new(seed: u64) -> AccessLog {
        let mut log = AccessLog {
            state: seed | 1,
            clients: Vec::new(),
            stamp: String::new(),
            stamped: i64::MIN,
        };
        // 5,000 clients, one in twenty over IPv6.
        for i in 0..5000u32 {
            let r = log.next();
            let client = if i % 20 == 19 {
                format!(
                    "2001:db8:{:x}:{:x}::{:x}",
                    r & 0xffff,
                    (r >> 16) & 0xffff,
                    (r >> 32) & 0xfff
                )
            } else {
                format!(
                    "{}.{}.{}.{}",
                    1 + (r & 0xdf) % 223,
                    (r >> 8) & 0xff,
                    (r >> 16) & 0xff,
                    1 + (r >> 24) % 254
                )
            };
            log.clients.push(client);
        }
        log
    }

    /// xorshift64*: fast, and plenty for picking fields.
    fn next(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// An index below `n`, low ones far more often (a few busy clients).
    fn skewed(&mut self, n: usize) -> usize {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((n as f64 * u * u * u) as usize).min(n - 1)
    }

    fn time_local(&mut self, t: i64) -> &str {
        if t != self.stamped {
            let c = civil_from_seconds(t);
            self.stamp = format!(
                "{:02}/{}/{}:{:02}:{:02}:{:02} +0000",
                c.day,
                MONTHS[(c.month - 1) as usize],
                c.year,
                c.hour,
                c.minute,
                c.second
            );
            self.stamped = t;
        }
        &self.stamp
    }

    /// Appends one line (with its newline) stamped `t` to `out`.
    pub fn line(&mut self, t: i64, out: &mut Vec<u8>) {
        use std::io::Write;
        let client = self.skewed(self.clients.len());
        let user = if self.below(100) == 0 { "alice" } else { "-" };
        let method = match self.below(100) {
            0..=89 => "GET",
            90..=96 => "POST",
            97..=98 => "HEAD",
            _ => "PUT",
        };
        let target = match self.below(10) {
            0..=3 => STATIC[self.skewed(STATIC.len())].to_string(),
            4..=6 => PAGES[self.skewed(PAGES.len())].to_string(),
            7..=8 => {
                let id = self.skewed(400);
                match self.below(3) {
                    0 => format!("/api/v1/items/{id}"),
                    1 => format!("/api/v1/items/{id}?fields=name,price&page={}", self.below(9) + 1),
                    _ => format!("/api/v1/users/{id}/orders"),
                }
            }
            _ => format!("/blog/2023/{:02}/post-{}.html", self.below(12) + 1, self.skewed(150)),
        };
        let protocol = match self.below(50) {
            0 => "HTTP/1.0",
            1..=9 => "HTTP/2.0",
            _ => "HTTP/1.1",
        };
        let status = match self.below(100) {
            0..=77 => 200,
            78..=85 => 304,
            86..=88 => 301,
            89..=94 => 404,
            95..=96 => 403,
            97 => 499,
            98 => 500,
            _ => 502,
        };
        let bytes = match status {
            304 | 499 => 0,
            301 => 162,
            404 => 153,
            _ => {
                let scale = 8 + self.below(9);
                200 + self.below(1 << scale)
            }
        };
        let referer = match self.below(10) {
            0..=3 => "-".to_string(),
            4..=5 => "https://www.google.com/".to_string(),
            _ => format!("https://www.example.com{}", PAGES[self.skewed(PAGES.len())]),
        };
        let agent = AGENTS[self.skewed(AGENTS.len())];
        let client = &self.clients[client].clone();
        let time = self.time_local(t);
        // Writing to a Vec cannot fail.
        let _ = writeln!(
            out,
            "{client} - {user} [{time}] \"{method} {target} {protocol}\" {status} {bytes} \"{referer}\" \"{agent}\""
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_look_like_nginx_combined() {
        let mut log = AccessLog::new(7);
        let mut out = Vec::new();
        for i in 0..1000 {
            log.line(1_606_780_800 + i / 100, &mut out);
        }
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1000);
        assert!(
            lines[0].contains(" - ") && lines[0].contains("[01/Dec/2020:00:00:00 +0000] \""),
            "{}",
            lines[0]
        );
        assert!(lines.iter().any(|l| l.starts_with("2001:db8:")));
        assert!(lines.iter().any(|l| l.contains("?fields=")));
        assert!(
            lines.iter().all(|l| l.ends_with('"') && l.matches('"').count() == 6),
            "{text}"
        );
        let mean = text.len() / lines.len();
        assert!((150..300).contains(&mean), "{mean} bytes per line");
        let mut again = Vec::new();
        AccessLog::new(7).line(1_606_780_800, &mut again);
        assert_eq!(again, format!("{}\n", lines[0]).into_bytes(), "deterministic");
    }
}
