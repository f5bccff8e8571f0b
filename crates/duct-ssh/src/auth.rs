//! Logging in: the private key (`ssh_key` inline, else `ssh_keyfile`,
//! decrypted with `ssh_keypass`), then `ssh_password`, then the keys of an
//! agent at `SSH_AUTH_SOCK`: each that is configured is tried in that
//! order until the server accepts one, as OpenSSH tries its methods.

use std::sync::Arc;

use russh::client::Handle;
use russh::keys::agent::client::AgentClient;
use russh::keys::agent::AgentIdentity;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg};

use crate::connection::Client;
use crate::{SshError, SshTarget};

/// The private key of a target, decoded (and decrypted) once: with a
/// passphrase that costs a key derivation, which is kept off the SSH thread.
pub(crate) async fn load_key(target: &Arc<SshTarget>) -> Result<Option<Arc<PrivateKey>>, SshError> {
    let target = target.clone();
    let label = target.label();
    let decoded = crate::runtime::spawn_blocking(move || decode_key(&target)).await;
    match decoded {
        Ok(result) => result.map(|k| k.map(Arc::new)),
        Err(join) => Err(SshError::Key {
            target: label,
            reason: format!("reading the key failed: {join}"),
        }),
    }
}

fn decode_key(target: &SshTarget) -> Result<Option<PrivateKey>, SshError> {
    let fail = |reason: String| SshError::Key {
        target: target.label(),
        reason,
    };
    let (text, whence) = match (&target.key, &target.keyfile) {
        (Some(inline), _) => (inline.clone(), "ssh_key".to_string()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| fail(format!("cannot read ssh_keyfile {}: {e}", path.display())))?;
            (text, format!("ssh_keyfile {}", path.display()))
        }
        (None, None) => return Ok(None),
    };
    let pass = target.keypass.as_deref().filter(|p| !p.is_empty());
    russh::keys::decode_secret_key(&text, pass).map(Some).map_err(|e| {
        let hint = if pass.is_none() {
            " (an encrypted key needs ssh_keypass)"
        } else {
            " (is ssh_keypass right?)"
        };
        fail(format!("cannot decode the private key of {whence}: {e}{hint}"))
    })
}

/// The user name to log in as: `ssh_username`, else the user ductd runs as.
pub(crate) fn username(target: &SshTarget) -> String {
    if let Some(u) = &target.username {
        return u.clone();
    }
    if let Some(u) = std::env::var("USER").ok().filter(|u| !u.is_empty()) {
        return u;
    }
    own_user_name().unwrap_or_else(|| "root".into())
}

fn own_user_name() -> Option<String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: getpwuid_r fills `pwd` and strings inside `buf` (of the size
    // passed) and sets `found` to `pwd` on success; nothing outlives `buf`.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(
            libc::geteuid(),
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut found,
        );
        if rc != 0 || found.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        Some(std::ffi::CStr::from_ptr(pwd.pw_name).to_string_lossy().into_owned())
    }
}

/// Tries each configured method in turn; `Err` says what was tried.
pub(crate) async fn authenticate(
    handle: &mut Handle<Client>,
    target: &SshTarget,
    key: Option<Arc<PrivateKey>>,
) -> Result<(), SshError> {
    let user = username(target);
    let label = target.label();
    let fail = |reason: String| SshError::Auth {
        target: label.clone(),
        reason,
    };
    let mut tried: Vec<String> = Vec::new();
    let proto = |e: russh::Error| fail(e.to_string());
    if let Some(key) = key {
        let hash = handle.best_supported_rsa_hash().await.map_err(proto)?.flatten();
        let result = handle
            .authenticate_publickey(&user, PrivateKeyWithHashAlg::new(key, hash))
            .await
            .map_err(proto)?;
        if result.success() {
            return Ok(());
        }
        tried.push("the private key".into());
    }
    if let Some(password) = &target.password {
        let result = handle.authenticate_password(&user, password).await.map_err(proto)?;
        if result.success() {
            return Ok(());
        }
        tried.push("the password".into());
    }
    if let Some(socket) = std::env::var_os("SSH_AUTH_SOCK").filter(|s| !s.is_empty()) {
        match agent_login(handle, &user, &socket).await {
            Ok(true) => return Ok(()),
            Ok(false) => tried.push("the agent's keys".into()),
            Err(e) => tried.push(format!("the agent ({e})")),
        }
    }
    if tried.is_empty() {
        return Err(fail(
            "no credentials: set ssh_key, ssh_keyfile or ssh_password, or run an agent (SSH_AUTH_SOCK)".into(),
        ));
    }
    Err(fail(format!(
        "the server refused {} for user `{user}`",
        tried.join(", ")
    )))
}

/// Offers every key the agent holds; `Ok(false)` when none was accepted.
async fn agent_login(handle: &mut Handle<Client>, user: &str, socket: &std::ffi::OsStr) -> Result<bool, String> {
    let mut agent = AgentClient::connect_uds(socket).await.map_err(|e| e.to_string())?;
    let identities = agent.request_identities().await.map_err(|e| e.to_string())?;
    for identity in identities {
        let AgentIdentity::PublicKey { key, .. } = identity else {
            continue;
        };
        let hash = handle
            .best_supported_rsa_hash()
            .await
            .map_err(|e| e.to_string())?
            .flatten();
        match handle.authenticate_publickey_with(user, key, hash, &mut agent).await {
            Ok(result) if result.success() => return Ok(true),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(false)
}
