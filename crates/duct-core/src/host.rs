//! The machine's name, as events report it by default.

use std::ffi::{CStr, CString};

/// The fully qualified domain name of this machine, as Duct found it
/// (`gethostbyaddr(gethostname())`): the canonical name the resolver gives
/// for the host name, else the host name itself. Called once at start-up.
pub fn fqdn() -> String {
    let short = hostname();
    canonical_name(&short).unwrap_or(short)
}

/// `gethostname(2)`.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes a
    // NUL-terminated name into it (truncated names are NUL-terminated below).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len() - 1);
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn canonical_name(host: &str) -> Option<String> {
    let c_host = CString::new(host).ok()?;
    // SAFETY: hints is a zeroed addrinfo with only flags set, as getaddrinfo
    // expects; the result list is freed with freeaddrinfo on every path.
    unsafe {
        let mut hints: libc::addrinfo = std::mem::zeroed();
        hints.ai_flags = libc::AI_CANONNAME;
        hints.ai_family = libc::AF_UNSPEC;
        let mut res: *mut libc::addrinfo = std::ptr::null_mut();
        if libc::getaddrinfo(c_host.as_ptr(), std::ptr::null(), &hints, &mut res) != 0 || res.is_null() {
            return None;
        }
        let name = (*res).ai_canonname;
        let out = if name.is_null() {
            None
        } else {
            Some(CStr::from_ptr(name).to_string_lossy().into_owned())
        };
        libc::freeaddrinfo(res);
        out.filter(|n| !n.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_not_empty() {
        let short = hostname();
        assert!(!short.is_empty());
        assert!(!short.contains(['\0', ' ', '\n']), "{short:?}");
        let full = fqdn();
        assert!(!full.is_empty());
        assert!(!full.contains(['\0', ' ', '\n']), "{full:?}");
        // The canonical name is the host name, or the resolver's longer
        // name for it; never an unrelated empty or garbled string.
        assert!(
            full.len() >= short.len() || full == "localhost",
            "{full:?} for {short:?}"
        );
    }
}
