//! Switching a user's mailHost (`msgd user move`), and the admin bind it
//! shares with the provisioning on LDAP (`admin_connect`, used by
//! src/provision/ldap.rs).
//!
//! - embedded: the user's `mail_host` in the file, under its lock,
//!   replaced atomically (every process sees it at its next reload);
//! - LDAP: a modify (replace `mailHost`) on the user's entry, found by its
//!   `mail` attribute, bound as `directory.ldap.admin_dn` with the password
//!   from `admin_password_file` on a connection of its own (the lookup
//!   pools stay read-only); the first server of `directory.ldap.urls`
//!   that answers is written to. The password is never logged. Processes see
//!   the change when their directory cache entry expires
//!   (`directory.cache_ttl`).

use anyhow::{bail, Context as _};
use ldap3::{ldap_escape, LdapConnAsync, LdapConnSettings, Mod, Scope, SearchEntry};
use std::collections::HashSet;
use std::time::Duration;

use crate::config::{Config, DirectoryBackend};

/// Sets `user`'s mailHost to `host` in the configured directory.
pub async fn set_mail_host(config: &Config, user: &str, host: &str) -> anyhow::Result<()> {
    match config.directory.backend {
        DirectoryBackend::Embedded => {
            let path = config.directory_path();
            let (user, host) = (user.to_string(), host.to_string());
            tokio::task::spawn_blocking(move || {
                super::embedded::edit(&path, |d| {
                    let Some(u) = d.users.get_mut(&user) else {
                        bail!("{user}: no such user in the directory file");
                    };
                    u.account.mail_host = Some(host);
                    Ok(())
                })
            })
            .await?
        }
        DirectoryBackend::Ldap => set_ldap(config, user, host).await,
    }
}

async fn set_ldap(config: &Config, user: &str, host: &str) -> anyhow::Result<()> {
    let mut admin = admin_connect(config)
        .await
        .map_err(|e| anyhow::anyhow!("changing mailHost: {e}"))?;
    let op = admin.op;
    let r = tokio::time::timeout(op * 4, modify(&mut admin.ldap, op, config, user, host))
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out")));
    let _ = admin.ldap.unbind().await;
    r
}

/// A connection bound as `directory.ldap.admin_dn` (the provisioning and
/// `msgd user move` write with it; the lookup pools stay read-only).
pub struct AdminConn {
    pub ldap: ldap3::Ldap,
    /// `directory.ldap.operation_timeout`: the deadline of each operation.
    pub op: Duration,
}

/// Why no admin connection could be made.
#[derive(Debug, thiserror::Error)]
pub enum AdminConnError {
    /// admin_dn / admin_password_file missing or unreadable, bad CA file.
    #[error("{0:#}")]
    Config(anyhow::Error),
    /// No server answered (or in time): try again later.
    #[error("{0:#}")]
    Unreachable(anyhow::Error),
    /// A server refused the admin bind (wrong password, no such DN).
    #[error("{0}")]
    Refused(String),
}

/// Connects to the first `directory.ldap.urls` server that answers, with
/// the reading side's TLS settings (ldaps, StartTLS, CA file) and
/// deadlines, and binds as `directory.ldap.admin_dn` with the password
/// from `admin_password_file` (never logged).
pub async fn admin_connect(config: &Config) -> Result<AdminConn, AdminConnError> {
    use AdminConnError::*;
    let cfg = &config.directory.ldap;
    if cfg.admin_dn.is_empty() || cfg.admin_password_file.is_empty() {
        return Err(Config(anyhow::anyhow!(
            "directory.ldap.admin_dn and admin_password_file are needed to write to the directory"
        )));
    }
    let path = config.data_path(&cfg.admin_password_file, "");
    let password = std::fs::read_to_string(&path)
        .with_context(|| format!("directory.ldap.admin_password_file: {}", path.display()))
        .map_err(Config)?;
    let password = password.trim_end_matches(['\r', '\n']);
    let op = Duration::from_secs(cfg.operation_timeout.max(1));
    let mut settings = LdapConnSettings::new()
        .set_conn_timeout(Duration::from_secs(cfg.connect_timeout.max(1)))
        .set_starttls(cfg.starttls);
    if !cfg.ca_file.is_empty() {
        let tls = super::ldap::client_tls(&config.data_path(&cfg.ca_file, "")).map_err(Config)?;
        settings = settings.set_config(std::sync::Arc::new(tls));
    }
    crate::tls::install_provider();
    let mut last = Unreachable(anyhow::anyhow!("directory.ldap.urls is empty"));
    for url in &cfg.urls {
        let deadline = Duration::from_secs(cfg.connect_timeout.max(1)) + op;
        let r = tokio::time::timeout(
            deadline,
            connect_bind(url, settings.clone(), &cfg.admin_dn, password, op),
        )
        .await
        .unwrap_or_else(|_| Err(Unreachable(anyhow::anyhow!("timed out"))));
        match r {
            Ok(ldap) => return Ok(AdminConn { ldap, op }),
            Err(Refused(m)) => return Err(Refused(format!("LDAP {url}: {m}"))),
            Err(Unreachable(e)) => last = Unreachable(e.context(format!("LDAP {url}"))),
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

async fn connect_bind(
    url: &str,
    settings: LdapConnSettings,
    admin_dn: &str,
    password: &str,
    op: Duration,
) -> Result<ldap3::Ldap, AdminConnError> {
    let (conn, mut ldap) = LdapConnAsync::with_settings(settings, url)
        .await
        .map_err(|e| AdminConnError::Unreachable(e.into()))?;
    tokio::spawn(async move {
        let _ = conn.drive().await;
    });
    let r = ldap
        .with_timeout(op)
        .simple_bind(admin_dn, password)
        .await
        .map_err(|e| AdminConnError::Unreachable(e.into()))?;
    match r.rc {
        0 => Ok(ldap),
        // busy, unavailable, unwilling: another server may do.
        51..=53 => Err(AdminConnError::Unreachable(anyhow::anyhow!(
            "bind as {admin_dn}: rc={} {}",
            r.rc,
            r.text
        ))),
        rc => Err(AdminConnError::Refused(format!(
            "bind as {admin_dn} refused: rc={rc}"
        ))),
    }
}

async fn modify(
    ldap: &mut ldap3::Ldap,
    op: Duration,
    config: &Config,
    user: &str,
    host: &str,
) -> anyhow::Result<()> {
    let attrs = &config.directory.ldap.attributes;
    let filter = format!("({}={})", attrs.mail, ldap_escape(user));
    let (entries, _) = ldap
        .with_timeout(op)
        .search(
            &config.directory.ldap.base_dn,
            Scope::Subtree,
            &filter,
            vec!["1.1"],
        )
        .await?
        .success()?;
    let dn = match entries.as_slice() {
        [e] => SearchEntry::construct(e.clone()).dn,
        [] => bail!("{user}: no entry with {filter}"),
        _ => bail!("{user}: several entries with {filter}"),
    };
    ldap.with_timeout(op)
        .modify(
            &dn,
            vec![Mod::Replace(
                attrs.mail_host.as_str(),
                HashSet::from([host]),
            )],
        )
        .await?
        .success()
        .with_context(|| format!("modify {dn}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn embedded_mail_host_is_switched_in_the_file() {
        let d = tempfile::tempdir().unwrap();
        let mut c = Config::default();
        c.server.data_dir = d.path().to_path_buf();
        let path = c.directory_path();
        super::super::embedded::edit(&path, |data| {
            super::super::embedded::add_user_hashed(
                data,
                "mover@example.test",
                "x".into(),
                None,
                true,
            )
        })
        .unwrap();
        set_mail_host(&c, "mover@example.test", "store2.test")
            .await
            .unwrap();
        let data = super::super::embedded::load(&path).unwrap();
        assert_eq!(
            data.users["mover@example.test"]
                .account
                .mail_host
                .as_deref(),
            Some("store2.test")
        );
        assert!(set_mail_host(&c, "nobody@example.test", "s").await.is_err());
    }

    #[tokio::test]
    async fn ldap_switch_needs_the_admin_account() {
        let mut c = Config::default();
        c.directory.backend = DirectoryBackend::Ldap;
        let e = set_mail_host(&c, "a@b.c", "s")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("admin_dn"), "{e}");
    }
}
