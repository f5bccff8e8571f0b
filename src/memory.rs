//! Giving back the memory that only start-up needed.
//!
//! Most of an idle agent's resident memory is program code, and most of
//! that code ran once: argument parsing, YAML, configuration planning,
//! regex compilation. Once the agent runs, its own code pages are handed
//! back to the kernel (`MADV_PAGEOUT`); the pages the running agent uses
//! come back on their next use and stay, the rest stay out. Nothing is lost:
//! code pages are clean and re-read from the executable when needed.

/// Once the agent has settled (its first ticks have brought in the code they
/// use), pages out the rest; called after start and after each reload.
pub fn release_startup_code_soon() {
    actix_rt::spawn(async {
        tokio::time::sleep(SETTLE).await;
        release_startup_code();
    });
}

/// How long after start or reload the code pages are released.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(5);

/// Pages out this executable's read-only mappings (code and constants).
/// Best effort: a kernel without `MADV_PAGEOUT` (before 5.4) just says no.
pub fn release_startup_code() {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return;
    };
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    let exe = exe.to_string_lossy();
    let mut released = 0usize;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let path = fields.nth(3).unwrap_or_default();
        if path != exe || perms.contains('w') {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16)) else {
            continue;
        };
        // SAFETY: the range is a whole read-only file mapping of this
        // process; paging it out changes residency, not contents.
        let rc = unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_PAGEOUT) };
        if rc == 0 {
            released += end - start;
        }
    }
    tracing::debug!(bytes = released, "start-up code paged out");
}
