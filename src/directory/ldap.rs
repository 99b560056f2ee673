//! The LDAP back end of the directory (ldap3, OpenLDAP or any LDAPv3 server).
//!
//! - Addresses: `(|(mail=X)(mailAlternateAddress=X)(mailEquivalentAddress=X))`
//!   finds a user (-> `Recipient::User`) or a group (an entry with one of
//!   `group_classes`: -> `Recipient::List` of its `mgrpRFC822MailMember`
//!   addresses and the `mail` of each `uniqueMember`/`member` DN, nested
//!   groups expanded to `group_max_depth`).
//! - Logins: `(|(uid=X)(mail=X))` finds the user's DN; the password is checked
//!   by binding as that DN on a connection used only for binds. The password
//!   attribute is never read or compared. An unknown login still costs a
//!   bind, so timing does not tell which logins exist.
//! - Domains: `local_domains` from the config, else `domain_filter`.
//!
//! Invariants:
//! - Every value placed in a filter goes through `ldap3::ldap_escape`
//!   (`filter_eq`/`or_filter`); attribute names come from the config and are
//!   checked at start.
//! - A directory that does not answer (down, timeout, busy, unexpected result
//!   code) is `DirError::Temporary`, never "no such user"; temporary failures
//!   are not cached.
//! - Authentication: the entry is searched at every login (its status and
//!   attributes are always current); only the bind is skipped when the
//!   credential cache (`crate::authcache`) verified the same password for
//!   the same DN with the same `entryCSN`/`modifyTimestamp`/`pwdChangedTime`/
//!   `pwdAccountLockedTime`, so any change to the entry misses at once.
//!   A failed bind forgets the entry.
//! - Passwords are never logged.

mod cache;
mod pab;
mod pool;

/// A group's errors-to address (`mgrpErrorsTo`, as an address or a
/// `mailto:` URL); None when absent or not an address.
fn errors_to(entry: &Entry, attr: &str) -> Option<String> {
    if attr.is_empty() {
        return None;
    }
    let v = entry.first(attr)?.trim();
    let v = v
        .strip_prefix("mailto:")
        .or_else(|| v.strip_prefix("MAILTO:"))
        .unwrap_or(v)
        .trim();
    let valid = v.len() <= 254
        && !v
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
        && v.rsplit_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty());
    valid.then(|| v.to_string())
}

#[cfg(test)]
mod tests;
#[cfg(test)]
pub mod testslapd;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use ldap3::{ldap_escape, Scope, SearchEntry, SearchOptions};

use self::cache::TtlCache;
use self::pool::{is_connection_error, Pool, ServerSettings, Servers};
use super::{Account, AuthResult, DirError, EntryStatus, Recipient};
use crate::authcache::Auth;
use crate::config::{Config, LdapConfig};

/// LDAP result codes (RFC 4511 appendix A) that matter here.
mod rc {
    pub const SUCCESS: u32 = 0;
    pub const SIZE_LIMIT_EXCEEDED: u32 = 4;
    pub const NO_SUCH_OBJECT: u32 = 32;
    pub const INVALID_CREDENTIALS: u32 = 49;
    /// Answers to a bind that mean "not this user, not now" rather than
    /// "the directory is broken": constraintViolation (password policy
    /// lockout), inappropriateAuthentication, insufficientAccessRights,
    /// unwillingToPerform (e.g. a disabled account on some servers).
    pub const BIND_REFUSALS: [u32; 4] = [19, 48, 50, 53];
}

/// The DN an unknown login binds as, so that it costs what a known one costs.
const NO_SUCH_USER_RDN: &str = "cn=msgd-no-such-user";

/// One entry, attribute names lowercased.
#[derive(Debug, Clone)]
struct Entry {
    dn: String,
    attrs: HashMap<String, Vec<String>>,
}

impl Entry {
    fn from_search(e: SearchEntry) -> Entry {
        Entry {
            dn: e.dn,
            attrs: e
                .attrs
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
        }
    }

    fn values(&self, attr: &str) -> &[String] {
        self.attrs
            .get(&attr.to_ascii_lowercase())
            .map(|v| v.as_slice())
            .unwrap_or(&[])
    }

    fn first(&self, attr: &str) -> Option<&str> {
        self.values(attr)
            .iter()
            .map(|v| v.trim())
            .find(|v| !v.is_empty())
    }
}

/// The LDAP directory client: cheap to clone, shared by every role.
#[derive(Clone)]
pub struct Ldap {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: LdapConfig,
    servers: Arc<Servers>,
    /// Service-account connections for searches.
    lookups: Pool,
    /// Connections that only ever carry user binds.
    binds: Pool,
    /// Attributes read from user and group entries.
    read_attrs: Vec<String>,
    /// `read_attrs` and the `CHANGE_STAMPS`, for a login's entry.
    auth_attrs: Vec<String>,
    /// `local_domains`, lowercase.
    local_domains: HashSet<String>,
    recipients: TtlCache<Option<Recipient>>,
    /// Domain entry status by domain (None: not a local domain).
    domains: TtlCache<Option<EntryStatus>>,
    /// `attributes.domain_status` (non-empty), read from domain entries.
    domain_attrs: Vec<String>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Passwords must not cross the network in clear (the rule lives with the
/// configuration: `LdapConfig::cleartext_errors`).
pub fn cleartext_errors(cfg: &LdapConfig) -> Vec<String> {
    cfg.cleartext_errors()
}

impl Ldap {
    /// A new `directory.cache_ttl` (reload, SIGHUP) for the lookup and
    /// domain caches.
    pub fn set_cache_ttl(&self, ttl: Duration) {
        self.inner.recipients.set_ttl(ttl);
        self.inner.domains.set_ttl(ttl);
    }

    /// Reads the settings; connects lazily, so msgd starts (and answers
    /// "try again later") while the directory is down.
    pub fn open(config: &Config) -> anyhow::Result<Ldap> {
        crate::tls::install_provider();
        let cfg = config.directory.ldap.clone();
        check_attribute_names(&cfg)?;
        if cfg.urls.is_empty() {
            bail!("directory.ldap.urls: no LDAP server given");
        }
        if let Some(e) = cleartext_errors(&cfg).into_iter().next() {
            bail!(e);
        }
        let password = if cfg.bind_password_file.is_empty() {
            cfg.bind_password.expose().to_string()
        } else {
            let path = config.data_path(&cfg.bind_password_file, "");
            let s = std::fs::read_to_string(&path).with_context(|| {
                format!("directory.ldap.bind_password_file: {}", path.display())
            })?;
            s.trim_end_matches(['\r', '\n']).to_string()
        };
        let tls = if cfg.ca_file.is_empty() {
            None
        } else {
            Some(Arc::new(client_tls(&config.data_path(&cfg.ca_file, ""))?))
        };
        let servers = Arc::new(Servers::new(ServerSettings {
            urls: cfg.urls.clone(),
            failback_after: Duration::from_secs(cfg.failback_after),
            connect_timeout: Duration::from_secs(cfg.connect_timeout.max(1)),
            op_timeout: Duration::from_secs(cfg.operation_timeout.max(1)),
            starttls: cfg.starttls,
            tls,
        }));
        let bind = (!cfg.bind_dn.is_empty()).then(|| (cfg.bind_dn.clone(), password));
        let check = Duration::from_secs(cfg.health_check_idle);
        let a = &cfg.attributes;
        let mut read_attrs: Vec<String> = vec![
            "objectClass".into(),
            a.mail.clone(),
            a.alternate_address.clone(),
            a.equivalent_address.clone(),
            a.forwarding_address.clone(),
            a.delivery_option.clone(),
            a.mail_host.clone(),
            a.message_store.clone(),
            a.quota.clone(),
            a.group_address_member.clone(),
            a.group_errors_to.clone(),
            a.msg_quota.clone(),
            a.routing_address.clone(),
            a.preferred_host.clone(),
            a.group_status.clone(),
            a.group_allowed_broadcaster.clone(),
            a.group_allowed_domain.clone(),
        ];
        read_attrs.extend(a.status.iter().cloned());
        read_attrs.extend(a.group_dn_member.iter().cloned());
        read_attrs.retain(|s| !s.is_empty());
        let ttl = Duration::from_secs(config.directory.cache_ttl);
        let mut domain_attrs: Vec<String> = a.domain_status.clone();
        domain_attrs.retain(|s| !s.is_empty());
        if domain_attrs.is_empty() {
            // Nothing to read: ask for no attributes (RFC 4511 4.5.1.8).
            domain_attrs.push("1.1".into());
        }
        Ok(Ldap {
            inner: Arc::new(Inner {
                lookups: Pool::new("lookup", servers.clone(), bind, cfg.pool_size, check),
                binds: Pool::new("auth", servers.clone(), None, cfg.auth_pool_size, check),
                servers,
                auth_attrs: read_attrs
                    .iter()
                    .cloned()
                    .chain(CHANGE_STAMPS.iter().map(|a| a.to_string()))
                    .collect(),
                read_attrs,
                local_domains: cfg
                    .local_domains
                    .iter()
                    .map(|d| d.trim().to_ascii_lowercase())
                    .collect(),
                recipients: TtlCache::new(ttl),
                domains: TtlCache::new(ttl),
                domain_attrs,
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                cfg,
            }),
        })
    }

    /// Cache (hits, misses) since start, over address and domain lookups.
    pub fn cache_stats(&self) -> (u64, u64) {
        (
            self.inner.hits.load(Ordering::Relaxed),
            self.inner.misses.load(Ordering::Relaxed),
        )
    }

    fn hit(&self) {
        self.inner.hits.fetch_add(1, Ordering::Relaxed);
    }

    fn miss(&self) {
        self.inner.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// `domain` is lowercase. A domain whose entry says deleted is not
    /// local.
    pub async fn is_local_domain(&self, domain: &str) -> Result<bool, DirError> {
        Ok(matches!(
            self.domain_status(domain).await?,
            Some(EntryStatus::Active | EntryStatus::Inactive)
        ))
    }

    /// `domain` is lowercase. The status of its entry found by
    /// `domain_filter` (any `attributes.domain_status` value saying
    /// deleted wins over one saying inactive; none: active); a domain in
    /// `local_domains` is active without asking. None: not ours.
    pub async fn domain_status(&self, domain: &str) -> Result<Option<EntryStatus>, DirError> {
        let me = &self.inner;
        if me.local_domains.contains(domain) {
            return Ok(Some(EntryStatus::Active));
        }
        if me.cfg.domain_filter.is_empty() || domain.is_empty() {
            return Ok(None);
        }
        if let Some(v) = me.domains.get(domain) {
            self.hit();
            return Ok(v);
        }
        self.miss();
        let filter = me
            .cfg
            .domain_filter
            .replace("{domain}", &ldap_escape(domain));
        let base = if me.cfg.domain_base_dn.is_empty() {
            &me.cfg.base_dn
        } else {
            &me.cfg.domain_base_dn
        };
        let found = self
            .search(base, Scope::Subtree, &filter, &me.domain_attrs, 1)
            .await?
            .first()
            .map(|e| status_of(e, &me.cfg.attributes.domain_status));
        me.domains.insert(domain, found);
        Ok(found)
    }

    /// `address` is lowercase. `Ok(None)`: no such recipient.
    pub async fn lookup(&self, address: &str) -> Result<Option<Recipient>, DirError> {
        if let Some(v) = self.inner.recipients.get(address) {
            self.hit();
            return Ok(v);
        }
        self.miss();
        let r = self.lookup_uncached(address).await?;
        self.inner.recipients.insert(address, r.clone());
        Ok(r)
    }

    async fn lookup_uncached(&self, address: &str) -> Result<Option<Recipient>, DirError> {
        let me = &self.inner;
        if address.is_empty() {
            return Ok(None);
        }
        let filter = self.not_contact(or_filter(&me.cfg.address_attributes, &[address]));
        let entries = self
            .search(&me.cfg.base_dn, Scope::Subtree, &filter, &me.read_attrs, 2)
            .await?;
        let entry = match entries.as_slice() {
            [] => return Ok(None),
            [e] => e.clone(),
            _ => {
                // Delivering to either could be wrong: hold the mail (4xx)
                // until an operator fixes the directory.
                tracing::error!(address, first = %entries[0].dn, second = %entries[1].dn,
                    "address matches several LDAP entries; fix the directory");
                return Err(DirError::Temporary(format!(
                    "address {address} is ambiguous in the directory"
                )));
            }
        };
        if self.is_group(&entry) {
            let a = &me.cfg.attributes;
            let errors_to = errors_to(&entry, &a.group_errors_to);
            let status = status_of(&entry, std::slice::from_ref(&a.group_status));
            let posting_restricted = [&a.group_allowed_broadcaster, &a.group_allowed_domain]
                .iter()
                .any(|attr| {
                    !attr.is_empty() && entry.values(attr).iter().any(|v| !v.trim().is_empty())
                });
            let allowed_broadcasters = self.broadcasters(&entry).await?;
            let allowed_domains = if a.group_allowed_domain.is_empty() {
                Vec::new()
            } else {
                entry
                    .values(&a.group_allowed_domain)
                    .iter()
                    .map(|d| d.trim().trim_start_matches('@').to_ascii_lowercase())
                    .filter(|d| !d.is_empty())
                    .collect()
            };
            // A group that takes no mail is not expanded.
            let members = if status == EntryStatus::Active {
                self.expand_group(entry).await?
            } else {
                Vec::new()
            };
            return Ok(Some(Recipient::List(crate::directory::List {
                members,
                errors_to,
                status,
                allowed_broadcasters,
                allowed_domains,
                posting_restricted,
            })));
        }
        match self.account(&entry) {
            Some(a) => Ok(Some(Recipient::User(a))),
            None => {
                tracing::warn!(dn = %entry.dn, "LDAP entry matched an address but has no {}", me.cfg.attributes.mail);
                Ok(None)
            }
        }
    }

    /// Checks `password` for `login` (as typed, trimmed) or `qualified`
    /// (`login@server.domain`, lowercase) by binding as the user's DN.
    pub async fn authenticate(
        &self,
        login: &str,
        qualified: &str,
        password: &str,
    ) -> Result<AuthResult, DirError> {
        self.authenticate_with(login, qualified, password, None)
            .await
    }

    /// [`Ldap::authenticate`], the bind skipped when `auth`'s credential
    /// cache verified this password for the entry in its current state
    /// (same DN, same change stamps).
    pub async fn authenticate_cached(
        &self,
        login: &str,
        qualified: &str,
        password: &str,
        auth: &Auth,
    ) -> Result<AuthResult, DirError> {
        self.authenticate_with(login, qualified, password, Some(auth))
            .await
    }

    async fn authenticate_with(
        &self,
        login: &str,
        qualified: &str,
        password: &str,
        auth: Option<&Auth>,
    ) -> Result<AuthResult, DirError> {
        let me = &self.inner;
        let login = login.trim();
        // RFC 4513 5.1.2: a simple bind with an empty password is an
        // unauthenticated bind that servers "accept". Never send one.
        if login.is_empty() || password.is_empty() {
            return Ok(AuthResult::Failed(None));
        }
        let mut names = vec![login];
        if !qualified.is_empty() && !qualified.eq_ignore_ascii_case(login) {
            names.push(qualified);
        }
        let filter = self.not_contact(or_filter(&me.cfg.login_attributes, &names));
        let entries = self
            .search(&me.cfg.base_dn, Scope::Subtree, &filter, &me.auth_attrs, 2)
            .await?;
        let entry = match entries.as_slice() {
            [e] => e,
            [] => {
                let dn = format!("{NO_SUCH_USER_RDN},{}", me.cfg.base_dn);
                let _ = self.bind(&dn, password).await;
                return Ok(AuthResult::Failed(None));
            }
            _ => {
                tracing::warn!(login, "login name matches several LDAP entries; refusing");
                let dn = format!("{NO_SUCH_USER_RDN},{}", me.cfg.base_dn);
                let _ = self.bind(&dn, password).await;
                return Ok(AuthResult::Failed(None));
            }
        };
        let key = entry.dn.to_ascii_lowercase();
        let ok = match (auth, change_stamp(entry)) {
            (Some(auth), Some(stamp)) => {
                auth.check(&key, &stamp, password, || self.bind(&entry.dn, password))
                    .await?
            }
            (auth, _) => {
                let ok = self.bind(&entry.dn, password).await?;
                if let (false, Some(auth)) = (ok, auth) {
                    auth.cache.forget(&key);
                }
                ok
            }
        };
        let account = self.account(entry);
        if !ok {
            // Counted against the account whatever name was typed.
            return Ok(AuthResult::Failed(account.map(|a| a.address)));
        }
        match account {
            // A person with no mailbox is no mail user.
            None => Ok(AuthResult::Failed(None)),
            Some(a) if !a.active => Ok(AuthResult::Inactive),
            Some(a) => Ok(AuthResult::Ok(a)),
        }
    }

    /// Simple bind as `dn` on an auth connection. Ok(true): the password is
    /// right; Ok(false): it is not (or the server refuses this user).
    async fn bind(&self, dn: &str, password: &str) -> Result<bool, DirError> {
        let pool = &self.inner.binds;
        let timeout = self.inner.servers.op_timeout();
        let mut fresh = false;
        loop {
            let mut lease = pool.get(fresh).await?;
            let started = std::time::Instant::now();
            let r = lease
                .ldap
                .with_timeout(timeout)
                .simple_bind(dn, password)
                .await;
            crate::metrics::ldap(started, r.is_ok());
            match r {
                Ok(r) => {
                    let code = r.rc;
                    lease.release();
                    return match code {
                        rc::SUCCESS => Ok(true),
                        rc::INVALID_CREDENTIALS => Ok(false),
                        c if rc::BIND_REFUSALS.contains(&c) => {
                            tracing::debug!(dn, rc = c, "LDAP bind refused");
                            Ok(false)
                        }
                        c => Err(DirError::Temporary(format!("LDAP bind: result code {c}"))),
                    };
                }
                Err(e) => {
                    // A stale pooled connection: one more try on a new one.
                    if lease.reused && is_connection_error(&e) && !fresh {
                        fresh = true;
                        continue;
                    }
                    return Err(DirError::Temporary(format!("LDAP bind: {e}")));
                }
            }
        }
    }

    /// A search on a service connection. `sizelimit` 0: none; hitting the
    /// limit is not an error (the entries found so far come back).
    async fn search(
        &self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[String],
        sizelimit: i32,
    ) -> Result<Vec<Entry>, DirError> {
        let pool = &self.inner.lookups;
        let timeout = self.inner.servers.op_timeout();
        let mut fresh = false;
        loop {
            let mut lease = pool.get(fresh).await?;
            let started = std::time::Instant::now();
            let r = lease
                .ldap
                .with_search_options(SearchOptions::new().sizelimit(sizelimit))
                .with_timeout(timeout)
                .search(base, scope, filter, attrs)
                .await;
            crate::metrics::ldap(started, r.is_ok());
            match r {
                Ok(ldap3::SearchResult(entries, res)) => {
                    lease.release();
                    match res.rc {
                        rc::SUCCESS | rc::SIZE_LIMIT_EXCEEDED => {}
                        // A missing entry (Base) or a user's address book
                        // not made yet (OneLevel, `pab`): nothing there.
                        rc::NO_SUCH_OBJECT if scope != Scope::Subtree => return Ok(Vec::new()),
                        c => {
                            if c == rc::NO_SUCH_OBJECT {
                                tracing::error!(
                                    base,
                                    "LDAP search base does not exist; check directory.ldap.base_dn"
                                );
                            }
                            return Err(DirError::Temporary(format!(
                                "LDAP search: result code {c} {}",
                                res.text
                            )));
                        }
                    }
                    return Ok(entries
                        .into_iter()
                        .filter(|e| !e.is_ref() && !e.is_intermediate())
                        .map(|e| Entry::from_search(SearchEntry::construct(e)))
                        .collect());
                }
                Err(e) => {
                    if lease.reused && is_connection_error(&e) && !fresh {
                        fresh = true;
                        continue;
                    }
                    if !is_connection_error(&e) {
                        lease.release();
                    }
                    return Err(DirError::Temporary(format!("LDAP search: {e}")));
                }
            }
        }
    }

    fn is_group(&self, e: &Entry) -> bool {
        e.values("objectClass").iter().any(|oc| {
            self.inner
                .cfg
                .group_classes
                .iter()
                .any(|g| g.eq_ignore_ascii_case(oc.trim()))
        })
    }

    /// The addresses a group stands for: its address members and the mail
    /// of each DN member, groups in groups to `group_max_depth`, each group
    /// once (cycles end there).
    async fn expand_group(&self, group: Entry) -> Result<Vec<String>, DirError> {
        let cfg = &self.inner.cfg;
        let a = &cfg.attributes;
        let mut out: Vec<String> = Vec::new();
        let mut seen_addr: HashSet<String> = HashSet::new();
        let mut seen_dn: HashSet<String> = HashSet::new();
        seen_dn.insert(group.dn.to_ascii_lowercase());
        let mut queue = VecDeque::from([(group, 0u32)]);
        let mut add = |addr: &str, out: &mut Vec<String>| {
            let addr = addr.trim().to_lowercase();
            if !addr.is_empty() && seen_addr.insert(addr.clone()) {
                out.push(addr);
            }
        };
        'groups: while let Some((g, depth)) = queue.pop_front() {
            for addr in g.values(&a.group_address_member) {
                add(addr, &mut out);
            }
            for attr in &a.group_dn_member {
                for dn in g.values(attr) {
                    if out.len() >= cfg.group_max_members {
                        tracing::warn!(group = %g.dn, limit = cfg.group_max_members,
                            "group expansion stopped at directory.ldap.group_max_members");
                        break 'groups;
                    }
                    let dn = strip_unique_id(dn);
                    if dn.is_empty() || !seen_dn.insert(dn.to_ascii_lowercase()) {
                        continue;
                    }
                    let Some(m) = self.read_entry(dn).await? else {
                        tracing::debug!(group = %g.dn, member = dn, "group member does not exist");
                        continue;
                    };
                    if self.is_group(&m) {
                        let st = status_of(&m, std::slice::from_ref(&a.group_status));
                        if st != EntryStatus::Active {
                            tracing::debug!(group = %g.dn, member = dn, status = st.as_str(),
                                "nested group not active: not expanded");
                        } else if depth < cfg.group_max_depth {
                            queue.push_back((m, depth + 1));
                        } else {
                            tracing::warn!(group = %g.dn, member = dn,
                                "nested group beyond directory.ldap.group_max_depth not expanded");
                        }
                    } else if let Some(mail) = m.first(&a.mail) {
                        add(mail, &mut out);
                    }
                }
            }
        }
        out.truncate(cfg.group_max_members);
        Ok(out)
    }

    /// The entry at `dn`, or None if there is none.
    async fn read_entry(&self, dn: &str) -> Result<Option<Entry>, DirError> {
        Ok(self
            .search(
                dn,
                Scope::Base,
                "(objectClass=*)",
                &self.inner.read_attrs,
                1,
            )
            .await?
            .into_iter()
            .next())
    }

    /// The account an entry describes; None without a mail address.
    fn account(&self, e: &Entry) -> Option<Account> {
        let cfg = &self.inner.cfg;
        let a = &cfg.attributes;
        let address = e.first(&a.mail)?.to_lowercase();
        let mut aliases: Vec<String> = Vec::new();
        for v in e
            .values(&a.alternate_address)
            .iter()
            .chain(e.values(&a.equivalent_address))
        {
            let v = v.trim().to_lowercase();
            if !v.is_empty() && v != address && !aliases.contains(&v) {
                aliases.push(v);
            }
        }
        let inactive = a.status.iter().any(|attr| {
            e.values(attr).iter().any(|s| {
                cfg.inactive_values
                    .iter()
                    .any(|i| i.eq_ignore_ascii_case(s.trim()))
            })
        });
        let deleted = status_of(e, &a.status) == EntryStatus::Deleted;
        let number = |attr: &str| -> Option<u64> {
            if attr.is_empty() {
                return None;
            }
            let q = e.first(attr)?;
            match q.parse::<i64>() {
                Ok(n) if n >= 0 => Some(n as u64),
                Ok(_) => None,
                Err(_) => {
                    tracing::warn!(dn = %e.dn, attr, value = q, "unreadable quota ignored");
                    None
                }
            }
        };
        let optional = |attr: &str| -> Option<String> {
            (!attr.is_empty())
                .then(|| e.first(attr).map(str::to_string))
                .flatten()
        };
        let preferred_host = optional(&a.preferred_host);
        let routing_address = optional(&a.routing_address)
            .map(|r| r.to_lowercase())
            .filter(|r| r.contains('@') && *r != address);
        let options = e.values(&a.delivery_option);
        Some(Account {
            aliases,
            active: !inactive && !deleted,
            deleted,
            quota: number(&a.quota),
            msg_quota: number(&a.msg_quota),
            routing_address,
            // preferredMailHost stands in for a missing mailHost.
            mail_host: e
                .first(&a.mail_host)
                .map(str::to_string)
                .or_else(|| preferred_host.clone()),
            preferred_host,
            partition: e.first(&a.message_store).map(str::to_string),
            forward: e
                .values(&a.forwarding_address)
                .iter()
                .map(|f| f.trim().to_string())
                .filter(|f| !f.is_empty())
                .collect(),
            keep_mailbox: options.is_empty()
                || options
                    .iter()
                    .any(|o| o.trim().eq_ignore_ascii_case("mailbox")),
            ..Account::new(address)
        })
    }

    /// Which URL new connections go to first (for tests and logs).
    #[cfg(test)]
    fn preferred_server(&self) -> usize {
        self.inner.servers.preferred()
    }
}

/// The status an entry's `attrs` give it: any value saying deleted wins,
/// then any saying inactive; none (or only unknown values): active.
fn status_of(e: &Entry, attrs: &[String]) -> EntryStatus {
    let mut st = EntryStatus::Active;
    for attr in attrs.iter().filter(|a| !a.is_empty()) {
        for v in e.values(attr) {
            match EntryStatus::parse(v) {
                Some(EntryStatus::Deleted) => return EntryStatus::Deleted,
                Some(EntryStatus::Inactive) => st = EntryStatus::Inactive,
                _ => {}
            }
        }
    }
    st
}

/// Most DN / URL values of `mgrpAllowedBroadcaster` resolved per group
/// (each costs a search).
const MAX_BROADCASTER_SEARCHES: usize = 32;

/// An `ldap:///base??scope?filter` URL (RFC 4516; the host part is
/// ignored: the configured servers answer), percent-decoded.
fn parse_ldap_url(v: &str) -> Option<(String, Scope, String)> {
    v.get(..7).filter(|p| p.eq_ignore_ascii_case("ldap://"))?;
    let rest = &v[7..];
    let path = &rest[rest.find('/')? + 1..];
    let mut parts = path.splitn(4, '?');
    let dn = percent_decode(parts.next().unwrap_or(""))?;
    let _attrs = parts.next();
    let scope = match parts.next().unwrap_or("").to_ascii_lowercase().as_str() {
        "" | "base" => Scope::Base,
        "one" => Scope::OneLevel,
        "sub" => Scope::Subtree,
        _ => return None,
    };
    let filter = match parts.next().map(percent_decode) {
        None => "(objectClass=*)".to_string(),
        Some(None) => return None,
        Some(Some(f)) if f.is_empty() => "(objectClass=*)".to_string(),
        Some(Some(f)) => f,
    };
    if dn.is_empty() {
        return None;
    }
    Some((dn, scope, filter))
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl Ldap {
    /// A group's allowed broadcasters as lowercase addresses: addresses
    /// and `mailto:` URLs as they are; a DN or an `ldap:///` URL becomes
    /// the `mail` and alternate addresses of the entries it names (a
    /// group: its members, expanded like mail to it). Bounded by
    /// `MAX_BROADCASTER_SEARCHES` and `group_max_members`.
    async fn broadcasters(&self, group: &Entry) -> Result<Vec<String>, DirError> {
        let cfg = &self.inner.cfg;
        let a = &cfg.attributes;
        if a.group_allowed_broadcaster.is_empty() {
            return Ok(Vec::new());
        }
        let mut out: Vec<String> = Vec::new();
        let mut searches = 0usize;
        let add = |v: &str, out: &mut Vec<String>| {
            if let Some(x) = crate::directory::broadcaster_address(v) {
                if !out.contains(&x) && out.len() < cfg.group_max_members {
                    out.push(x);
                }
            }
        };
        for v in group.values(&a.group_allowed_broadcaster) {
            let v = v.trim();
            let is_url = v
                .get(..7)
                .is_some_and(|p| p.eq_ignore_ascii_case("ldap://"));
            let is_dn = !is_url && !v.contains('@') && v.contains('=');
            if !is_url && !is_dn {
                add(v, &mut out);
                continue;
            }
            if searches >= MAX_BROADCASTER_SEARCHES {
                tracing::warn!(group = %group.dn, "too many DN/URL broadcasters; the rest ignored");
                break;
            }
            searches += 1;
            let (base, scope, filter) = if is_url {
                match parse_ldap_url(v) {
                    Some(x) => x,
                    None => {
                        tracing::warn!(group = %group.dn, value = v, "unreadable broadcaster URL ignored");
                        continue;
                    }
                }
            } else {
                (v.to_string(), Scope::Base, "(objectClass=*)".to_string())
            };
            let limit = cfg.group_max_members.min(i32::MAX as usize) as i32;
            // The URL's filter is the directory's own data and goes to the
            // server as written. A missing entry names nobody; a failed
            // search defers the list's mail (fail closed, retried) rather
            // than letting a sender through or refusing one for good.
            let entries = match self
                .search(&base, scope, &filter, &self.inner.read_attrs, limit)
                .await
            {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(group = %group.dn, value = v, error = %e,
                        "allowed broadcaster could not be resolved; the list's mail is deferred");
                    return Err(e);
                }
            };
            for m in entries {
                if self.is_group(&m) {
                    // A group (the list itself included: members-only
                    // posting) stands for its members.
                    for x in Box::pin(self.expand_group(m)).await? {
                        add(&x, &mut out);
                    }
                    continue;
                }
                for x in m
                    .values(&a.mail)
                    .iter()
                    .chain(m.values(&a.alternate_address))
                    .chain(m.values(&a.equivalent_address))
                {
                    add(x, &mut out);
                }
            }
        }
        Ok(out)
    }
}

/// Operational attributes that change whenever an entry (and so its
/// password) changes, read with a login's entry for the credential cache.
/// Servers ignore the ones they do not know (RFC 4511 4.5.1.8).
const CHANGE_STAMPS: [&str; 4] = [
    "entryCSN",
    "modifyTimestamp",
    "pwdChangedTime",
    "pwdAccountLockedTime",
];

/// The entry's password state for the credential cache: its DN and change
/// stamps. None when the server returned neither `entryCSN` nor
/// `modifyTimestamp`: such an entry is never cached (a password change
/// could not be seen).
fn change_stamp(e: &Entry) -> Option<String> {
    if e.first("entryCSN").is_none() && e.first("modifyTimestamp").is_none() {
        return None;
    }
    let mut stamp = e.dn.to_ascii_lowercase();
    for attr in CHANGE_STAMPS {
        for v in e.values(attr) {
            stamp.push('\n');
            stamp.push_str(attr);
            stamp.push('=');
            stamp.push_str(v);
        }
    }
    Some(stamp)
}

/// `(attr=value)` with the value escaped (RFC 4515 3).
fn filter_eq(attr: &str, value: &str) -> String {
    format!("({attr}={})", ldap_escape(value))
}

/// `(|(a1=v1)(a1=v2)(a2=v1)...)`, every value escaped; one term alone is
/// not wrapped.
fn or_filter(attrs: &[String], values: &[&str]) -> String {
    let mut terms: Vec<String> = Vec::new();
    for a in attrs {
        for v in values {
            terms.push(filter_eq(a, v));
        }
    }
    if terms.len() == 1 {
        terms.remove(0)
    } else {
        format!("(|{})", terms.concat())
    }
}

/// `uniqueMember` values may end in an optional unique id
/// (`uid=x,dc=y#'0101'B`, RFC 4517 3.3.21): the DN is what comes before.
fn strip_unique_id(dn: &str) -> &str {
    let dn = dn.trim();
    match dn.rsplit_once("#'") {
        Some((d, id)) if id.ends_with("'B") => d,
        _ => dn,
    }
}

/// Attribute names come from the config and go into filters unescaped:
/// allow only what RFC 4512 1.4 allows (descr or numeric OID, with options).
fn check_attribute_names(cfg: &LdapConfig) -> anyhow::Result<()> {
    let a = &cfg.attributes;
    let mut names: Vec<(&str, &str)> = vec![
        ("attributes.mail", &a.mail),
        ("attributes.alternate_address", &a.alternate_address),
        ("attributes.equivalent_address", &a.equivalent_address),
        ("attributes.forwarding_address", &a.forwarding_address),
        ("attributes.delivery_option", &a.delivery_option),
        ("attributes.mail_host", &a.mail_host),
        ("attributes.message_store", &a.message_store),
        ("attributes.quota", &a.quota),
        ("attributes.group_address_member", &a.group_address_member),
    ];
    names.extend(a.status.iter().map(|s| ("attributes.status", s.as_str())));
    names.extend(
        a.group_dn_member
            .iter()
            .map(|s| ("attributes.group_dn_member", s.as_str())),
    );
    names.extend(
        cfg.address_attributes
            .iter()
            .map(|s| ("address_attributes", s.as_str())),
    );
    names.extend(
        cfg.login_attributes
            .iter()
            .map(|s| ("login_attributes", s.as_str())),
    );
    // Attributes added with the Sun schema's remaining fields may be set
    // empty (not read).
    let optional: Vec<(&str, &str)> = vec![
        ("attributes.group_errors_to", &a.group_errors_to),
        ("attributes.msg_quota", &a.msg_quota),
        ("attributes.routing_address", &a.routing_address),
        ("attributes.preferred_host", &a.preferred_host),
        ("attributes.group_status", &a.group_status),
        (
            "attributes.group_allowed_broadcaster",
            &a.group_allowed_broadcaster,
        ),
        ("attributes.group_allowed_domain", &a.group_allowed_domain),
    ];
    names.extend(optional.into_iter().filter(|(_, n)| !n.is_empty()));
    names.extend(
        a.domain_status
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| ("attributes.domain_status", s.as_str())),
    );
    for (key, name) in names {
        let ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b';');
        if !ok {
            bail!("directory.ldap.{key}: '{name}' is not an LDAP attribute name");
        }
    }
    Ok(())
}

/// TLS client settings trusting the CA certificates in `path` (PEM).
pub(crate) fn client_tls(path: &std::path::Path) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("directory.ldap.ca_file: reading {}", path.display()))?;
    for c in certs {
        let c = c.with_context(|| format!("directory.ldap.ca_file: parsing {}", path.display()))?;
        roots.add(c).with_context(|| {
            format!(
                "directory.ldap.ca_file: bad certificate in {}",
                path.display()
            )
        })?;
    }
    if roots.is_empty() {
        bail!(
            "directory.ldap.ca_file: no certificate in {}",
            path.display()
        );
    }
    Ok(rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}
