//! The directory: who the users are, which domains are local, where each
//! user's mail lives, and whether a password is right.
//!
//! One client serves every role. Back ends: `embedded` (a file managed by
//! `msgd user ...`) and `ldap` (`[directory.ldap]`). Every lookup is async and may fail
//! temporarily; callers turn `DirError::Temporary` into 4xx / NO
//! [UNAVAILABLE], never into "no such user".

pub mod coalesce;
pub mod embedded;
pub mod ldap;
pub mod mailhost;
pub mod names;
pub mod pab;
pub mod password;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::authcache::Auth;
use crate::config::{Config, DirectoryBackend};

/// A mail user as the directory describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Canonical address (`mail`), lowercase. The store keys users by it.
    pub address: String,
    /// Other addresses delivering here (mailAlternateAddress, mailEquivalentAddress).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// inetUserStatus / mailUserStatus: false refuses delivery and login.
    #[serde(default = "yes")]
    pub active: bool,
    /// mailQuota in bytes; None: the store's default.
    #[serde(default)]
    pub quota: Option<u64>,
    /// mailHost: the store that holds the mailbox; None: this host.
    #[serde(default)]
    pub mail_host: Option<String>,
    /// mailMessageStore: partition name; None: the default partition.
    #[serde(default)]
    pub partition: Option<String>,
    /// mailForwardingAddress.
    #[serde(default)]
    pub forward: Vec<String>,
    /// mailDeliveryOption contains "mailbox" (keep a copy). Default true.
    #[serde(default = "yes")]
    pub keep_mailbox: bool,
    /// mailMsgQuota: most messages the user's mailboxes may hold; None:
    /// the store's default (none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg_quota: Option<u64>,
    /// The status says deleted (inetUserStatus / mailUserStatus): the
    /// account is marked for removal (docs/directory.md: mail refused
    /// 5.1.1 or kept per policy, no login) and purged from its store
    /// later. Always comes with `active == false`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// mailRoutingAddress: where mail for this user is routed instead of
    /// its mailbox (docs/directory.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_address: Option<String>,
    /// preferredMailHost: the store a user without mailHost is meant to
    /// live on (docs/directory.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_host: Option<String>,
}

fn yes() -> bool {
    true
}

impl Account {
    /// An active account with the defaults a directory entry without
    /// further attributes gets: no aliases or forwards, the store's default
    /// quota, partition and host, a copy kept in the mailbox.
    pub fn new(address: impl Into<String>) -> Account {
        Account {
            address: address.into(),
            aliases: vec![],
            active: true,
            quota: None,
            mail_host: None,
            partition: None,
            forward: vec![],
            keep_mailbox: true,
            msg_quota: None,
            deleted: false,
            routing_address: None,
            preferred_host: None,
        }
    }
}

/// The status of a group or a domain entry (inetMailGroupStatus,
/// inetDomainStatus / mailDomainStatus): what the Sun schema's values
/// `active`, `inactive` and `deleted` mean (docs/directory.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryStatus {
    #[default]
    Active,
    Inactive,
    Deleted,
}

impl EntryStatus {
    /// Reads a status value case-insensitively; None: not a value we know.
    pub fn parse(v: &str) -> Option<EntryStatus> {
        match v.trim().to_ascii_lowercase().as_str() {
            "active" => Some(EntryStatus::Active),
            "inactive" | "disabled" | "hold" => Some(EntryStatus::Inactive),
            "deleted" | "removed" => Some(EntryStatus::Deleted),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EntryStatus::Active => "active",
            EntryStatus::Inactive => "inactive",
            EntryStatus::Deleted => "deleted",
        }
    }
}

/// What an address resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// A user's mailbox (and maybe forwards: see `Account`).
    User(Account),
    /// An alias or group: deliver to each of these addresses instead.
    List(List),
}

/// The members of an alias or group, and where bounces of the copies
/// sent to them go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct List {
    pub members: Vec<String>,
    /// The list's errors-to address (the Sun schema's `mgrpErrorsTo`):
    /// the envelope sender of every copy made for the list, so bounces
    /// reach its owner rather than the original sender. None: the copies
    /// keep the original envelope sender.
    pub errors_to: Option<String>,
    /// inetMailGroupStatus.
    pub status: EntryStatus,
    /// mgrpAllowedBroadcaster, as lowercase addresses (DNs and LDAP URLs
    /// resolved by the back end): only these senders may post. Empty (and
    /// `allowed_domains` empty): anyone may.
    pub allowed_broadcasters: Vec<String>,
    /// mgrpAllowedDomain: senders in these domains (lowercase) may post.
    pub allowed_domains: Vec<String>,
    /// The entry names allowed broadcasters or domains, whatever they
    /// resolved to: a restriction whose DNs or URLs name nobody lets
    /// nobody post (never everybody).
    pub posting_restricted: bool,
}

impl List {
    /// A list whose copies keep the original sender.
    pub fn of(members: Vec<String>) -> List {
        List {
            members,
            ..List::default()
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum DirError {
    /// The directory could not answer (down, timeout): try again later.
    #[error("directory temporarily unavailable: {0}")]
    Temporary(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthResult {
    /// Right password, active account.
    Ok(Account),
    /// Wrong password or unknown user (not distinguished to the client).
    /// Carries the canonical address when the login named an existing
    /// user (by address, alias or LDAP uid), so failures count against one
    /// account whatever spelling was typed.
    Failed(Option<String>),
    /// Right password, but the account is inactive.
    Inactive,
}

/// The directory client: a back end, and the password side shared by
/// every login of the process (credential cache, hashing pool).
pub struct Directory {
    backend: Backend,
    auth: Auth,
    /// Address lookups in flight, by canonical address: concurrent
    /// lookups of one address make one search (`coalesce`).
    lookups: coalesce::SingleFlight<String, Result<Option<Recipient>, DirError>>,
    /// Domain questions in flight, by lowercase domain: the status of
    /// the domain's entry (None: not one of ours).
    domains: coalesce::SingleFlight<String, Result<Option<EntryStatus>, DirError>>,
}

enum Backend {
    Embedded(embedded::Embedded),
    Ldap(ldap::Ldap),
}

impl Directory {
    pub fn open(config: &Config) -> anyhow::Result<Arc<Directory>> {
        let backend = match config.directory.backend {
            DirectoryBackend::Embedded => {
                Backend::Embedded(embedded::Embedded::open(config.directory_path())?)
            }
            DirectoryBackend::Ldap => Backend::Ldap(ldap::Ldap::open(config)?),
        };
        Ok(Arc::new(Directory {
            backend,
            auth: Auth::from_config(&config.auth),
            lookups: Default::default(),
            domains: Default::default(),
        }))
    }

    /// The credential cache and the hashing pool.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// A new `directory.cache_ttl` from a reloaded configuration (the
    /// LDAP lookup caches; the embedded directory has none).
    pub fn set_cache_ttl(&self, ttl: std::time::Duration) {
        if let Backend::Ldap(l) = &self.backend {
            l.set_cache_ttl(ttl);
        }
    }

    /// Is this domain one we receive mail for? A domain whose entry says
    /// deleted is not (docs/directory.md); an inactive one still is (its
    /// mail is deferred: `domain_status`).
    pub async fn is_local_domain(&self, domain: &str) -> Result<bool, DirError> {
        Ok(matches!(
            self.domain_status(domain).await?,
            Some(EntryStatus::Active | EntryStatus::Inactive)
        ))
    }

    /// The status of a domain's entry (inetDomainStatus / mailDomainStatus,
    /// embedded `domain_info.status`); None: no such local domain. Cached
    /// with the directory's TTL like the other lookups.
    pub async fn domain_status(&self, domain: &str) -> Result<Option<EntryStatus>, DirError> {
        let domain = domain.to_ascii_lowercase();
        match &self.backend {
            Backend::Embedded(e) => e.domain_status(&domain),
            Backend::Ldap(l) => {
                let key = domain.clone();
                self.domains
                    .run(key, || async { l.domain_status(&domain).await })
                    .await
            }
        }
    }

    /// Resolves an address (already lowercase-able) to a user or a list.
    /// `Ok(None)`: no such recipient.
    pub async fn lookup(&self, address: &str) -> Result<Option<Recipient>, DirError> {
        let address = canonical_address(address);
        match &self.backend {
            Backend::Embedded(e) => e.lookup(&address),
            // Concurrent misses for one address: one search.
            Backend::Ldap(l) => {
                let key = address.clone();
                self.lookups
                    .run(key, || async { l.lookup(&address).await })
                    .await
            }
        }
    }

    /// Checks a login name (address, or bare local part in `default_domain`)
    /// and password.
    ///
    /// A user of an inactive domain is refused temporarily (an error the
    /// caller answers with "try again later"); of a deleted domain, like an
    /// inactive account.
    pub async fn authenticate(
        &self,
        login: &str,
        password: &str,
        default_domain: &str,
    ) -> Result<AuthResult, DirError> {
        let r = self
            .authenticate_account(login, password, default_domain)
            .await?;
        let AuthResult::Ok(a) = &r else {
            return Ok(r);
        };
        match self
            .domain_status(domain_of(&a.address).unwrap_or(""))
            .await?
        {
            Some(EntryStatus::Inactive) => {
                tracing::info!(user = %a.address, "login refused: the user's domain is inactive");
                Err(DirError::Temporary(format!(
                    "domain of {} is inactive",
                    a.address
                )))
            }
            Some(EntryStatus::Deleted) => {
                tracing::info!(user = %a.address, "login refused: the user's domain is deleted");
                Ok(AuthResult::Inactive)
            }
            // No domain entry: the login is judged by the account alone
            // (e.g. `local_domains` sites and users of other domains).
            Some(EntryStatus::Active) | None => Ok(r),
        }
    }

    async fn authenticate_account(
        &self,
        login: &str,
        password: &str,
        default_domain: &str,
    ) -> Result<AuthResult, DirError> {
        let qualified = qualify_login(login, default_domain);
        let auth = &self.auth;
        match &self.backend {
            // Hashing runs on the pool's own threads (password.rs), and a
            // password verified recently for the same stored hash is
            // answered by the credential cache (crate::authcache).
            Backend::Embedded(e) => match e.login_entry(&qualified)? {
                embedded::LoginEntry::User { account, stored } => {
                    let ok = auth
                        .check(&account.address, &stored, password, || {
                            auth.pool.verify(password, stored.clone())
                        })
                        .await?;
                    Ok(embedded::LoginEntry::verdict(account, ok))
                }
                embedded::LoginEntry::Unknown { owner } => {
                    // Spend the same time as a real check so timing does
                    // not tell which logins exist.
                    auth.pool.verify_dummy(password).await?;
                    if let Some(owner) = &owner {
                        auth.cache.forget(owner);
                    }
                    Ok(AuthResult::Failed(owner))
                }
            },
            // LDAP tries the login as typed (`uid=alice`) and qualified
            // (`mail=alice@domain`); the bind is skipped on a cache hit.
            Backend::Ldap(l) => {
                l.authenticate_cached(login, &qualified, password, auth)
                    .await
            }
        }
    }

    /// A user's personal address book (`pab`); `user` is the logged-in
    /// account's canonical address.
    pub async fn pab_list(&self, user: &str) -> Result<pab::Snapshot, pab::PabError> {
        match &self.backend {
            Backend::Embedded(e) => {
                let (f, u) = (e.pab().clone(), user.to_string());
                blocking(move || f.list(&u)).await
            }
            Backend::Ldap(l) => l.pab_list(user).await,
        }
    }

    /// Creates (`create`) or replaces a contact in `user`'s book.
    pub async fn pab_put(
        &self,
        user: &str,
        contact: pab::Contact,
        create: bool,
    ) -> Result<(), pab::PabError> {
        match &self.backend {
            Backend::Embedded(e) => {
                let (f, u) = (e.pab().clone(), user.to_string());
                blocking(move || f.put(&u, contact, create).map(|_| ())).await
            }
            Backend::Ldap(l) => l.pab_put(user, contact, create).await,
        }
    }

    pub async fn pab_delete(&self, user: &str, id: &str) -> Result<(), pab::PabError> {
        match &self.backend {
            Backend::Embedded(e) => {
                let (f, u, id) = (e.pab().clone(), user.to_string(), id.to_string());
                blocking(move || f.delete(&u, &id).map(|_| ())).await
            }
            Backend::Ldap(l) => l.pab_delete(user, id).await,
        }
    }

    /// What changed in `user`'s book since `since`; None: cannot tell.
    pub async fn pab_changes(
        &self,
        user: &str,
        since: &str,
    ) -> Result<Option<pab::Changes>, pab::PabError> {
        match &self.backend {
            Backend::Embedded(e) => {
                let (f, u, s) = (e.pab().clone(), user.to_string(), since.to_string());
                blocking(move || f.changes(&u, &s)).await
            }
            Backend::Ldap(l) => l.pab_changes(user, since).await,
        }
    }

    /// Puts many contacts back in one write (restore, user move; see
    /// `pab::Files::merge`). Only the embedded directory's books: an LDAP
    /// directory's are backed up with the directory (`NotConfigured`).
    pub async fn pab_merge(
        &self,
        user: &str,
        contacts: Vec<pab::Contact>,
        mirror: bool,
    ) -> Result<(u64, u64), pab::PabError> {
        match &self.backend {
            Backend::Embedded(e) => {
                let (f, u) = (e.pab().clone(), user.to_string());
                blocking(move || f.merge(&u, contacts, mirror)).await
            }
            Backend::Ldap(_) => Err(pab::PabError::NotConfigured),
        }
    }

    /// Active users whose address (or, in LDAP, name) starts with
    /// `prefix`, for address completion (at most `pab::MAX_COMPLETIONS`).
    pub async fn complete_users(&self, prefix: &str) -> Result<Vec<pab::UserHit>, DirError> {
        let prefix = prefix.trim().to_lowercase();
        if prefix.is_empty() {
            return Ok(Vec::new());
        }
        match &self.backend {
            Backend::Embedded(e) => e.complete_users(&prefix),
            Backend::Ldap(l) => l.complete_users(&prefix).await,
        }
    }

    /// Lookup cache (hits, misses) of back ends that have one.
    pub fn cache_stats(&self) -> Option<(u64, u64)> {
        match &self.backend {
            Backend::Embedded(_) => None,
            Backend::Ldap(l) => Some(l.cache_stats()),
        }
    }
}

impl AuthResult {
    /// The account failures are counted against: the canonical address,
    /// or `typed` (the qualified login) when no user was found.
    pub fn failure_key<'a>(&'a self, typed: &'a str) -> &'a str {
        match self {
            AuthResult::Failed(Some(a)) => a,
            AuthResult::Ok(a) => &a.address,
            _ => typed,
        }
    }
}

/// Runs a file operation of the embedded directory off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, pab::PabError> + Send + 'static,
) -> Result<T, pab::PabError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(pab::PabError::Temporary(format!("task: {e}"))))
}

/// An allowed broadcaster written as an address or a `mailto:` URL
/// (mgrpAllowedBroadcaster), lowercase; None: not an address.
pub fn broadcaster_address(v: &str) -> Option<String> {
    let v = v.trim();
    let v = match v.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("mailto:") => &v[7..],
        _ => v,
    };
    // A mailto: URL may carry headers (`?subject=`) and %-escapes.
    let v = v.split('?').next().unwrap_or("").trim();
    let v = v.replace("%40", "@").to_lowercase();
    let valid = v.len() <= 254
        && !v
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>' || c == ',')
        && v.rsplit_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty());
    valid.then_some(v)
}

impl List {
    /// May `sender` (the envelope sender, "" for `<>`) post to this list?
    /// A list without allowed broadcasters or domains takes anyone; a
    /// restricted one refuses the null sender.
    pub fn allows_sender(&self, sender: &str) -> bool {
        if !self.posting_restricted
            && self.allowed_broadcasters.is_empty()
            && self.allowed_domains.is_empty()
        {
            return true;
        }
        let sender = canonical_address(sender);
        if sender.is_empty() {
            return false;
        }
        self.allowed_broadcasters.contains(&sender)
            || domain_of(&sender).is_some_and(|d| self.allowed_domains.iter().any(|x| x == d))
    }
}

/// Lowercase address; a missing domain is left as is.
pub fn canonical_address(address: &str) -> String {
    address.trim().to_lowercase()
}

/// `alice` -> `alice@default_domain`; addresses are lowercased.
pub fn qualify_login(login: &str, default_domain: &str) -> String {
    let login = canonical_address(login);
    if login.contains('@') || default_domain.is_empty() {
        login
    } else {
        format!("{login}@{}", default_domain.to_lowercase())
    }
}

/// The domain part of an address, lowercase.
pub fn domain_of(address: &str) -> Option<&str> {
    address.rsplit_once('@').map(|(_, d)| d)
}
