//! `duct.sources.linux.basic.DiskFree`: space used and free on every
//! mounted local filesystem, measured with `statvfs(3)` on the mount points
//! of the mount table (Duct ran `df -lPx tmpfs`).
//!
//! Like `df -l`, network filesystems are never measured: a server that
//! stopped answering would block `statvfs` and with it the tick's thread.
//! Pseudo filesystems (proc, sysfs, tmpfs, overlay, cgroup, …) are skipped
//! unless listed in `disks`. A device mounted more than once (bind mounts)
//! is reported once, at its shortest mount point, as `df` does. With
//! `use_ssh: true` the remote mount table is read and chosen from the same
//! way, and one `stat -f` there measures the chosen mount points.

use std::borrow::Cow;
use std::ffi::CStr;
use std::io;
use std::path::{Path, PathBuf};

use duct_core::config::Diagnostic;
use duct_core::plan::StringList;
use duct_core::{Event, Poll, Source, SourceArgs, SourceContext, SourceSpec};
use serde::Deserialize;

use super::host::{reported, Host, HostFile};
use super::{ready, HostError, HostPaths, ProcFile, Selection};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Options {
    /// Filesystems to report, by device (`/dev/sda1`) or mount point (`/`);
    /// all local ones when absent.
    disks: Option<StringList>,
}

pub fn spec() -> SourceSpec {
    SourceSpec::new::<Options>(
        "duct.sources.linux.basic.DiskFree",
        "Space on every mounted local filesystem, by statvfs on the mount table's mount points (under HOST_ROOT if set); option disks (devices or mount points, default all but pseudo filesystems)",
        &[
            "(service).(device).used: space used, whole percent rounded up as df shows it",
            "(service).(device).bytes: space used in kB (1024 bytes)",
            "(service).(device).free: space available to unprivileged users in kB",
        ],
        build,
    )
    .over_ssh()
}

fn build(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    let opts: Options = args.options()?;
    if args.settings.remote.is_some() {
        let host = Host::of(args);
        return Ok(Box::new(RemoteDiskFree {
            mounts: host.first_of(host.paths().mount_tables()),
            host,
            disks: Selection::new(opts.disks),
            timeout: std::time::Duration::from_secs_f64(args.settings.timeout),
        }));
    }
    Ok(Box::new(DiskFree::new(
        HostPaths::from_env(),
        Selection::new(opts.disks),
    )))
}

/// One line of the mount table, with `\040`-style escapes decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount<'a> {
    pub device: Cow<'a, str>,
    pub mount_point: Cow<'a, str>,
    pub fstype: &'a str,
}

/// The lines of `/proc/self/mounts` (`device mountpoint type options 0 0`);
/// malformed lines are skipped, since one odd mount must not hide the others.
pub(crate) fn parse_mounts(text: &str) -> impl Iterator<Item = Mount<'_>> {
    text.lines().filter_map(|line| {
        let mut fields = line.split_ascii_whitespace();
        let (device, mount_point, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        Some(Mount {
            device: unescape(device),
            mount_point: unescape(mount_point),
            fstype,
        })
    })
}

/// Decodes the octal escapes the kernel writes for space, tab, newline and
/// backslash in mount table fields.
fn unescape(field: &str) -> Cow<'_, str> {
    if !field.contains('\\') {
        return Cow::Borrowed(field);
    }
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                let value = d.iter().fold(0u32, |v, b| v * 8 + u32::from(b - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// Filesystems with no disk behind them, or a view of another's (overlay,
/// squashfs images); the list is node_exporter's and `df`'s, merged.
const PSEUDO: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "erofs",
    "fusectl",
    "fuse.gvfsd-fuse",
    "fuse.lxcfs",
    "fuse.portal",
    "hugetlbfs",
    "iso9660",
    "mqueue",
    "nfsd",
    "nsfs",
    "overlay",
    "proc",
    "pstore",
    "ramfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tmpfs",
    "tracefs",
];

/// Filesystems served over the network (`df -l` leaves them out).
const REMOTE: &[&str] = &[
    "9p",
    "afs",
    "ceph",
    "cifs",
    "coda",
    "davfs",
    "fuse.ceph-fuse",
    "fuse.gcsfuse",
    "fuse.glusterfs",
    "fuse.rclone",
    "fuse.s3fs",
    "fuse.sshfs",
    "glusterfs",
    "gpfs",
    "lustre",
    "ncpfs",
    "nfs",
    "nfs4",
    "ocfs2",
    "smb3",
    "smbfs",
];

fn is_remote(mount: &Mount<'_>) -> bool {
    // `host:/path` and `//host/share` devices are remote whatever the type.
    REMOTE.contains(&mount.fstype) || mount.device.contains(":/") || mount.device.starts_with("//")
}

/// The mounts to measure, in table order: local ones, pseudo filesystems
/// only when `disks` lists them, and each device once, at its shortest
/// mount point.
pub(crate) fn select_mounts<'a>(mounts: impl Iterator<Item = Mount<'a>>, disks: &Selection) -> Vec<Mount<'a>> {
    let mut chosen: Vec<Mount<'a>> = Vec::new();
    for m in mounts {
        let listed = disks.lists(&m.device) || disks.lists(&m.mount_point);
        let wanted = if listed {
            true
        } else {
            disks.admits(&m.device) && !PSEUDO.contains(&m.fstype)
        };
        if !wanted || is_remote(&m) {
            continue;
        }
        match chosen.iter_mut().find(|c| c.device == m.device) {
            Some(c) if m.mount_point.len() < c.mount_point.len() => *c = m,
            Some(_) => {}
            None => chosen.push(m),
        }
    }
    chosen
}

/// One filesystem's space, as `df -P` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Usage {
    pub used_kb: u64,
    pub free_kb: u64,
    /// `used / (used + available)` in whole percent, rounded up.
    pub used_percent: u64,
}

/// The usage from `statvfs` figures: block counts and the fragment size
/// they are counted in. `None` for a filesystem without blocks (`df`
/// hides those too).
pub(crate) fn usage(blocks: u64, free: u64, available: u64, fragment_size: u64) -> Option<Usage> {
    if blocks == 0 {
        return None;
    }
    let used = blocks.saturating_sub(free);
    let kb = |n: u64| (u128::from(n) * u128::from(fragment_size) / 1024) as u64;
    let counted = u128::from(used) + u128::from(available);
    let used_percent = if counted == 0 {
        0
    } else {
        (u128::from(used) * 100).div_ceil(counted) as u64
    };
    Some(Usage {
        used_kb: kb(used),
        free_kb: kb(available),
        used_percent,
    })
}

/// `statvfs(3)` on `path`; `cpath` is a reused buffer for the C string.
fn statvfs(path: &Path, cpath: &mut Vec<u8>) -> io::Result<libc::statvfs> {
    use std::os::unix::ffi::OsStrExt;
    cpath.clear();
    cpath.extend_from_slice(path.as_os_str().as_bytes());
    cpath.push(0);
    let c = CStr::from_bytes_with_nul(cpath).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `c` is a valid NUL-terminated string; `st` is plain data that
    // statvfs fills in completely when it returns 0.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) == 0 {
            Ok(st)
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

pub(crate) struct DiskFree {
    paths: std::sync::Arc<HostPaths>,
    mounts: ProcFile,
    disks: Selection,
    cpath: Vec<u8>,
    /// The filesystems to measure (device, path to statvfs), kept until
    /// the mount table changes: the kernel's rendering of the table costs
    /// more than all the statvfs calls.
    selected: Option<Vec<(String, PathBuf)>>,
}

impl DiskFree {
    pub fn new(paths: std::sync::Arc<HostPaths>, disks: Selection) -> Self {
        DiskFree {
            mounts: ProcFile::first_of(paths.mount_tables()),
            paths,
            disks,
            cpath: Vec::new(),
            selected: None,
        }
    }

    fn tick(&mut self, ctx: &SourceContext) -> Result<Vec<Event>, HostError> {
        if self.selected.is_none() || self.mounts.mount_table_changed() {
            let text = self.mounts.read()?;
            let chosen = select_mounts(parse_mounts(&text), &self.disks)
                .into_iter()
                .map(|m| {
                    let path = self.paths.on_host(Path::new(m.mount_point.as_ref())).into_owned();
                    (m.device.into_owned(), path)
                })
                .collect();
            self.selected = Some(chosen);
        }
        let mut events = Vec::new();
        for (dev, path) in self.selected.iter().flatten() {
            let st = match statvfs(path, &mut self.cpath) {
                Ok(st) => st,
                Err(e) => {
                    // Mount points this process may not enter (another
                    // user's FUSE mount) are common; not worth a warning.
                    tracing::debug!(service = %ctx.service(), path = %path.display(), "statvfs: {e}");
                    continue;
                }
            };
            let fragment = if st.f_frsize > 0 { st.f_frsize } else { st.f_bsize };
            #[allow(clippy::useless_conversion)] // the field widths differ between targets
            let Some(u) = usage(
                u64::from(st.f_blocks),
                u64::from(st.f_bfree),
                u64::from(st.f_bavail),
                u64::from(fragment),
            ) else {
                continue;
            };
            events.extend(usage_events(ctx, dev, &u));
        }
        Ok(events)
    }
}

/// The three events of one filesystem, Duct's names.
fn usage_events(ctx: &SourceContext, dev: &str, u: &Usage) -> [Event; 3] {
    [
        ctx.create_event_prefixed(
            &format!("{dev}.used"),
            "ok",
            format!("Disk percent used {}%", u.used_percent),
            u.used_percent,
        ),
        ctx.create_event_prefixed(
            &format!("{dev}.bytes"),
            "ok",
            format!("Disk bytes used {} kB", u.used_kb),
            u.used_kb,
        ),
        ctx.create_event_prefixed(
            &format!("{dev}.free"),
            "ok",
            format!("Disk free {} kB", u.free_kb),
            u.free_kb,
        ),
    ]
}

/// DiskFree on a `use_ssh` host: its mount table read over SSH and the
/// same selection made of it, then one `stat -f` (GNU coreutils) on every
/// chosen mount point, which gives the statvfs figures used here.
pub(crate) struct RemoteDiskFree {
    host: Host,
    mounts: HostFile,
    disks: Selection,
    /// The tick's timeout, for `stat`.
    timeout: std::time::Duration,
}

impl RemoteDiskFree {
    async fn tick(&mut self, ctx: &SourceContext) -> Result<Vec<Event>, HostError> {
        let disks = &self.disks;
        let chosen: Vec<(String, String)> = self
            .mounts
            .parse(|text| {
                Ok(select_mounts(parse_mounts(text), disks)
                    .into_iter()
                    .map(|m| (m.device.into_owned(), m.mount_point.into_owned()))
                    .collect())
            })
            .await?;
        if chosen.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec!["-f".to_string(), "-c".into(), "%b %f %a %S %n".into(), "--".into()];
        args.extend(chosen.iter().map(|(_, mount_point)| mount_point.clone()));
        let out = self
            .host
            .run(
                Path::new("stat"),
                &args,
                &[],
                self.timeout,
                super::host::REMOTE_READ_LIMIT,
            )
            .await?;
        // A mount point stat cannot read is left out, as here; stat still
        // prints the others (and exits 1).
        if !out.stderr.trim().is_empty() {
            tracing::debug!(service = %ctx.service(), "stat -f: {}", out.stderr.trim());
        }
        let figures = parse_stat_f(&out.stdout);
        let mut events = Vec::new();
        for (dev, mount_point) in &chosen {
            let Some(u) = figures.iter().find(|(p, _)| p == mount_point).and_then(|(_, u)| *u) else {
                continue;
            };
            events.extend(usage_events(ctx, dev, &u));
        }
        Ok(events)
    }
}

impl Source for RemoteDiskFree {
    fn get<'a>(&'a mut self, ctx: &'a SourceContext) -> Poll<'a> {
        Box::pin(async move {
            let result = self.tick(ctx).await;
            reported(ctx, result)
        })
    }
}

/// The lines of `stat -f -c '%b %f %a %S %n'`: (mount point, usage), the
/// usage `None` for a filesystem without blocks. Lines that are not four
/// numbers and a name are skipped.
pub(crate) fn parse_stat_f(text: &str) -> Vec<(String, Option<Usage>)> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.splitn(5, ' ');
            let mut number = || fields.next()?.parse::<u64>().ok();
            let (blocks, free, available, size) = (number()?, number()?, number()?, number()?);
            let name = fields.next()?;
            Some((name.to_string(), usage(blocks, free, available, size)))
        })
        .collect()
}

impl Source for DiskFree {
    fn get<'a>(&'a mut self, ctx: &'a SourceContext) -> Poll<'a> {
        ready(self.tick(ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::testing::Scratch;
    use crate::testing::context;
    use duct_core::Metric;
    use std::sync::Arc;

    const CAPTURED: &str = include_str!("../../tests/fixtures/linux/mounts");
    const HOST: &str = include_str!("../../tests/fixtures/linux/mounts-host");

    fn chosen(text: &str, disks: &[&str]) -> Vec<(String, String)> {
        let sel = Selection::new(Some(StringList(disks.iter().map(|d| d.to_string()).collect())));
        select_mounts(parse_mounts(text), &sel)
            .into_iter()
            .map(|m| (m.device.into_owned(), m.mount_point.into_owned()))
            .collect()
    }

    fn pair(d: &str, m: &str) -> (String, String) {
        (d.to_string(), m.to_string())
    }

    #[test]
    fn keeps_local_disks_once_at_their_shortest_mount_point() {
        assert_eq!(
            chosen(HOST, &[]),
            [
                pair("/dev/nvme0n1p2", "/"),
                pair("/dev/nvme0n1p1", "/boot/efi"),
                pair("/dev/mapper/vg0-data", "/srv/data files"),
            ]
        );
        assert_eq!(chosen(CAPTURED, &[]), [pair("/dev/vda", "/")]);
    }

    #[test]
    fn disks_selects_by_device_or_mount_point_and_admits_pseudo_filesystems() {
        assert_eq!(
            chosen(HOST, &["/boot/efi", "tmpfs"]),
            [pair("tmpfs", "/run"), pair("/dev/nvme0n1p1", "/boot/efi")]
        );
        assert_eq!(chosen(HOST, &["/dev/mapper/vg0-data"]).len(), 1);
        // Network filesystems stay out even when listed: statvfs could hang.
        assert!(chosen(HOST, &["fileserver:/export/home", "/mnt/share"]).is_empty());
    }

    #[test]
    fn unescapes_mount_table_fields() {
        assert_eq!(unescape("/srv/a\\040b\\011c\\134d"), "/srv/a b\tc\\d");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/odd\\9"), "/odd\\9", "not an escape");
        let m: Vec<Mount<'_>> = parse_mounts("short line\n/dev/sda1 /x ext4 rw 0 0\n").collect();
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn stat_f_lines_give_the_statvfs_usage() {
        // GNU coreutils 9.1 `stat -f -c '%b %f %a %S %n' -- / /nonexistent /mnt/a b`
        // (stat's complaint about /nonexistent went to stderr).
        let text = "66053021 58977914 16746365 4096 /\n0 0 0 4096 /proc\n2048 1024 512 1024 /mnt/a b\n";
        let got = parse_stat_f(text);
        assert_eq!(got[0].0, "/");
        assert_eq!(got[0].1, usage(66053021, 58977914, 16746365, 4096));
        assert_eq!(got[1], ("/proc".to_string(), None), "no blocks, as df hides it");
        assert_eq!(got[2].0, "/mnt/a b", "a mount point with a space keeps it");
        assert_eq!(got[2].1.unwrap().used_kb, 1024);
        assert!(parse_stat_f("stat: cannot read file system information\n").is_empty());
    }

    #[test]
    fn usage_matches_df() {
        // 1000 blocks of 4 KiB, 400 free of which 350 available to users:
        // used 600 → 600 / 950 = 63.2 % → 64 %.
        assert_eq!(
            usage(1000, 400, 350, 4096),
            Some(Usage {
                used_kb: 2400,
                free_kb: 1400,
                used_percent: 64
            })
        );
        assert_eq!(usage(0, 0, 0, 4096), None);
        assert_eq!(usage(10, 10, 10, 1024).unwrap().used_percent, 0);
        assert_eq!(usage(10, 0, 0, 1024).unwrap().used_percent, 100);
    }

    #[tokio::test]
    async fn measures_mount_points_under_host_root() {
        let dir = Scratch::new("diskfree");
        dir.write("proc/mounts", "/dev/fake / ext4 rw 0 0\nproc /proc proc rw 0 0\n");
        let (proc, root) = (dir.0.join("proc").into_os_string(), dir.0.clone().into_os_string());
        let paths = HostPaths::from_vars(|k| match k {
            "HOST_PROC" => Some(proc.clone()),
            "HOST_ROOT" => Some(root.clone()),
            _ => None,
        });
        let (ctx, _) = context("df");
        let events = DiskFree::new(Arc::new(paths), Selection::default())
            .get(&ctx)
            .await
            .unwrap();
        let services: Vec<&str> = events.iter().map(|e| e.service.as_str()).collect();
        assert_eq!(
            services,
            ["df./dev/fake.used", "df./dev/fake.bytes", "df./dev/fake.free"]
        );
        // The scratch directory's filesystem, measured the same way.
        let st = statvfs(&dir.0, &mut Vec::new()).unwrap();
        let total_kb = st.f_blocks as f64 * st.f_frsize as f64 / 1024.0;
        let Some(Metric::Int(used)) = events[1].metric else {
            panic!("{:?}", events[1].metric)
        };
        let Some(Metric::Int(free)) = events[2].metric else {
            panic!("{:?}", events[2].metric)
        };
        assert!(used > 0 && free > 0);
        assert!((used + free) as f64 <= total_kb * 1.01, "{used} + {free} > {total_kb}");
    }
}
