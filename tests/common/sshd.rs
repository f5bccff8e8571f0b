//! OpenSSH's `sshd` for the remote-check tests: keys made by `ssh-keygen`
//! in a temporary directory, a configuration written there, the daemon on
//! a free loopback port in the foreground (`-D -e`), its log kept to count
//! logins. Run as root, as the tests' user logs in as root. With a
//! password, sshd runs in a mount namespace of its own whose `/etc/shadow`
//! gives root that password, so the machine's accounts are left alone; a
//! test can also give it a `/run` of its own (a daemon's pid files).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, require_binary, require_root, wait_for_port, TempDir};

/// Keys for a test: the host's and the user's, plain and encrypted.
pub struct SshKeys {
    pub dir: TempDir,
    /// The host's private key file (for `HostKey`).
    pub host_key: PathBuf,
    /// `ssh-ed25519 AAAA…`, the host's public key.
    pub host_public: String,
    /// Another host key, for entries that must not match.
    pub other_public: String,
    /// The user's ed25519 key, unencrypted.
    pub user_key: PathBuf,
    /// The user's RSA key, encrypted with [`SshKeys::PASSPHRASE`].
    pub user_key_encrypted: PathBuf,
    /// The public halves, for `authorized_keys`.
    pub authorized: String,
}

impl SshKeys {
    pub const PASSPHRASE: &'static str = "duct test passphrase";

    /// Makes the keys; `None` (after saying why) without OpenSSH or root.
    pub fn make(tag: &str) -> Option<SshKeys> {
        require_binary("sshd", "openssh-server")?;
        let keygen = require_binary("ssh-keygen", "openssh-client")?;
        if !require_root("sshd tests log in as root and need to run as root") {
            return None;
        }
        let dir = TempDir::new(tag);
        let gen = |name: &str, kind: &str, pass: &str| generate_key(&keygen, dir.path(), name, kind, pass);
        let host_key = gen("host_ed25519", "ed25519", "");
        let other = gen("other_ed25519", "ed25519", "");
        let user_key = gen("user_ed25519", "ed25519", "");
        let user_key_encrypted = gen("user_rsa", "rsa", Self::PASSPHRASE);
        let authorized = format!("{}\n{}\n", public_key(&user_key), public_key(&user_key_encrypted));
        Some(SshKeys {
            host_public: public_key(&host_key),
            other_public: public_key(&other),
            host_key,
            user_key,
            user_key_encrypted,
            authorized,
            dir,
        })
    }
}

/// A private key of `kind` (ed25519, ecdsa, rsa) made by `ssh-keygen` as
/// `dir/name`, encrypted with `pass` unless it is empty.
pub fn generate_key(keygen: &Path, dir: &Path, name: &str, kind: &str, pass: &str) -> PathBuf {
    let path = dir.join(name);
    let ok = Command::new(keygen)
        .args(["-q", "-t", kind, "-N", pass, "-C", "", "-f"])
        .arg(&path)
        .status()
        .expect("run ssh-keygen")
        .success();
    assert!(ok, "ssh-keygen {name}");
    path
}

/// `TYPE BASE64` of the key whose private half is at `private`.
pub fn public_key(private: &Path) -> String {
    let text = std::fs::read_to_string(private.with_extension("pub")).expect("public key");
    text.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

/// A running sshd, killed with its sessions when dropped.
pub struct Sshd {
    child: Option<Child>,
    pub port: u16,
    pub dir: TempDir,
    config: PathBuf,
    log: PathBuf,
    /// Root's password inside sshd's namespace, if any.
    password: Option<String>,
    /// What sshd's namespace sees as `/run`, if not the machine's.
    run: Option<PathBuf>,
}

/// What the host sshd stands in for has beyond the keys: each is
/// optional.
#[derive(Default)]
pub struct Host<'a> {
    /// Root's password, allowed as a login.
    pub password: Option<&'a str>,
    /// (name, value) set in every session (`SetEnv`), as a host's own
    /// login environment would set them.
    pub env: &'a [(&'a str, &'a str)],
    /// A directory mounted on `/run` for sshd and its sessions, as the
    /// host of a daemon whose pid files are there.
    pub run: Option<&'a Path>,
}

impl Sshd {
    /// sshd with `keys`, on a free port; `password` lets root log in with it.
    pub fn start(keys: &SshKeys, tag: &str, password: Option<&str>) -> Sshd {
        Self::start_as(
            keys,
            tag,
            Host {
                password,
                ..Host::default()
            },
        )
    }

    /// sshd with `keys`, on a free port, standing in for `host`.
    pub fn start_as(keys: &SshKeys, tag: &str, host: Host) -> Sshd {
        let Host { password, env, run } = host;
        let dir = TempDir::new(tag);
        let port = free_port();
        let d = dir.path();
        std::fs::write(d.join("authorized_keys"), &keys.authorized).expect("authorized_keys");
        let config = dir.write(
            "sshd_config",
            &format!(
                "Port {port}\n\
                 ListenAddress 127.0.0.1\n\
                 HostKey {host_key}\n\
                 PidFile {d}/sshd.pid\n\
                 AuthorizedKeysFile {d}/authorized_keys\n\
                 StrictModes no\n\
                 UsePAM no\n\
                 PermitRootLogin yes\n\
                 PasswordAuthentication {pw}\n\
                 KbdInteractiveAuthentication no\n\
                 PubkeyAuthentication yes\n\
                 PrintMotd no\n\
                 LogLevel VERBOSE\n\
                 MaxStartups 200\n\
                 {set_env}",
                host_key = keys.host_key.display(),
                d = d.display(),
                pw = if password.is_some() { "yes" } else { "no" },
                set_env = env
                    .iter()
                    .map(|(name, value)| format!("SetEnv {name}=\"{value}\"\n"))
                    .collect::<String>(),
            ),
        );
        if let Some(pw) = password {
            write_shadow(&dir, pw);
        }
        let mut sshd = Sshd {
            child: None,
            port,
            log: d.join("sshd.log"),
            config,
            password: password.map(String::from),
            run: run.map(Path::to_path_buf),
            dir,
        };
        sshd.launch();
        sshd
    }

    fn launch(&mut self) {
        // The privilege-separation directory sshd insists on.
        std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        let sshd = require_binary("sshd", "openssh-server").expect("sshd was found before");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("sshd log");
        // Files of the host mounted over the machine's, in a mount
        // namespace of sshd's own: (what, where).
        let mut binds: Vec<(PathBuf, &str)> = Vec::new();
        if self.password.is_some() {
            binds.push((self.dir.path().join("shadow"), "/etc/shadow"));
        }
        if let Some(run) = &self.run {
            binds.push((run.clone(), "/run"));
        }
        let mut cmd = if binds.is_empty() {
            Command::new(&sshd)
        } else {
            // Pairs of arguments, then `--` and the program; the
            // privilege-separation directory again under a new /run.
            let mut c = Command::new("unshare");
            c.args([
                "-m",
                "sh",
                "-c",
                r#"while [ "$1" != -- ]; do mount --bind "$1" "$2" || exit 1; shift 2; done; shift; mkdir -p /run/sshd && exec "$@""#,
                "sh",
            ]);
            for (what, place) in &binds {
                c.arg(what).arg(place);
            }
            c.arg("--").arg(&sshd);
            c
        };
        cmd.arg("-D").arg("-e").arg("-f").arg(&self.config);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start sshd");
        self.child = Some(child);
        assert!(
            wait_for_port(self.port, Duration::from_secs(30)),
            "sshd did not listen on port {}:\n{}",
            self.port,
            self.log_text()
        );
    }

    /// Kills the daemon and every session it forked (as a host going down
    /// would), then waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Stopped first, the listener forks no session while its family
            // is listed: one forked between the listing and its death
            // would live on, orphaned, and hold a client's new connection.
            // SAFETY: kill(2) on our own child's pid, not reaped yet.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGSTOP);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while !is_stopped(child.id()) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            let mut family = descendants(child.id());
            family.push(child.id());
            for pid in family {
                // SAFETY: kill(2) on processes this test started.
                unsafe {
                    libc::kill(pid as i32, libc::SIGKILL);
                }
            }
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same keys.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(30);
        // The port is free once the old listener is gone.
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.launch();
    }

    /// The top-level options that let ductd log in here as root with the
    /// user's plain key, a known_hosts file trusting this daemon written
    /// into `dir`; for a test of another source run over SSH.
    pub fn globals(&self, keys: &SshKeys, dir: &TempDir) -> String {
        let kh = dir.write("known_hosts", &self.known_hosts_line(&keys.host_public));
        format!(
            "ssh_username: root\nssh_keyfile: {}\nssh_knownhosts_file: {}\n",
            keys.user_key.display(),
            kh.display()
        )
    }

    /// The options of a source block that make it run here over SSH, with
    /// a timeout of 30 s: the commands of one connection take turns, and
    /// waiting for its turn counts against a source's timeout, which would
    /// otherwise be 90 % of a 1 s interval on a loaded machine.
    pub fn source_options(&self) -> String {
        format!(
            "use_ssh: true, ssh_host: 127.0.0.1, ssh_port: {}, timeout: 30",
            self.port
        )
    }

    /// `[127.0.0.1]:port key`, the known_hosts line for this daemon.
    pub fn known_hosts_line(&self, public: &str) -> String {
        format!("[127.0.0.1]:{} {public}\n", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Logins accepted so far: one per SSH connection.
    /// Lets the keys whose private halves are `keys` log in too (sshd
    /// reads `authorized_keys` at each login).
    pub fn authorize(&self, keys: &[&Path]) {
        let file = self.dir.path().join("authorized_keys");
        let mut text = std::fs::read_to_string(&file).expect("authorized_keys");
        for key in keys {
            text.push_str(&public_key(key));
            text.push('\n');
        }
        std::fs::write(&file, text).expect("authorized_keys");
    }

    pub fn logins(&self) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.starts_with("Accepted ") && l.contains(" for "))
            .count()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A copy of `/etc/shadow` in `dir` whose root entry has `password`.
fn write_shadow(dir: &TempDir, password: &str) {
    let out = Command::new("openssl")
        .args(["passwd", "-6", password])
        .output()
        .expect("run openssl passwd (Debian package openssl)");
    assert!(out.status.success(), "openssl passwd");
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let current = std::fs::read_to_string("/etc/shadow").unwrap_or_default();
    let mut lines: Vec<String> = current
        .lines()
        .filter(|l| !l.starts_with("root:"))
        .map(String::from)
        .collect();
    lines.insert(0, format!("root:{hash}:19000:0:99999:7:::"));
    let path = dir.write("shadow", &(lines.join("\n") + "\n"));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("shadow mode");
}

/// Every process below `pid`, by parent links in `/proc`.
/// Whether process `pid` is stopped by a signal (or gone).
fn is_stopped(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "T" || state == "Z"),
        Err(_) => true,
    }
}

fn descendants(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(p) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
            if let Some(ppid) = after.split_whitespace().nth(1).and_then(|f| f.parse().ok()) {
                parents.push((p, ppid));
            }
        }
    }
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(parents.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    found.remove(0);
    found
}
