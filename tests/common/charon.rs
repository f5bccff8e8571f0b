//! strongSwan's IKE daemon for the IPsec tests, in a temporary directory:
//! a `strongswan.conf` written there (charon, `swanctl`, `ipsec` and its
//! `stroke` all find it through `STRONGSWAN_CONF`), IKE on free UDP ports,
//! the vici and stroke sockets in the directory, only the plugins a
//! pre-shared-key IKE SA needs, no routes.
//!
//! charon's pid file is compiled in as `/var/run/charon.pid`, and a second
//! daemon refuses to start while it names a live process; so each daemon
//! runs in a mount namespace of its own whose `/run` is a directory of the
//! test, and tests run in parallel. `ipsec statusall` reads the pid files
//! there too, so it is run in the same kind of namespace
//! ([`Charon::in_namespace`]).
//!
//! The connections, loaded through vici: `east` (127.0.0.1 to 127.0.0.2)
//! and its mirror `west`, so that initiating `east` makes this one daemon
//! both ends and both IKE SAs ESTABLISHED; they are childless (no kernel
//! SA, which a container may not allow); and `dead`, towards 127.0.0.3
//! where nothing answers, initiated and left CONNECTING.
//! Run as root (charon and `unshare -m` need it), else skipped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{require_binary, require_root, TempDir};

/// What runs the daemon.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Launch {
    /// charon alone, as `charon-systemd` or a unit file runs it beside
    /// swanctl.
    Charon,
    /// `starter` (strongswan-starter, what `ipsec start` runs) starting
    /// charon: `ipsec statusall` reports a failure without it.
    Starter,
}

/// The pre-shared key of every connection.
const PSK: &str = "duct test psk";

/// A running charon with the connections above, killed when dropped.
pub struct Charon {
    /// `unshare`, having become charon or starter.
    child: Option<Child>,
    pub dir: TempDir,
    /// Its `strongswan.conf`, for `STRONGSWAN_CONF`.
    pub conf: PathBuf,
    /// What its namespace sees as `/run`: the pid files.
    run: PathBuf,
    swanctl: PathBuf,
    unshare: PathBuf,
    launch: Launch,
    log: PathBuf,
}

impl Charon {
    /// The daemon with its connections, `east` and `west` established and
    /// `dead` connecting; `None` (after saying why) without strongSwan or
    /// root.
    pub fn start(tag: &str, launch: Launch) -> Option<Charon> {
        let charon = require_binary("charon", "strongswan-charon")?;
        let swanctl = require_binary("swanctl", "strongswan-swanctl")?;
        let unshare = require_binary("unshare", "util-linux")?;
        let starter = match launch {
            Launch::Charon => None,
            Launch::Starter => Some(require_binary("starter", "strongswan-starter")?),
        };
        if !require_root("charon and its mount namespace need root") {
            return None;
        }
        let dir = TempDir::new(tag);
        let d = dir.path().display().to_string();
        let (port, nat_port, nobody) = (free_udp_port(), free_udp_port(), free_udp_port());
        let conf = dir.write(
            "strongswan.conf",
            &format!(
                "charon {{
  load = random nonce aes sha1 sha2 hmac kdf gmp pem pkcs1 x509 pubkey kernel-netlink socket-default vici stroke
  port = {port}
  port_nat_t = {nat_port}
  install_routes = no
  install_virtual_ip = no
  filelog {{
    stderr {{
      default = 1
    }}
  }}
  plugins {{
    vici {{
      socket = unix://{d}/charon.vici
    }}
    stroke {{
      socket = unix://{d}/charon.ctl
      secrets_file = {d}/ipsec.secrets
    }}
  }}
}}
swanctl {{
  socket = unix://{d}/charon.vici
  # Listing needs no plugin: this keeps the missing ones out of its stderr.
  load = pem
}}
starter {{
  load_warning = no
}}
"
            ),
        );
        dir.write("ipsec.secrets", "");
        let ipsec_conf = dir.write("ipsec.conf", "config setup\n");
        let connection = |name: &str, local: &str, remote: &str, remote_port: u16| {
            format!(
                "  {name} {{
    local_addrs = {local}
    remote_addrs = {remote}
    remote_port = {remote_port}
    proposals = aes128-sha256-modp2048
    childless = force
    local {{
      auth = psk
    }}
    remote {{
      auth = psk
    }}
  }}
"
            )
        };
        dir.write(
            "swanctl.conf",
            &format!(
                "connections {{
{}{}{}}}
secrets {{
  ike-test {{
    id-1 = 127.0.0.1
    id-2 = 127.0.0.2
    id-3 = 127.0.0.3
    secret = \"{PSK}\"
  }}
}}
",
                connection("east", "127.0.0.1", "127.0.0.2", port),
                connection("west", "127.0.0.2", "127.0.0.1", port),
                connection("dead", "127.0.0.1", "127.0.0.3", nobody),
            ),
        );
        let run = dir.path().join("run");
        std::fs::create_dir_all(&run).expect("create the namespace's /run");
        let log = dir.path().join("charon.log");
        let mut c = Charon {
            child: None,
            conf,
            run,
            swanctl,
            unshare,
            launch,
            log,
            dir,
        };
        let mut cmd = c.in_namespace(starter.as_deref().unwrap_or(&charon));
        if launch == Launch::Starter {
            cmd.arg("--nofork").arg("--conf").arg(&ipsec_conf);
        }
        let log = std::fs::File::create(&c.log).expect("charon log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("charon log"))
            .stderr(log)
            .spawn()
            .expect("start charon");
        c.child = Some(child);
        c.wait_until_answering();
        c.swanctl_ok(&["--load-all", "--file", &format!("{d}/swanctl.conf")]);
        c.swanctl_ok(&["--initiate", "--ike", "east", "--timeout", "20"]);
        // Nothing answers there: the initiation gives up waiting, the SA
        // stays CONNECTING (retransmitting for minutes).
        c.swanctl(&["--initiate", "--ike", "dead", "--timeout", "1"]);
        for (name, state) in [("east", "ESTABLISHED"), ("west", "ESTABLISHED"), ("dead", "CONNECTING")] {
            let sas = c.swanctl_ok(&["--list-sas", "--ike", name]);
            assert!(
                sas.contains(&format!("{name}: #")) && sas.contains(state),
                "{name} is not {state}:\n{sas}\n{}",
                c.log_text()
            );
        }
        Some(c)
    }

    /// `program` run in a mount namespace whose `/run` is this daemon's,
    /// with `STRONGSWAN_CONF` pointing at its configuration.
    pub fn in_namespace(&self, program: &Path) -> Command {
        let mut cmd = Command::new(&self.unshare);
        cmd.args([
            "-m",
            "sh",
            "-c",
            r#"mount --bind "$1" /run && shift && exec "$@""#,
            "sh",
        ])
        .arg(&self.run)
        .arg(program)
        .env("STRONGSWAN_CONF", &self.conf);
        cmd
    }

    /// What the daemon's namespace sees as `/run`, for another program
    /// that must see its pid files (sshd, for `ipsec` over SSH).
    pub fn run_dir(&self) -> &Path {
        &self.run
    }

    /// `swanctl` with `args` against this daemon.
    pub fn swanctl(&self, args: &[&str]) -> Output {
        Command::new(&self.swanctl)
            .args(args)
            .env("STRONGSWAN_CONF", &self.conf)
            .output()
            .expect("run swanctl")
    }

    /// Its standard output, after checking that it succeeded.
    fn swanctl_ok(&self, args: &[&str]) -> String {
        let out = self.swanctl(args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "swanctl {args:?}: {text}{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        text
    }

    fn wait_until_answering(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.swanctl(&["--stats"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "charon did not answer on its vici socket:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's pid, from its pid file.
    fn charon_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.run.join("charon.pid"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
    }

    /// Kills charon as a crash would (SIGKILL): its sockets and pid file
    /// stay behind, nothing answers on them. Under starter, starter is
    /// killed first (it would start charon again), then its charon, which
    /// lives on without it.
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let orphan = match self.launch {
            Launch::Charon => None,
            Launch::Starter => self.charon_pid(),
        };
        let _ = child.kill();
        let _ = child.wait();
        if let Some(pid) = orphan {
            // SAFETY: kill(2) on the charon this helper's starter started
            // (its pid file is in the test's directory), still alive and
            // so still that process.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.swanctl(&["--stats"]).status.success() {
            assert!(Instant::now() < deadline, "charon still answers after SIGKILL");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Charon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A UDP port nobody has bound right now (IKE is UDP).
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free UDP port")
}
