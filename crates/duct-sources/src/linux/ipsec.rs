//! `duct.sources.linux.ipsec.StrongSwan`: whether each configured IPsec
//! tunnel has an established IKE SA, from strongSwan's `ipsec statusall`
//! (the stroke interface Duct used) or `swanctl --list-conns` and
//! `--list-sas` (the vici interface of current installs).
//!
//! When the tool runs but fails (charon stopped), every tunnel seen before
//! is reported down: a dead daemon is the outage this source watches for.
//!
//! With `use_ssh: true` the tool runs on the remote host; which tool it has
//! and whether its login user is root (for the `sudo` default) are asked
//! there in one command until a tool is found. Everything after that is
//! the same code here and there.

use duct_core::config::Diagnostic;
use duct_core::source::FORK_OUTPUT_LIMIT;
use duct_core::{Event, Poll, Source, SourceArgs, SourceContext, SourceError, SourceSpec};
use serde::Deserialize;

use super::command::{find_program, first_line, Tool, SBIN_DIRS};
use super::host::Host;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Options {
    /// `ipsec` (statusall) or `swanctl`; the first installed when absent.
    tool: Option<String>,
    /// Run through `sudo -n`, as Duct did; by default only when ductd is
    /// not root (with `use_ssh`: when the remote login user is not root).
    sudo: Option<bool>,
}

pub fn spec() -> SourceSpec {
    SourceSpec::new::<Options>(
        "duct.sources.linux.ipsec.StrongSwan",
        "strongSwan IPsec tunnels up or down (`ipsec statusall`, or `swanctl --list-conns/--list-sas`); options tool (ipsec | swanctl, default the one installed), sudo (default: when not root)",
        &["(service).(connection): 1 and ok when its IKE SA is established, 0 and critical otherwise"],
        build,
    )
    .over_ssh()
}

/// Which strongSwan interface to ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavour {
    /// `ipsec statusall` (stroke, strongswan-starter).
    Ipsec,
    /// `swanctl --list-conns` and `--list-sas` (vici).
    Swanctl,
}

impl Flavour {
    /// Both, in the order they are looked for: Duct's `ipsec` wins where
    /// strongswan-starter is installed beside swanctl.
    const PREFERRED: [Flavour; 2] = [Flavour::Ipsec, Flavour::Swanctl];

    fn program(self) -> &'static str {
        match self {
            Flavour::Ipsec => "ipsec",
            Flavour::Swanctl => "swanctl",
        }
    }

    fn package(self) -> &'static str {
        match self {
            Flavour::Ipsec => "strongswan-starter",
            Flavour::Swanctl => "strongswan-swanctl",
        }
    }
}

fn build(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    let opts: Options = args.options()?;
    let flavour = match opts.tool.as_deref() {
        None => None,
        Some("ipsec") => Some(Flavour::Ipsec),
        Some("swanctl") => Some(Flavour::Swanctl),
        Some(other) => return Err(args.invalid("tool", format!("expected `ipsec` or `swanctl`, found `{other}`"))),
    };
    let host = Host::of(args);
    // A remote login user's uid is known only once the host is asked.
    let sudo = opts.sudo.or_else(|| {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        host.remote().is_none().then_some(!root)
    });
    Ok(Box::new(StrongSwan {
        host,
        flavour,
        sudo,
        runner: None,
        known: Vec::new(),
        said_missing: false,
    }))
}

/// The one command that asks a remote host for its login user's uid (first
/// line) and which strongSwan tools its shell finds, one name a line, in
/// the order the local search prefers them; on the `PATH` a remote
/// [`Tool`] runs them with.
fn probe_command() -> String {
    let names = Flavour::PREFERRED.map(Flavour::program);
    let script = format!(
        "PATH=\"$PATH:{}\"; id -u; for t in {}; do command -v \"$t\" >/dev/null 2>&1 && echo \"$t\"; done; exit 0",
        SBIN_DIRS.join(":"),
        names.join(" ")
    );
    duct_ssh::command_line("sh", &["-c", &script])
}

/// What the probe found: whether the login user is root, and the tools
/// installed, preferred first. `None` when the first line is no uid (no
/// POSIX shell there, or `id` missing).
pub(crate) fn parse_probe(text: &str) -> Option<(bool, Vec<Flavour>)> {
    let mut lines = text.lines().map(str::trim);
    let uid: u32 = lines.next()?.parse().ok()?;
    let mut found: Vec<Flavour> = lines
        .filter_map(|l| Flavour::PREFERRED.into_iter().find(|f| f.program() == l))
        .collect();
    found.dedup();
    Some((uid == 0, found))
}

/// Tunnels and whether each is up, in the order strongSwan lists them.
pub(crate) type Tunnels<'a> = Vec<(&'a str, bool)>;

/// Records an IKE SA of `name`: a connection is up if any of its SAs is.
fn mark<'a>(tunnels: &mut Tunnels<'a>, name: &'a str, up: bool) {
    match tunnels.iter_mut().find(|(n, _)| *n == name) {
        Some((_, u)) => *u |= up,
        None => tunnels.push((name, up)),
    }
}

/// The connections of `ipsec statusall` and whether an IKE SA of each is
/// `ESTABLISHED` (`  name[12]: ESTABLISHED 2 hours ago, …` under
/// `Security Associations`). An SA of a connection the `Connections:` list
/// lacks counts as a tunnel too.
pub(crate) fn parse_statusall(text: &str) -> Tunnels<'_> {
    #[derive(PartialEq)]
    enum Section {
        Other,
        Connections,
        Sas,
    }
    let mut section = Section::Other;
    let mut tunnels: Tunnels<'_> = Vec::new();
    for line in text.lines() {
        if !line.starts_with([' ', '\t']) {
            section = if line.starts_with("Connections:") {
                Section::Connections
            } else if line.starts_with("Security Associations") {
                Section::Sas
            } else {
                Section::Other
            };
            continue;
        }
        let Some((head, detail)) = line.trim_start().split_once(':') else {
            continue;
        };
        match section {
            Section::Connections if !tunnels.iter().any(|(n, _)| *n == head) => tunnels.push((head, false)),
            Section::Sas => {
                // `name[N]` is an IKE SA, `name{N}` a child SA.
                let Some(name) = head.strip_suffix(']').and_then(|h| h.split_once('[')).map(|(n, _)| n) else {
                    continue;
                };
                mark(&mut tunnels, name, detail.trim_start().starts_with("ESTABLISHED"));
            }
            _ => {}
        }
    }
    tunnels
}

/// The same from swanctl: connection names are the unindented lines of
/// `--list-conns`; `--list-sas` starts each IKE SA with `name: #12,
/// ESTABLISHED, IKEv2, …`.
pub(crate) fn parse_swanctl<'a>(conns: &'a str, sas: &'a str) -> Tunnels<'a> {
    let top = |text: &'a str| {
        text.lines()
            .filter(|l| !l.starts_with([' ', '\t']))
            .filter_map(|l| l.split_once(':'))
    };
    let mut tunnels: Tunnels<'a> = Vec::new();
    for (name, _) in top(conns) {
        if !tunnels.iter().any(|(n, _)| *n == name) {
            tunnels.push((name, false));
        }
    }
    for (name, detail) in top(sas) {
        mark(&mut tunnels, name, detail.split(',').any(|f| f.trim() == "ESTABLISHED"));
    }
    tunnels
}

pub(crate) struct StrongSwan {
    /// This machine, or the remote host the tool runs on.
    host: Host,
    /// Configured, or found at the first tick that finds one.
    flavour: Option<Flavour>,
    /// Configured, or decided by whether the tool's user is root: ductd's
    /// here (at once), the login user's there (once the host is asked).
    sudo: Option<bool>,
    /// `sudo` or the strongSwan tool itself, once the flavour is known.
    runner: Option<Tool>,
    /// Tunnels of the last successful reading, reported down when the
    /// daemon stops answering.
    known: Vec<String>,
    /// Neither tool is installed (or the remote host could not tell), and
    /// that has been logged.
    said_missing: bool,
}

impl StrongSwan {
    /// Runs one strongSwan command; `None` when it could not run or
    /// failed (after a warning, once).
    async fn run(
        &mut self,
        ctx: &SourceContext,
        flavour: Flavour,
        sudo: bool,
        args: &[&str],
    ) -> Result<Option<String>, SourceError> {
        let host = &self.host;
        let runner = self.runner.get_or_insert_with(|| {
            let tool = if sudo {
                Tool::new("sudo", "sudo")
            } else {
                Tool::new(flavour.program(), flavour.package())
            };
            tool.on(host)
        });
        let mut full = Vec::with_capacity(args.len() + 2);
        if sudo {
            // -n: fail at once rather than wait for a password until the timeout.
            full.extend(["-n", flavour.program()]);
        }
        full.extend_from_slice(args);
        let Some(out) = runner.run(ctx, &full).await? else {
            return Ok(None);
        };
        if out.code != Some(0) {
            let why = first_line(if out.stderr.trim().is_empty() {
                &out.stdout
            } else {
                &out.stderr
            });
            runner.warn(ctx, format_args!("`{}` failed ({:?}): {why}", full.join(" "), out.code));
            return Ok(None);
        }
        Ok(Some(out.stdout))
    }

    /// The tool to run and whether through sudo: as configured, else
    /// found here, or asked of the remote host, until one is installed.
    async fn detect(&mut self, ctx: &SourceContext) -> Result<Option<(Flavour, bool)>, SourceError> {
        if let (Some(flavour), Some(sudo)) = (self.flavour, self.sudo) {
            return Ok(Some((flavour, sudo)));
        }
        let found = match self.host.remote() {
            None => Flavour::PREFERRED
                .into_iter()
                .find(|f| find_program(f.program()).is_some()),
            Some(remote) => {
                let conn = remote.connection();
                let out = conn.exec(&probe_command(), remote.timeout(), FORK_OUTPUT_LIMIT).await?;
                let Some((root, installed)) = parse_probe(&out.stdout) else {
                    if !std::mem::replace(&mut self.said_missing, true) {
                        let why = [&out.stderr, &out.stdout]
                            .map(|t| first_line(t))
                            .into_iter()
                            .find(|l| !l.is_empty())
                            .unwrap_or("no output");
                        tracing::warn!(service = %ctx.service(), "cannot tell which strongSwan tool {} has: the answer to `id -u` and `command -v` did not start with a uid ({why}; exit status {:?}); no events until it does", conn.target().label(), out.code);
                    }
                    return Ok(None);
                };
                self.sudo.get_or_insert(!root);
                installed.first().copied()
            }
        };
        let detected = self.flavour.is_none();
        self.flavour = self.flavour.or(found);
        let place = match self.host.remote() {
            Some(r) => format!(" on {}", r.connection().target().label()),
            None => String::new(),
        };
        match (self.flavour, self.sudo) {
            (Some(flavour), Some(sudo)) => {
                if detected {
                    let how = match flavour {
                        Flavour::Ipsec => "`ipsec statusall`",
                        Flavour::Swanctl => "`swanctl --list-conns` and `--list-sas`",
                    };
                    let sudo = if sudo { "through sudo" } else { "without sudo" };
                    tracing::info!(service = %ctx.service(), "tunnels read with {how}{place}, {sudo} (set `tool` to choose)");
                }
                Ok(Some((flavour, sudo)))
            }
            _ => {
                if !std::mem::replace(&mut self.said_missing, true) {
                    tracing::warn!(service = %ctx.service(), "neither `ipsec` nor `swanctl` is installed{place} (Debian packages strongswan-starter, strongswan-swanctl): no events until one is");
                }
                Ok(None)
            }
        }
    }

    async fn tick(&mut self, ctx: &SourceContext) -> Result<Vec<Event>, SourceError> {
        let Some((flavour, sudo)) = self.detect(ctx).await? else {
            return Ok(Vec::new());
        };
        let outputs = match flavour {
            Flavour::Ipsec => self
                .run(ctx, flavour, sudo, &["statusall"])
                .await?
                .map(|s| (s, String::new())),
            Flavour::Swanctl => match self.run(ctx, flavour, sudo, &["--list-conns"]).await? {
                Some(conns) => self
                    .run(ctx, flavour, sudo, &["--list-sas"])
                    .await?
                    .map(|sas| (conns, sas)),
                None => None,
            },
        };
        let tunnels: Vec<(String, bool)> = match &outputs {
            Some((first, second)) => {
                if let Some(r) = self.runner.as_mut() {
                    r.worked(ctx);
                }
                let parsed = match flavour {
                    Flavour::Ipsec => parse_statusall(first),
                    Flavour::Swanctl => parse_swanctl(first, second),
                };
                let owned: Vec<(String, bool)> = parsed.into_iter().map(|(n, up)| (n.to_string(), up)).collect();
                self.known = owned.iter().map(|(n, _)| n.clone()).collect();
                owned
            }
            // The tool exists but did not answer: the daemon is down, and
            // every tunnel with it.
            None if self.runner.as_mut().is_some_and(Tool::is_installed) => {
                self.known.iter().map(|n| (n.clone(), false)).collect()
            }
            None => Vec::new(),
        };
        Ok(tunnels
            .into_iter()
            .map(|(name, up)| {
                if up {
                    ctx.create_event_prefixed(&name, "ok", format!("IPSec tunnel {name} up"), 1)
                } else {
                    ctx.create_event_prefixed(&name, "critical", format!("IPSec tunnel {name} down"), 0)
                }
            })
            .collect())
    }
}

impl Source for StrongSwan {
    fn get<'a>(&'a mut self, ctx: &'a SourceContext) -> Poll<'a> {
        Box::pin(self.tick(ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::testing::Scratch;
    use crate::linux::HostPaths;
    use crate::testing::context;
    use duct_core::Metric;

    const STATUSALL: &str = include_str!("../../tests/fixtures/linux/ipsec-statusall");
    const CONNS: &str = include_str!("../../tests/fixtures/linux/swanctl-list-conns");
    const SAS: &str = include_str!("../../tests/fixtures/linux/swanctl-list-sas");

    #[test]
    fn statusall_lists_connections_and_their_ike_state() {
        assert_eq!(
            parse_statusall(STATUSALL),
            [("site-a", true), ("site-b", false), ("roadwarr", false)]
        );
        // Listening addresses hold colons but are no connections.
        assert!(parse_statusall("Listening IP addresses:\n  2001:db8::1\n").is_empty());
        // An SA whose connection is not listed is still a tunnel.
        assert_eq!(
            parse_statusall("Security Associations (1 up, 0 connecting):\n   x[1]: ESTABLISHED 1 second ago\n"),
            [("x", true)]
        );
    }

    #[test]
    fn swanctl_lists_connections_and_their_ike_state() {
        assert_eq!(
            parse_swanctl(CONNS, SAS),
            [("site-a", true), ("site-b", false), ("roadwarr", false)]
        );
        assert_eq!(
            parse_swanctl(CONNS, ""),
            [("site-a", false), ("site-b", false), ("roadwarr", false)]
        );
    }

    /// An executable script in `dir` called `name`.
    fn script(dir: &Scratch, name: &str, body: &str) -> String {
        dir.write(name, &format!("#!/bin/sh\n{body}\n"));
        let path = dir.0.join(name);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.to_str().unwrap().to_string()
    }

    fn source(runner: String, flavour: Flavour, sudo: bool) -> StrongSwan {
        StrongSwan {
            host: Host::from(&HostPaths::from_vars(|_| None)),
            flavour: Some(flavour),
            sudo: Some(sudo),
            runner: Some(Tool::new(runner, "test")),
            known: Vec::new(),
            said_missing: false,
        }
    }

    #[test]
    fn the_remote_probe_gives_the_user_and_the_tools_preferred_first() {
        assert_eq!(
            parse_probe("0\nipsec\nswanctl\n"),
            Some((true, vec![Flavour::Ipsec, Flavour::Swanctl]))
        );
        assert_eq!(parse_probe("1000\nswanctl\n"), Some((false, vec![Flavour::Swanctl])));
        // Neither installed: the host answered, with no tool.
        assert_eq!(parse_probe("0\n"), Some((true, vec![])));
        // A login banner or a shell that is not POSIX: no answer at all.
        assert_eq!(parse_probe("Welcome!\nipsec\n"), None);
        assert_eq!(parse_probe(""), None);
        // A name it did not ask about is no tool.
        assert_eq!(parse_probe("0\n/usr/sbin/ipsec\n"), Some((true, vec![])));
    }

    /// The probe run here, as a remote shell would run it, finds what
    /// `find_program` finds and the same uid.
    #[test]
    fn the_remote_probe_agrees_with_the_local_search() {
        let out = std::process::Command::new("sh")
            .args(["-c", &probe_command()])
            .output()
            .unwrap();
        let (root, found) = parse_probe(&String::from_utf8_lossy(&out.stdout)).expect("a uid first");
        // SAFETY: geteuid has no preconditions and cannot fail.
        assert_eq!(root, unsafe { libc::geteuid() } == 0);
        let here: Vec<Flavour> = Flavour::PREFERRED
            .into_iter()
            .filter(|f| find_program(f.program()).is_some())
            .collect();
        assert_eq!(found, here);
    }

    #[tokio::test]
    async fn reports_tunnels_and_all_down_when_the_daemon_stops() {
        let dir = Scratch::new("ipsec");
        dir.write("statusall", STATUSALL);
        // A fake sudo that checks it was asked for `-n ipsec statusall`,
        // then fails once the "daemon" is stopped.
        let sudo = script(
            &dir,
            "sudo",
            &format!(
                "[ -e {d}/stopped ] && {{ echo 'connecting to unix:///var/run/charon.ctl failed' >&2; exit 7; }}\n[ \"$*\" = '-n ipsec statusall' ] && exec cat {d}/statusall\nexit 9",
                d = dir.0.display()
            ),
        );
        let (ctx, _) = context("vpn");
        let mut src = source(sudo, Flavour::Ipsec, true);
        let events = src.get(&ctx).await.unwrap();
        let got: Vec<(&str, &str, Option<Metric>)> = events
            .iter()
            .map(|e| (e.service.as_str(), e.state.as_deref().unwrap_or(""), e.metric))
            .collect();
        assert_eq!(
            got,
            [
                ("vpn.site-a", "ok", Some(Metric::Int(1))),
                ("vpn.site-b", "critical", Some(Metric::Int(0))),
                ("vpn.roadwarr", "critical", Some(Metric::Int(0))),
            ]
        );
        assert_eq!(events[0].description, "IPSec tunnel site-a up");
        assert_eq!(events[1].description, "IPSec tunnel site-b down");

        dir.write("stopped", "");
        let events = src.get(&ctx).await.unwrap();
        assert_eq!(events.len(), 3);
        assert!(events.iter().all(|e| e.state.as_deref() == Some("critical")));
    }

    #[tokio::test]
    async fn asks_swanctl_for_connections_and_sas() {
        let dir = Scratch::new("swanctl");
        dir.write("conns", CONNS);
        dir.write("sas", SAS);
        let swanctl = script(
            &dir,
            "swanctl",
            &format!(
                "case \"$1\" in --list-conns) cat {d}/conns ;; --list-sas) cat {d}/sas ;; *) exit 2 ;; esac",
                d = dir.0.display()
            ),
        );
        let (ctx, _) = context("vpn");
        let events = source(swanctl, Flavour::Swanctl, false).get(&ctx).await.unwrap();
        let up: Vec<(&str, bool)> = events
            .iter()
            .map(|e| (e.service.as_str(), e.metric == Some(Metric::Int(1))))
            .collect();
        assert_eq!(
            up,
            [("vpn.site-a", true), ("vpn.site-b", false), ("vpn.roadwarr", false)]
        );
    }

    #[tokio::test]
    async fn without_the_tools_there_are_no_events() {
        let (ctx, _) = context("vpn");
        let mut src = source("/nonexistent/ipsec".into(), Flavour::Ipsec, false);
        assert!(src.get(&ctx).await.unwrap().is_empty());
    }
}
