//! Switching a user's mailHost (`msgd user move`): the one directory write
//! msgd makes besides the embedded file's `msgd user` commands.
//!
//! - embedded: the user's `mail_host` in the file, under its lock,
//!   replaced atomically (every process sees it at its next reload);
//! - LDAP: a modify (replace `mailHost`) on the user's entry, found by its
//!   `mail` attribute, bound as `directory.ldap.admin_dn` with the password
//!   from `admin_password_file` on a connection of its own (the lookup
//!   pools stay read-only). The password is never logged. Processes see
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
    let cfg = &config.directory.ldap;
    if cfg.admin_dn.is_empty() || cfg.admin_password_file.is_empty() {
        bail!("directory.ldap.admin_dn and admin_password_file are needed to change mailHost");
    }
    let path = config.data_path(&cfg.admin_password_file, "");
    let password = std::fs::read_to_string(&path)
        .with_context(|| format!("directory.ldap.admin_password_file: {}", path.display()))?;
    let password = password.trim_end_matches(['\r', '\n']);
    let op = Duration::from_secs(cfg.operation_timeout.max(1));
    let mut settings = LdapConnSettings::new()
        .set_conn_timeout(Duration::from_secs(cfg.connect_timeout.max(1)))
        .set_starttls(cfg.starttls);
    if !cfg.ca_file.is_empty() {
        settings = settings.set_config(std::sync::Arc::new(super::ldap::client_tls(
            &config.data_path(&cfg.ca_file, ""),
        )?));
    }
    let mut last = anyhow::anyhow!("directory.ldap.urls is empty");
    for url in &cfg.urls {
        let r = tokio::time::timeout(
            op * 4,
            modify(
                url,
                settings.clone(),
                &cfg.admin_dn,
                password,
                op,
                config,
                user,
                host,
            ),
        )
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out")));
        match r {
            Ok(()) => return Ok(()),
            Err(e) => last = e.context(format!("LDAP {url}")),
        }
    }
    Err(last)
}

#[allow(clippy::too_many_arguments)]
async fn modify(
    url: &str,
    settings: LdapConnSettings,
    admin_dn: &str,
    password: &str,
    op: Duration,
    config: &Config,
    user: &str,
    host: &str,
) -> anyhow::Result<()> {
    let (conn, mut ldap) = LdapConnAsync::with_settings(settings, url).await?;
    tokio::spawn(async move {
        let _ = conn.drive().await;
    });
    let r = ldap
        .with_timeout(op)
        .simple_bind(admin_dn, password)
        .await?;
    if r.rc != 0 {
        bail!("bind as {admin_dn} refused: rc={}", r.rc);
    }
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
    let _ = ldap.unbind().await;
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
