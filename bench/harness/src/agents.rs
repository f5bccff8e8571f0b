//! Starting and stopping the programs under test: ductd, Duct 2.2.1,
//! collectd and node_exporter, each in the foreground with its own
//! configuration in the run's scratch directory, its output in a log file
//! there, and stopped with SIGTERM (then SIGKILL) when the scenario ends.

use std::fs::File;
use std::io;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A scratch directory for one harness run, removed at the end unless
/// `--keep` asked otherwise.
pub struct Scratch {
    dir: PathBuf,
    keep: bool,
}

impl Scratch {
    pub fn new(keep: bool) -> io::Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("ductd-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Scratch { dir, keep })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn write(&self, name: &str, text: &str) -> io::Result<PathBuf> {
        let path = self.path(name);
        std::fs::write(&path, text)?;
        Ok(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("scratch directory kept: {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A program under test, running.
pub struct Running {
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
    /// Wall-clock seconds since the epoch when it was spawned.
    pub spawned_at: f64,
    pub spawned: Instant,
}

pub fn wall_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Running {
    /// Spawns `cmd` with stdout and stderr to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> io::Result<Running> {
        let out = File::create(&log)?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let spawned_at = wall_now();
        let spawned = Instant::now();
        let child = cmd
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start {name}: {e}")))?;
        Ok(Running {
            name: name.to_string(),
            child: Some(child),
            log,
            spawned_at,
            spawned,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Fails with the end of its log if the program has exited.
    pub fn check_alive(&mut self) -> io::Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Err(io::Error::other(format!("{} was stopped", self.name)));
        };
        match child.try_wait()? {
            None => Ok(()),
            Some(status) => Err(io::Error::other(format!(
                "{} exited ({status}); the end of its log:\n{}",
                self.name,
                self.log_tail(20)
            ))),
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Waits until something accepts connections on `port`.
    pub fn wait_for_port(&mut self, port: u16, within: Duration) -> io::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            self.check_alive()?;
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{} did not listen on port {port} within {within:?}", self.name),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: signals our own child, which has not been reaped.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// The page a Prometheus exporter (node_exporter, mtail) serves on
/// `127.0.0.1:port/metrics`, without its HTTP header.
pub fn scrape_metrics(port: u16) -> io::Result<String> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    answer
        .split_once("\r\n\r\n")
        .map(|(_, page)| page.to_string())
        .ok_or_else(|| io::Error::other("no HTTP body"))
}

/// A TCP port nobody listens on now.
pub fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Where the programs under test are.
#[derive(Debug, Clone)]
pub struct Programs {
    pub ductd: PathBuf,
    /// The Python of a virtualenv holding ducted 2.2.1.
    pub duct_python: Option<PathBuf>,
    pub collectd: Option<PathBuf>,
    pub node_exporter: Option<PathBuf>,
    /// The receiver of the NATS output's throughput figure.
    pub nats_server: Option<PathBuf>,
    pub mtail: Option<PathBuf>,
}

impl Programs {
    pub fn ductd(&self, config: &Path, scratch: &Scratch, tag: &str) -> io::Result<Running> {
        let mut cmd = Command::new(&self.ductd);
        cmd.arg("-c").arg(config);
        Running::spawn("ductd", cmd, scratch.path(&format!("ductd-{tag}.log")))
    }

    pub fn duct(&self, config: &Path, scratch: &Scratch, tag: &str) -> Option<io::Result<Running>> {
        let python = self.duct_python.as_ref()?;
        let mut cmd = Command::new(python);
        cmd.args(["-m", "duct", "-c"]).arg(config);
        Some(Running::spawn("duct", cmd, scratch.path(&format!("duct-{tag}.log"))))
    }

    pub fn collectd(&self, config: &Path, scratch: &Scratch) -> Option<io::Result<Running>> {
        let bin = self.collectd.as_ref()?;
        let mut cmd = Command::new(bin);
        cmd.arg("-f").arg("-C").arg(config);
        Some(Running::spawn("collectd", cmd, scratch.path("collectd.log")))
    }

    pub fn node_exporter(&self, port: u16, scratch: &Scratch) -> Option<io::Result<Running>> {
        let bin = self.node_exporter.as_ref()?;
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--web.listen-address=127.0.0.1:{port}"));
        // The collectors that match the six host sources.
        cmd.arg("--collector.disable-defaults");
        for c in ["cpu", "meminfo", "loadavg", "netdev", "diskstats", "filesystem"] {
            cmd.arg(format!("--collector.{c}"));
        }
        Some(Running::spawn("node_exporter", cmd, scratch.path("node_exporter.log")))
    }
}
