//! Provisioning on LDAP: writes with the admin bind
//! (`directory.ldap.admin_dn`), attribute names from
//! `[directory.ldap.attributes]`, entries placed per `[provision.ldap]`
//! (docs/admin.md, "On LDAP").
//!
//! - One connection bound as the admin account
//!   (`directory::mailhost::admin_connect`, the same code `msgd user move`
//!   uses) carries every read and write of this back end; the lookup pools
//!   of `directory::ldap` stay read-only. A user's own password is checked
//!   (`admin_identity`) on a connection of its own, since a bind changes
//!   the identity of the whole connection.
//! - Every operation has the deadline `directory.ldap.operation_timeout`;
//!   a directory that does not answer is `ProvError::Temporary`.
//! - Every value in a filter goes through `ldap_escape`, every RDN value
//!   through `dn_escape` (RFC 4514).
//! - Passwords are hashed here in `provision.ldap.password_scheme`
//!   ({SSHA512}, {ARGON2}, {SSHA}); the clear text is never written nor
//!   logged.
//! - Listings read every matching entry in pages of `PAGE` (the simple
//!   paged results control), at most `MAX_SCAN`, sort them by address and
//!   return the query's page.

use std::collections::HashSet;
use std::time::Duration;

use ldap3::adapters::PagedResults;
use ldap3::{dn_escape, ldap_escape, LdapError, Mod, Scope, SearchEntry};

use super::*;
use crate::config::LdapAttributes;
use crate::directory::mailhost::{admin_connect, AdminConnError};

/// Entries per page of a search (the simple paged results control).
const PAGE: i32 = 500;
/// Most entries one listing or count looks at; past it the caller is told
/// to narrow the query.
const MAX_SCAN: usize = 100_000;
/// Most groups a login is looked up in (one level) for its rights.
const MAX_ADMIN_GROUPS: usize = 200;
/// Most values of one multi-valued attribute we write in one change.
const MAX_VALUES: usize = 10_000;

/// Fixed attribute names and configured extra ones, as one request list.
fn attr_list(fixed: &[&str], extra: &[String]) -> Vec<String> {
    fixed
        .iter()
        .map(|s| s.to_string())
        .chain(extra.iter().cloned())
        .collect()
}

/// What a user search asks for.
fn user_attrs_of(a: &LdapAttributes) -> Vec<String> {
    attr_list(
        &[
            "objectClass",
            &a.mail,
            &a.alternate_address,
            &a.equivalent_address,
            &a.forwarding_address,
            &a.delivery_option,
            &a.mail_host,
            &a.message_store,
            &a.quota,
            &a.msg_quota,
            &a.name,
            &a.deleted_time,
        ],
        &a.status,
    )
}

/// What a group search asks for.
fn group_attrs_of(a: &LdapAttributes) -> Vec<String> {
    attr_list(
        &[
            "objectClass",
            &a.mail,
            &a.alternate_address,
            &a.name,
            &a.group_address_member,
            &a.group_errors_to,
            &a.group_allowed_broadcaster,
            &a.group_allowed_domain,
            &a.group_status,
        ],
        &a.group_dn_member,
    )
}

/// What a domain search asks for.
fn domain_attrs_of(a: &LdapAttributes) -> Vec<String> {
    attr_list(
        &[
            "objectClass",
            "associatedDomain",
            &a.domain_default_quota,
            &a.msg_quota,
            &a.domain_default_host,
            &a.domain_admin,
            &a.domain_max_users,
            &a.domain_disk_quota,
        ],
        &a.domain_status,
    )
}

pub struct LdapProv {
    config: Config,
    /// The admin connection, made on first use and again after it broke.
    conn: std::sync::Mutex<Option<ldap3::Ldap>>,
    user_base: String,
    group_base: String,
    domain_base: String,
    /// The attributes a user, group or domain search asks for: built once
    /// at open from `directory.ldap.attributes` (they never change while open).
    user_attrs: Vec<String>,
    group_attrs: Vec<String>,
    domain_attrs: Vec<String>,
}

/// An entry's attributes, by name as configured (case-insensitive).
struct Entry {
    dn: String,
    attrs: std::collections::HashMap<String, Vec<String>>,
}

impl Entry {
    fn of(e: SearchEntry) -> Entry {
        Entry {
            dn: e.dn,
            attrs: e
                .attrs
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
        }
    }

    fn all(&self, name: &str) -> Vec<String> {
        if name.is_empty() {
            return Vec::new();
        }
        self.attrs
            .get(&name.to_ascii_lowercase())
            .cloned()
            .unwrap_or_default()
    }

    fn first(&self, name: &str) -> Option<String> {
        self.all(name).into_iter().next()
    }

    fn number(&self, name: &str) -> Option<u64> {
        // -1 (or anything negative / unparsable): none of its own.
        self.first(name).and_then(|v| v.trim().parse::<u64>().ok())
    }

    fn has_class(&self, class: &str) -> bool {
        self.all("objectClass")
            .iter()
            .any(|c| c.eq_ignore_ascii_case(class))
    }
}

fn lower(v: Vec<String>) -> Vec<String> {
    v.into_iter()
        .map(|s| s.trim().to_ascii_lowercase())
        .collect()
}

/// `(|(a=v)(b=v)...)` over non-empty attribute names, `v` escaped.
fn any_of(attrs: &[&str], value: &str) -> String {
    let v = ldap_escape(value);
    let parts: Vec<String> = attrs
        .iter()
        .filter(|a| !a.is_empty())
        .map(|a| format!("({a}={v})"))
        .collect();
    format!("(|{})", parts.concat())
}

fn class_filter(classes: &[String]) -> String {
    let parts: Vec<String> = classes
        .iter()
        .map(|c| format!("(objectClass={})", ldap_escape(c.as_str())))
        .collect();
    format!("(|{})", parts.concat())
}

/// GeneralizedTime (`YYYYMMDDHHMMSSZ`) of unix seconds, within years
/// 1970..=9999 (`i64::MAX`, "whenever", is the last second of 9999).
pub fn generalized_time(at: i64) -> String {
    const LAST: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    chrono::DateTime::from_timestamp(at.clamp(0, LAST), 0)
        .unwrap_or_default()
        .format("%Y%m%d%H%M%SZ")
        .to_string()
}

/// Unix seconds of a GeneralizedTime in UTC (`YYYYMMDDHHMMSS[.f]Z`).
pub fn parse_generalized_time(v: &str) -> Option<i64> {
    let v = v.trim();
    let digits = v.get(..14)?;
    chrono::NaiveDateTime::parse_from_str(digits, "%Y%m%d%H%M%S")
        .ok()
        .map(|t| t.and_utc().timestamp())
}

/// A cn value that is the entry's RDN value as the provisioning makes
/// it (the local part, or the whole address), not a display name.
fn is_address_like(v: &str, mail: &str) -> bool {
    let local = mail.split_once('@').map_or(mail, |(l, _)| l);
    v.trim().eq_ignore_ascii_case(local) || v.trim().eq_ignore_ascii_case(mail)
}

/// The display name: the first `attr` value that is not the RDN value
/// made from the address (cn is required, and holds the local part when
/// no name was given).
fn display_name(e: &Entry, attr: &str, mail_attr: &str) -> Option<String> {
    let mail = e.first(mail_attr).unwrap_or_default();
    e.all(attr).into_iter().find(|v| !is_address_like(v, &mail))
}

/// One address given twice in one request (an alias equal to the address).
fn no_repeats(addresses: &[String]) -> Result<()> {
    let mut seen = HashSet::new();
    match addresses.iter().find(|a| !seen.insert(a.as_str())) {
        Some(a) => Err(ProvError::Invalid(format!("{a} is given twice"))),
        None => Ok(()),
    }
}

/// A value that names an entry rather than an address.
fn looks_like_dn(v: &str) -> bool {
    !v.contains('@') && v.contains('=')
}

fn check_address(what: &str, a: &str) -> Result<String> {
    let a = a.trim().to_ascii_lowercase();
    crate::directory::names::check_address(&a)
        .map_err(|e| ProvError::Invalid(format!("{what}: {e}")))?;
    Ok(a)
}

fn check_domain(name: &str) -> Result<String> {
    let d = name.trim().to_ascii_lowercase();
    crate::directory::names::check_domain(&d)
        .map_err(|e| ProvError::Invalid(format!("domain: {e}")))?;
    Ok(d)
}

/// The password as `userPassword` in `scheme` (`SSHA512`, `ARGON2`,
/// `SSHA`; braces optional, case-insensitive).
pub fn hash_password(scheme: &str, password: &str) -> Result<String> {
    use base64::Engine as _;
    let salted = |alg: &'static ring::digest::Algorithm, tag: &str| {
        let mut salt = [0u8; 16];
        rand::Rng::fill(&mut rand::thread_rng(), &mut salt[..]);
        let mut ctx = ring::digest::Context::new(alg);
        ctx.update(password.as_bytes());
        ctx.update(&salt);
        let mut out = ctx.finish().as_ref().to_vec();
        out.extend_from_slice(&salt);
        format!(
            "{{{tag}}}{}",
            base64::engine::general_purpose::STANDARD.encode(out)
        )
    };
    match scheme_of(scheme)? {
        "SSHA512" => Ok(salted(&ring::digest::SHA512, "SSHA512")),
        "SSHA" => Ok(salted(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, "SSHA")),
        // OpenLDAP's argon2 module reads the PHC string libargon2 writes;
        // the argon2 crate writes the same (`$argon2id$v=19$m=..`).
        _ => crate::directory::password::hash(password)
            .map(|h| format!("{{ARGON2}}{h}"))
            .map_err(ProvError::Other),
    }
}

/// The scheme named by `provision.ldap.password_scheme` (braces optional,
/// case-insensitive): `SSHA512`, `ARGON2` or `SSHA`.
fn scheme_of(scheme: &str) -> Result<&'static str> {
    let s = scheme
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .to_ascii_uppercase();
    ["SSHA512", "ARGON2", "SSHA"]
        .into_iter()
        .find(|k| *k == s)
        .ok_or_else(|| {
            ProvError::Invalid(format!(
                "provision.ldap.password_scheme: '{scheme}' is not SSHA512, ARGON2 or SSHA"
            ))
        })
}

/// [`hash_password`] off the async threads (Argon2 takes tens of
/// milliseconds of CPU).
async fn hash_password_blocking(scheme: &str, password: &Secret) -> Result<String> {
    let (scheme, password) = (scheme.to_string(), password.clone());
    tokio::task::spawn_blocking(move || hash_password(&scheme, password.expose()))
        .await
        .map_err(|e| ProvError::Other(anyhow::anyhow!("hashing: {e}")))?
}

/// An LDAP error of an operation on `what` as a provisioning error.
fn rc_err(rc: u32, text: &str, what: &str) -> ProvError {
    match rc {
        32 => ProvError::NotFound(what.into()),
        68 => ProvError::Exists(what.into()),
        // timeLimitExceeded, adminLimitExceeded, busy, unavailable, other
        3 | 11 | 51 | 52 | 80 => ProvError::Temporary(format!("{what}: rc={rc} {text}")),
        50 => ProvError::Other(anyhow::anyhow!(
            "{what}: the directory refused the admin account (rc=50, insufficient access): check directory.ldap.admin_dn and the server's ACLs"
        )),
        66 => ProvError::Invalid(format!("{what}: the entry has entries below it")),
        16..=21 | 34 | 64 | 65 | 67 | 69 => {
            ProvError::Invalid(format!("{what}: the directory refused it: {text} (rc={rc})"))
        }
        _ => ProvError::Other(anyhow::anyhow!("{what}: rc={rc} {text}")),
    }
}

fn conn_err(e: AdminConnError) -> ProvError {
    match e {
        AdminConnError::Unreachable(e) => ProvError::Temporary(format!("{e:#}")),
        AdminConnError::Config(e) => ProvError::Other(e),
        AdminConnError::Refused(m) => ProvError::Other(anyhow::anyhow!(m)),
    }
}

/// What an entry of each kind is searched by.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    User,
    Group,
}

impl LdapProv {
    pub fn open(config: &Config) -> anyhow::Result<LdapProv> {
        let l = &config.directory.ldap;
        let p = &config.provision.ldap;
        let under = |base: &str, ou: &str| {
            if base.is_empty() {
                format!("ou={ou},{}", l.base_dn)
            } else {
                base.to_string()
            }
        };
        let domain_base = if !p.domain_base.is_empty() {
            p.domain_base.clone()
        } else if !l.domain_base_dn.is_empty() {
            l.domain_base_dn.clone()
        } else {
            l.base_dn.clone()
        };
        // A bad scheme is a configuration error, found at start.
        scheme_of(&p.password_scheme).map_err(|e| anyhow::anyhow!("{e}"))?;
        if p.user_rdn.is_empty() {
            anyhow::bail!("provision.ldap.user_rdn is empty");
        }
        Ok(LdapProv {
            user_base: under(&p.user_base, "people"),
            group_base: under(&p.group_base, "groups"),
            domain_base,
            conn: std::sync::Mutex::new(None),
            user_attrs: user_attrs_of(&l.attributes),
            group_attrs: group_attrs_of(&l.attributes),
            domain_attrs: domain_attrs_of(&l.attributes),
            config: config.clone(),
        })
    }

    fn attrs(&self) -> &LdapAttributes {
        &self.config.directory.ldap.attributes
    }

    fn op(&self) -> Duration {
        Duration::from_secs(self.config.directory.ldap.operation_timeout.max(1))
    }

    fn base(&self) -> &str {
        &self.config.directory.ldap.base_dn
    }

    // --------------------------------------------------------------------
    // the connection and the operations, each with its deadline

    async fn ldap(&self) -> Result<ldap3::Ldap> {
        {
            let mut g = self.conn.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(l) = g.as_mut() {
                if !l.is_closed() {
                    return Ok(l.clone());
                }
            }
            *g = None;
        }
        let c = admin_connect(&self.config).await.map_err(conn_err)?;
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(c.ldap.clone());
        Ok(c.ldap)
    }

    /// An error of the connection (not an LDAP result): forget it so the
    /// next call connects again.
    fn failed(&self, e: LdapError, what: &str) -> ProvError {
        match e {
            LdapError::LdapResult { result } => rc_err(result.rc, &result.text, what),
            other => {
                *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = None;
                ProvError::Temporary(format!("{what}: {other}"))
            }
        }
    }

    /// Every entry `filter` finds (at most `max`; past it `Invalid`
    /// asking to narrow the query), in pages.
    async fn search(
        &self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[String],
        max: usize,
    ) -> Result<Vec<Entry>> {
        let op = self.op();
        let mut attrs: Vec<String> = attrs.iter().filter(|a| !a.is_empty()).cloned().collect();
        if attrs.is_empty() {
            attrs.push("1.1".into());
        }
        let mut attempt = 0;
        let r = loop {
            let mut ldap = self.ldap().await?;
            let attrs = attrs.clone();
            let run = async {
                let mut stream = ldap
                    .with_timeout(op)
                    .streaming_search_with(PagedResults::new(PAGE), base, scope, filter, attrs)
                    .await?;
                let mut out = Vec::new();
                while let Some(e) = stream.next().await? {
                    if e.is_ref() || e.is_intermediate() {
                        continue;
                    }
                    if out.len() >= max {
                        return Ok((out, None));
                    }
                    out.push(Entry::of(SearchEntry::construct(e)));
                }
                let res = stream.finish().await;
                Ok::<_, LdapError>((out, Some(res)))
            };
            // The whole listing, page by page, within a bounded time.
            let r = tokio::time::timeout(op * 10, run)
                .await
                .unwrap_or_else(|e| Err(LdapError::Timeout { elapsed: e }));
            attempt += 1;
            match r {
                // The kept connection broke (the server closed it while
                // idle): a search is safe to send once more on a new one.
                Err(e)
                    if attempt == 1
                        && !matches!(
                            e,
                            LdapError::LdapResult { .. } | LdapError::Timeout { .. }
                        ) =>
                {
                    *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = None;
                }
                r => break r,
            }
        };
        match r {
            Err(e) => Err(self.failed(e, &format!("search {filter}"))),
            Ok((_, None)) => {
                // Stopped reading mid-stream: do not reuse the connection.
                *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = None;
                Err(ProvError::Invalid(format!(
                    "more than {max} entries match: narrow the query (domain, text, status)"
                )))
            }
            Ok((out, Some(res))) => match res.rc {
                0 => Ok(out),
                32 if scope == Scope::Base => Ok(Vec::new()),
                4 => Err(ProvError::Invalid(format!(
                    "the directory's size limit stopped the search after {} entries: narrow the query or raise the limit for {} (slapd: limits ... size=unlimited)",
                    out.len(),
                    self.config.directory.ldap.admin_dn
                ))),
                rc => Err(rc_err(rc, &res.text, &format!("search {filter}"))),
            },
        }
    }

    async fn add_entry(&self, dn: &str, attrs: Vec<(String, HashSet<String>)>) -> Result<()> {
        let mut ldap = self.ldap().await?;
        let attrs: Vec<(String, HashSet<String>)> =
            attrs.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        let r = ldap.with_timeout(self.op()).add(dn, attrs).await;
        match r {
            Ok(res) if res.rc == 0 => Ok(()),
            Ok(res) => Err(rc_err(res.rc, &res.text, dn)),
            Err(e) => Err(self.failed(e, dn)),
        }
    }

    async fn modify_entry(&self, dn: &str, mods: Vec<Mod<String>>) -> Result<()> {
        if mods.is_empty() {
            return Ok(());
        }
        let mut ldap = self.ldap().await?;
        let r = ldap.with_timeout(self.op()).modify(dn, mods).await;
        match r {
            Ok(res) if res.rc == 0 => Ok(()),
            Ok(res) => Err(rc_err(res.rc, &res.text, dn)),
            Err(e) => Err(self.failed(e, dn)),
        }
    }

    async fn delete_entry(&self, dn: &str) -> Result<()> {
        let mut ldap = self.ldap().await?;
        let r = ldap.with_timeout(self.op()).delete(dn).await;
        match r {
            Ok(res) if res.rc == 0 => Ok(()),
            Ok(res) => Err(rc_err(res.rc, &res.text, dn)),
            Err(e) => Err(self.failed(e, dn)),
        }
    }

    /// Does an entry with this DN exist?
    async fn exists(&self, dn: &str) -> Result<bool> {
        Ok(!self
            .search(dn, Scope::Base, "(objectClass=*)", &[], 1)
            .await?
            .is_empty())
    }

    // --------------------------------------------------------------------
    // filters and attribute lists

    fn address_attrs(&self) -> Vec<&str> {
        let a = self.attrs();
        vec![
            a.mail.as_str(),
            a.alternate_address.as_str(),
            a.equivalent_address.as_str(),
        ]
    }

    fn group_classes(&self) -> &[String] {
        &self.config.directory.ldap.group_classes
    }

    /// Entries of a kind: groups by their classes; users are the rest
    /// (not a group, not a personal address book contact).
    fn kind_filter(&self, kind: Kind) -> String {
        let groups = class_filter(self.group_classes());
        match kind {
            Kind::Group => groups,
            Kind::User => format!("(&(!{groups})(!(objectClass=msgdContact)))"),
        }
    }

    fn user_attrs(&self) -> &[String] {
        &self.user_attrs
    }

    fn group_attrs(&self) -> &[String] {
        &self.group_attrs
    }

    fn domain_attrs(&self) -> &[String] {
        &self.domain_attrs
    }

    /// The status an entry's status attributes say together: deleted
    /// wins, then inactive (`directory.ldap.inactive_values` too).
    fn status_of(&self, e: &Entry, attrs: &[String]) -> EntryStatus {
        let mut st = EntryStatus::Active;
        for a in attrs {
            for v in e.all(a) {
                let inactive = self
                    .config
                    .directory
                    .ldap
                    .inactive_values
                    .iter()
                    .any(|i| i.eq_ignore_ascii_case(v.trim()));
                match EntryStatus::parse(&v) {
                    Some(EntryStatus::Deleted) => return EntryStatus::Deleted,
                    Some(EntryStatus::Inactive) => st = EntryStatus::Inactive,
                    _ if inactive => st = EntryStatus::Inactive,
                    _ => {}
                }
            }
        }
        st
    }

    fn status_filter(attrs: &[String], st: EntryStatus) -> String {
        let any = |vals: &[&str]| {
            let mut f = String::from("(|");
            for a in attrs.iter().filter(|a| !a.is_empty()) {
                for v in vals {
                    f.push_str(&format!("({a}={v})"));
                }
            }
            f.push(')');
            f
        };
        let deleted = any(&["deleted", "removed"]);
        let inactive = any(&["inactive", "disabled", "hold"]);
        match st {
            EntryStatus::Deleted => deleted,
            EntryStatus::Inactive => format!("(&{inactive}(!{deleted}))"),
            EntryStatus::Active => format!("(&(!{inactive})(!{deleted}))"),
        }
    }

    // --------------------------------------------------------------------
    // users

    fn to_user(&self, e: &Entry) -> User {
        let a = self.attrs();
        let options = lower(e.all(&a.delivery_option));
        let forward = e.all(&a.forwarding_address);
        User {
            address: e.first(&a.mail).unwrap_or_default().to_ascii_lowercase(),
            name: display_name(e, &a.name, &a.mail),
            aliases: lower(e.all(&a.alternate_address)),
            equivalents: lower(e.all(&a.equivalent_address)),
            mail_host: e.first(&a.mail_host),
            partition: e.first(&a.message_store),
            quota: e.number(&a.quota),
            msg_quota: e.number(&a.msg_quota),
            status: self.status_of(e, &a.status),
            keep_mailbox: options.is_empty() || options.iter().any(|o| o == "mailbox"),
            forward,
            class: None,
            deleted_at: e
                .first(&a.deleted_time)
                .and_then(|v| parse_generalized_time(&v)),
        }
    }

    /// The one entry of a kind with this address (any address attribute).
    async fn find(&self, kind: Kind, address: &str, attrs: &[String]) -> Result<Option<Entry>> {
        let address = address.trim().to_ascii_lowercase();
        let filter = format!(
            "(&{}({}={}))",
            self.kind_filter(kind),
            self.attrs().mail,
            ldap_escape(address.as_str())
        );
        let mut found = self
            .search(self.base(), Scope::Subtree, &filter, attrs, 2)
            .await
            .map_err(|e| match e {
                ProvError::Invalid(_) => {
                    ProvError::Invalid(format!("{address}: several entries have this address"))
                }
                e => e,
            })?;
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            _ => Err(ProvError::Invalid(format!(
                "{address}: several entries have this address"
            ))),
        }
    }

    /// `Exists` if any entry (user or group) already has one of these
    /// addresses, other than the entry `except`.
    async fn addresses_free(&self, addresses: &[String], except: Option<&str>) -> Result<()> {
        if addresses.is_empty() {
            return Ok(());
        }
        // One search for all of them, in bounded chunks.
        let attrs = self.address_attrs();
        let read: Vec<String> = attrs.iter().map(|s| s.to_string()).collect();
        for chunk in addresses.chunks(100) {
            let filter = format!(
                "(|{})",
                chunk.iter().map(|a| any_of(&attrs, a)).collect::<String>()
            );
            let found = self
                .search(self.base(), Scope::Subtree, &filter, &read, MAX_SCAN)
                .await?;
            for e in found
                .iter()
                .filter(|e| except.is_none_or(|x| !e.dn.eq_ignore_ascii_case(x)))
            {
                let have: Vec<String> = attrs.iter().flat_map(|a| lower(e.all(a))).collect();
                if let Some(a) = chunk.iter().find(|a| have.contains(a)) {
                    return Err(ProvError::Exists(a.clone()));
                }
            }
        }
        Ok(())
    }

    pub async fn admin_identity(
        &self,
        login: &str,
        password: Option<&Secret>,
    ) -> Result<AdminIdentity> {
        let cfg = &self.config.directory.ldap;
        let a = self.attrs();
        let login = login.trim();
        if login.is_empty() || login.len() > 1024 {
            return Err(ProvError::Denied("no administrator named".into()));
        }
        let mut attrs = vec![a.mail.clone(), a.alternate_address.clone()];
        attrs.push("objectClass".into());
        // A DN names the entry itself; else the login attributes and the
        // addresses (the name as typed and qualified with server.domain).
        let found = if looks_like_dn(login) {
            self.search(login, Scope::Base, "(objectClass=*)", &attrs, 1)
                .await?
        } else {
            let qualified =
                crate::directory::qualify_login(login, &self.config.server.domain).to_lowercase();
            let mut names: Vec<&str> = cfg.login_attributes.iter().map(|s| s.as_str()).collect();
            names.extend(self.address_attrs());
            let filter = format!(
                "(&{}(|{}{}))",
                self.kind_filter(Kind::User),
                any_of(&names, login),
                any_of(&self.address_attrs(), &qualified)
            );
            self.search(self.base(), Scope::Subtree, &filter, &attrs, 2)
                .await?
        };
        let entry = match found.as_slice() {
            [e] => e,
            [] => return Err(ProvError::Denied(format!("{login}: no such administrator"))),
            _ => {
                return Err(ProvError::Denied(format!(
                    "{login}: several directory entries match"
                )))
            }
        };
        if let Some(pw) = password {
            self.check_password(&entry.dn, pw).await?;
        }
        let mail = entry.first(&a.mail).map(|m| m.to_ascii_lowercase());
        let mut names = vec![entry.dn.clone()];
        names.extend(mail.clone());
        names.extend(lower(entry.all(&a.alternate_address)));
        // Groups listing the entry (by DN, or by address), one level.
        let mut member_of = Vec::new();
        let mut by: Vec<String> = a
            .group_dn_member
            .iter()
            .filter(|m| !m.is_empty())
            .map(|m| format!("({m}={})", ldap_escape(entry.dn.as_str())))
            .collect();
        if let (Some(m), false) = (&mail, a.group_address_member.is_empty()) {
            by.push(format!(
                "({}={})",
                a.group_address_member,
                ldap_escape(m.as_str())
            ));
        }
        if !by.is_empty() {
            let filter = format!("(&{}(|{}))", self.kind_filter(Kind::Group), by.concat());
            for g in self
                .search(self.base(), Scope::Subtree, &filter, &[], MAX_ADMIN_GROUPS)
                .await?
            {
                member_of.push(g.dn);
            }
        }
        // Domains naming the entry or one of those groups.
        let mut domains = Vec::new();
        if !a.domain_admin.is_empty() {
            let mut by = format!("({}={})", a.domain_admin, ldap_escape(entry.dn.as_str()));
            for g in &member_of {
                by.push_str(&format!("({}={})", a.domain_admin, ldap_escape(g.as_str())));
            }
            let filter = format!("(&(associatedDomain=*)(|{by}))");
            for d in self
                .search(
                    self.base(),
                    Scope::Subtree,
                    &filter,
                    &["associatedDomain".to_string()],
                    MAX_SCAN,
                )
                .await?
            {
                domains.extend(lower(d.all("associatedDomain")));
            }
        }
        domains.sort();
        domains.dedup();
        // Site: a member of provision.site_admin_group, or named in
        // provision.site_admins (by DN or address).
        let p = &self.config.provision;
        let group = p.site_admin_group.trim();
        let mut site = !group.is_empty() && {
            let mut dn_filter: Vec<String> = vec![];
            for m in a.group_dn_member.iter().filter(|m| !m.is_empty()) {
                dn_filter.push(format!("({m}={})", ldap_escape(entry.dn.as_str())));
            }
            if let (Some(m), false) = (&mail, a.group_address_member.is_empty()) {
                dn_filter.push(format!(
                    "({}={})",
                    a.group_address_member,
                    ldap_escape(m.as_str())
                ));
            }
            !self
                .search(
                    group,
                    Scope::Base,
                    &format!("(|{})", dn_filter.concat()),
                    &[],
                    1,
                )
                .await?
                .is_empty()
        };
        site |= p
            .site_admins
            .iter()
            .any(|s| names.iter().any(|n| n.eq_ignore_ascii_case(s.trim())));
        Ok(AdminIdentity {
            id: mail.unwrap_or_else(|| entry.dn.clone()),
            names,
            site,
            domains,
        })
    }

    /// A bind as `dn` with the password, on a connection of its own.
    async fn check_password(&self, dn: &str, password: &Secret) -> Result<()> {
        // An empty password would be an unauthenticated bind (RFC 4513
        // 5.1.2), which succeeds without proving anything.
        if password.is_empty() {
            return Err(ProvError::Denied("wrong password".into()));
        }
        let cfg = &self.config.directory.ldap;
        let op = self.op();
        let mut settings = ldap3::LdapConnSettings::new()
            .set_conn_timeout(Duration::from_secs(cfg.connect_timeout.max(1)))
            .set_starttls(cfg.starttls);
        if !cfg.ca_file.is_empty() {
            let tls = crate::directory::ldap::client_tls(&self.config.data_path(&cfg.ca_file, ""))?;
            settings = settings.set_config(std::sync::Arc::new(tls));
        }
        let mut last = ProvError::Temporary("directory.ldap.urls is empty".into());
        for url in &cfg.urls {
            let attempt = async {
                let (conn, mut ldap) =
                    ldap3::LdapConnAsync::with_settings(settings.clone(), url).await?;
                tokio::spawn(async move {
                    let _ = conn.drive().await;
                });
                let r = ldap
                    .with_timeout(op)
                    .simple_bind(dn, password.expose())
                    .await;
                let _ = ldap.unbind().await;
                r
            };
            match tokio::time::timeout(op * 2, attempt).await {
                Ok(Ok(r)) if r.rc == 0 => return Ok(()),
                Ok(Ok(r)) if r.rc == 49 => return Err(ProvError::Denied("wrong password".into())),
                Ok(Ok(r)) => last = rc_err(r.rc, &r.text, "password check"),
                Ok(Err(e)) => last = ProvError::Temporary(format!("LDAP {url}: {e}")),
                Err(_) => last = ProvError::Temporary(format!("LDAP {url}: timed out")),
            }
        }
        Err(last)
    }

    pub async fn user_get(&self, address: &str) -> Result<Option<User>> {
        Ok(self
            .find(Kind::User, address, self.user_attrs())
            .await?
            .map(|e| self.to_user(&e)))
    }

    async fn user_entry(&self, address: &str) -> Result<Entry> {
        self.find(Kind::User, address, self.user_attrs())
            .await?
            .ok_or_else(|| ProvError::NotFound(address.into()))
    }

    /// Users matching a query: a server-side filter on domain, text and
    /// status.
    fn user_filter(&self, q: &Query) -> String {
        let a = self.attrs();
        let mut f = format!("(&{}({}=*)", self.kind_filter(Kind::User), a.mail);
        if let Some(d) = &q.domain {
            f.push_str(&format!(
                "({}=*@{})",
                a.mail,
                ldap_escape(d.trim().to_ascii_lowercase())
            ));
        }
        if let Some(t) = q.text.as_deref().filter(|t| !t.trim().is_empty()) {
            let t = ldap_escape(t.trim());
            let mut any = vec![format!("({}=*{t}*)", a.mail)];
            if !a.name.is_empty() {
                any.push(format!("({}=*{t}*)", a.name));
            }
            f.push_str(&format!("(|{})", any.concat()));
        }
        if let Some(st) = q.status {
            f.push_str(&Self::status_filter(&a.status, st));
        }
        f.push(')');
        f
    }

    pub async fn user_list(&self, q: &Query) -> Result<Page<User>> {
        let found = self
            .search(
                self.base(),
                Scope::Subtree,
                &self.user_filter(q),
                self.user_attrs(),
                MAX_SCAN,
            )
            .await?;
        let mut users: Vec<User> = found.iter().map(|e| self.to_user(e)).collect();
        // The server filters loosely (e.g. values it does not know as a
        // status): the model's status decides.
        if let Some(st) = q.status {
            users.retain(|u| u.status == st);
        }
        users.sort_by(|a, b| a.address.cmp(&b.address));
        Ok(page_of(users, q))
    }

    /// The entry attributes of a user's mail fields (for add; values
    /// already checked).
    fn delivery_options(keep_mailbox: bool, forward: &[String]) -> Result<HashSet<String>> {
        let mut o = HashSet::new();
        if keep_mailbox {
            o.insert("mailbox".to_string());
        }
        if !forward.is_empty() {
            o.insert("forward".to_string());
        }
        if o.is_empty() {
            return Err(ProvError::Invalid(
                "a user that keeps no mailbox needs a forwarding address".into(),
            ));
        }
        Ok(o)
    }

    /// Creates the entry with the password hashed.
    pub async fn user_add(&self, user: &User, password: &Secret) -> Result<User> {
        let a = self.attrs().clone();
        let p = &self.config.provision.ldap;
        let address = check_address("address", &user.address)?;
        let (local, _) = address.split_once('@').unwrap_or((&address, ""));
        let mut others = Vec::new();
        for x in user.aliases.iter().chain(&user.equivalents) {
            others.push(check_address("alias", x)?);
        }
        let forward: Vec<String> = user
            .forward
            .iter()
            .map(|f| check_address("forward", f))
            .collect::<Result<_>>()?;
        if others.len() + forward.len() > MAX_VALUES {
            return Err(ProvError::Invalid("too many addresses".into()));
        }
        let mut all = vec![address.clone()];
        all.extend(others.iter().cloned());
        no_repeats(&all)?;
        self.addresses_free(&all, None).await?;
        // uid=<local part>, or the whole address when that RDN is taken.
        let rdn = &p.user_rdn;
        let mut dn = format!("{rdn}={},{}", dn_escape(local), self.user_base);
        let mut rdn_value = local.to_string();
        if self.exists(&dn).await? {
            dn = format!("{rdn}={},{}", dn_escape(address.as_str()), self.user_base);
            rdn_value = address.clone();
        }
        let set = |v: &[String]| v.iter().cloned().collect::<HashSet<String>>();
        let one = |v: &str| HashSet::from([v.to_string()]);
        let mut attrs: Vec<(String, HashSet<String>)> = vec![
            ("objectClass".into(), set(&p.user_classes)),
            (rdn.clone(), one(&rdn_value)),
            (a.mail.clone(), one(&address)),
        ];
        let person = p.user_classes.iter().any(|c| {
            ["inetOrgPerson", "person", "organizationalPerson"]
                .iter()
                .any(|x| c.eq_ignore_ascii_case(x))
        });
        let name = user.name.clone().filter(|n| !n.trim().is_empty());
        if person || name.is_some() {
            let cn = name.clone().unwrap_or_else(|| local.to_string());
            if person {
                let sn = cn.split_whitespace().last().unwrap_or(local).to_string();
                attrs.push(("sn".into(), one(&sn)));
            }
            // cn may be the RDN attribute already.
            if a.name.eq_ignore_ascii_case(rdn) {
                if name.is_some() {
                    attrs.retain(|(k, _)| !k.eq_ignore_ascii_case(rdn));
                    attrs.push((rdn.clone(), HashSet::from([rdn_value.clone(), cn])));
                }
            } else {
                attrs.push((a.name.clone(), one(&cn)));
            }
        }
        let aliases: Vec<String> = lower(user.aliases.clone());
        let equivalents: Vec<String> = lower(user.equivalents.clone());
        attrs.push((a.alternate_address.clone(), set(&aliases)));
        attrs.push((a.equivalent_address.clone(), set(&equivalents)));
        attrs.push((a.forwarding_address.clone(), set(&forward)));
        attrs.push((
            a.delivery_option.clone(),
            Self::delivery_options(user.keep_mailbox, &forward)?,
        ));
        if let Some(h) = &user.mail_host {
            attrs.push((a.mail_host.clone(), one(h)));
        }
        if let Some(s) = &user.partition {
            attrs.push((a.message_store.clone(), one(s)));
        }
        if let Some(q) = user.quota {
            attrs.push((a.quota.clone(), one(&q.to_string())));
        }
        if let Some(q) = user.msg_quota {
            attrs.push((a.msg_quota.clone(), one(&q.to_string())));
        }
        if let Some(s) = a.status.first() {
            attrs.push((s.clone(), one(user.status.as_str())));
        }
        if user.status == EntryStatus::Deleted {
            let at = user.deleted_at.unwrap_or_else(now);
            attrs.push((a.deleted_time.clone(), one(&generalized_time(at))));
        }
        // As on the embedded directory: a user has a password.
        if password.is_empty() {
            return Err(ProvError::Invalid("password: empty".into()));
        }
        let h = hash_password_blocking(&p.password_scheme, password).await?;
        attrs.push(("userPassword".into(), one(&h)));
        attrs.retain(|(k, v)| !k.is_empty() && !v.is_empty());
        self.add_entry(&dn, attrs).await.map_err(|e| match e {
            ProvError::Exists(_) => ProvError::Exists(address.clone()),
            e => e,
        })?;
        self.user_get(&address)
            .await?
            .ok_or_else(|| ProvError::NotFound(address.clone()))
    }

    pub async fn user_modify(&self, address: &str, change: &UserChange) -> Result<User> {
        let a = self.attrs().clone();
        let e = self.user_entry(address).await?;
        let before = self.to_user(&e);
        let mut mods: Vec<Mod<String>> = Vec::new();
        let one = |v: String| HashSet::from([v]);
        let local = before
            .address
            .split_once('@')
            .map_or(before.address.clone(), |(l, _)| l.to_string());
        if let Some(name) = &change.name {
            let cn = name.clone().filter(|n| !n.trim().is_empty());
            if !a.name.is_empty()
                && !a
                    .name
                    .eq_ignore_ascii_case(&self.config.provision.ldap.user_rdn)
            {
                // cn is required by person classes: cleared means the local part.
                let person = e.has_class("person")
                    || e.has_class("inetOrgPerson")
                    || e.has_class("organizationalPerson");
                match (cn, person) {
                    (Some(cn), _) => mods.push(Mod::Replace(a.name.clone(), one(cn))),
                    (None, true) => mods.push(Mod::Replace(a.name.clone(), one(local.clone()))),
                    (None, false) => mods.push(Mod::Replace(a.name.clone(), HashSet::new())),
                }
            }
        }
        if let Some(pw) = &change.password {
            if pw.is_empty() {
                return Err(ProvError::Invalid("password: empty".into()));
            }
            let h = hash_password_blocking(&self.config.provision.ldap.password_scheme, pw).await?;
            mods.push(Mod::Replace("userPassword".into(), one(h)));
        }
        // Addresses: new ones must be free; values already there are skipped.
        let add_alias: Vec<String> = change
            .add_aliases
            .iter()
            .map(|x| check_address("alias", x))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .filter(|x| !before.aliases.contains(x))
            .collect();
        let add_equiv: Vec<String> = change
            .add_equivalents
            .iter()
            .map(|x| check_address("equivalent", x))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .filter(|x| !before.equivalents.contains(x))
            .collect();
        if add_alias.len() + add_equiv.len() > MAX_VALUES {
            return Err(ProvError::Invalid("too many addresses".into()));
        }
        let mut new_addresses = add_alias.clone();
        new_addresses.extend(add_equiv.iter().cloned());
        self.addresses_free(&new_addresses, Some(&e.dn)).await?;
        let present = |have: &[String], want: &[String]| -> HashSet<String> {
            want.iter()
                .map(|w| w.trim().to_ascii_lowercase())
                .filter(|w| have.contains(w))
                .collect()
        };
        // Values are compared by the server case-insensitively: delete the
        // stored spelling.
        let stored = |attr: &str, remove: &HashSet<String>| -> HashSet<String> {
            e.all(attr)
                .into_iter()
                .filter(|v| remove.contains(&v.to_ascii_lowercase()))
                .collect()
        };
        if !add_alias.is_empty() {
            mods.push(Mod::Add(
                a.alternate_address.clone(),
                add_alias.into_iter().collect(),
            ));
        }
        let rm = present(&before.aliases, &change.remove_aliases);
        if !rm.is_empty() {
            mods.push(Mod::Delete(
                a.alternate_address.clone(),
                stored(&a.alternate_address, &rm),
            ));
        }
        if !add_equiv.is_empty() {
            mods.push(Mod::Add(
                a.equivalent_address.clone(),
                add_equiv.into_iter().collect(),
            ));
        }
        let rm = present(&before.equivalents, &change.remove_equivalents);
        if !rm.is_empty() {
            mods.push(Mod::Delete(
                a.equivalent_address.clone(),
                stored(&a.equivalent_address, &rm),
            ));
        }
        // mailHost and partition: where the mail is. Changing them on a
        // user whose mail already has a place would strand it: that is
        // `msgd user move`. Setting them where none was set is allowed.
        for (what, attr, new, old) in [
            (
                "mailHost",
                &a.mail_host,
                &change.mail_host,
                &before.mail_host,
            ),
            (
                "partition",
                &a.message_store,
                &change.partition,
                &before.partition,
            ),
        ] {
            let Some(new) = new else { continue };
            if new == old {
                continue;
            }
            if old.is_some() {
                return Err(ProvError::Invalid(format!(
                    "{what} of {} is {}: use `msgd user move {} HOST` to move its mail",
                    before.address,
                    old.as_deref().unwrap_or(""),
                    before.address
                )));
            }
            mods.push(Mod::Replace(attr.clone(), new.iter().cloned().collect()));
        }
        for (attr, v) in [(&a.quota, &change.quota), (&a.msg_quota, &change.msg_quota)] {
            if let Some(v) = v {
                let vals = v.iter().map(|n| n.to_string()).collect();
                mods.push(Mod::Replace(attr.clone(), vals));
            }
        }
        if let Some(st) = change.status {
            if let Some((first, rest)) = a.status.split_first() {
                mods.push(Mod::Replace(first.clone(), one(st.as_str().to_string())));
                // The other status attributes would still say what they
                // said (any inactive one wins when read): they go.
                for r in rest.iter().filter(|r| !e.all(r).is_empty()) {
                    mods.push(Mod::Replace(r.clone(), HashSet::new()));
                }
            }
            if !a.deleted_time.is_empty() {
                if st == EntryStatus::Deleted {
                    if before.deleted_at.is_none() {
                        mods.push(Mod::Replace(
                            a.deleted_time.clone(),
                            one(generalized_time(now())),
                        ));
                    }
                } else if before.deleted_at.is_some() {
                    mods.push(Mod::Replace(a.deleted_time.clone(), HashSet::new()));
                }
            }
        }
        if change.forward.is_some() || change.keep_mailbox.is_some() {
            let forward: Vec<String> = match &change.forward {
                Some(f) => f
                    .iter()
                    .map(|x| check_address("forward", x))
                    .collect::<Result<_>>()?,
                None => before.forward.clone(),
            };
            if forward.len() > MAX_VALUES {
                return Err(ProvError::Invalid("too many forwarding addresses".into()));
            }
            let keep = change.keep_mailbox.unwrap_or(before.keep_mailbox);
            let options = Self::delivery_options(keep, &forward)?;
            if change.forward.is_some() {
                mods.push(Mod::Replace(
                    a.forwarding_address.clone(),
                    forward.into_iter().collect(),
                ));
            }
            mods.push(Mod::Replace(a.delivery_option.clone(), options));
        }
        mods.retain(|m| match m {
            Mod::Add(k, _) | Mod::Delete(k, _) | Mod::Replace(k, _) | Mod::Increment(k, _) => {
                !k.is_empty()
            }
        });
        self.modify_entry(&e.dn, mods).await?;
        self.user_get(&before.address)
            .await?
            .ok_or_else(|| ProvError::NotFound(before.address.clone()))
    }

    /// Status deleted, `deleted_at = at`.
    pub async fn user_mark_deleted(&self, address: &str, at: i64) -> Result<User> {
        let a = self.attrs().clone();
        let e = self.user_entry(address).await?;
        let mut mods = Vec::new();
        if let Some(first) = a.status.first() {
            mods.push(Mod::Replace(
                first.clone(),
                HashSet::from(["deleted".to_string()]),
            ));
        }
        if !a.deleted_time.is_empty() {
            mods.push(Mod::Replace(
                a.deleted_time.clone(),
                HashSet::from([generalized_time(at)]),
            ));
        }
        self.modify_entry(&e.dn, mods).await?;
        let u = self.to_user(&e);
        self.user_get(&u.address)
            .await?
            .ok_or_else(|| ProvError::NotFound(u.address))
    }

    /// Removes the entry for good.
    pub async fn user_remove(&self, address: &str) -> Result<()> {
        let e = self.user_entry(address).await?;
        self.delete_entry(&e.dn).await
    }

    /// Users marked deleted before `before`.
    pub async fn deleted_users(&self, before: i64) -> Result<Vec<User>> {
        let a = self.attrs();
        if a.deleted_time.is_empty() {
            return Err(ProvError::Invalid(
                "directory.ldap.attributes.deleted_time is empty: deleted users cannot be dated"
                    .into(),
            ));
        }
        let filter = format!(
            "(&{}{}({dt}=*)(!({dt}>={})))",
            self.kind_filter(Kind::User),
            Self::status_filter(&a.status, EntryStatus::Deleted),
            generalized_time(before),
            dt = a.deleted_time
        );
        let found = self
            .search(
                self.base(),
                Scope::Subtree,
                &filter,
                self.user_attrs(),
                MAX_SCAN,
            )
            .await?;
        let mut users: Vec<User> = found
            .iter()
            .map(|e| self.to_user(e))
            .filter(|u| {
                u.status == EntryStatus::Deleted && u.deleted_at.is_some_and(|t| t < before)
            })
            .collect();
        users.sort_by(|x, y| x.address.cmp(&y.address));
        Ok(users)
    }

    // --------------------------------------------------------------------
    // groups

    fn to_group(&self, e: &Entry) -> Group {
        let a = self.attrs();
        let mut member_dns = Vec::new();
        for m in &a.group_dn_member {
            member_dns.extend(e.all(m).into_iter().filter(|d| !d.trim().is_empty()));
        }
        Group {
            address: e.first(&a.mail).unwrap_or_default().to_ascii_lowercase(),
            name: display_name(e, &a.name, &a.mail),
            aliases: lower(e.all(&a.alternate_address)),
            members: lower(e.all(&a.group_address_member)),
            member_dns,
            errors_to: e
                .first(&a.group_errors_to)
                .map(|v| v.strip_prefix("mailto:").map(str::to_string).unwrap_or(v)),
            allowed_broadcasters: e.all(&a.group_allowed_broadcaster),
            allowed_domains: lower(e.all(&a.group_allowed_domain)),
            status: self.status_of(e, std::slice::from_ref(&a.group_status)),
        }
    }

    /// The attribute DN members are written to for a group of these
    /// classes (`uniqueMember` for groupOfUniqueNames, else the first
    /// configured), and whether the class requires one.
    fn dn_member_attr(&self, classes: &[String]) -> (String, bool) {
        let a = self.attrs();
        let has = |c: &str| classes.iter().any(|x| x.eq_ignore_ascii_case(c));
        let pick = |want: &str| {
            a.group_dn_member
                .iter()
                .find(|m| m.eq_ignore_ascii_case(want))
                .cloned()
        };
        if has("groupOfUniqueNames") {
            if let Some(m) = pick("uniqueMember") {
                return (m, true);
            }
        }
        if has("groupOfNames") {
            if let Some(m) = pick("member") {
                return (m, true);
            }
        }
        (
            a.group_dn_member.first().cloned().unwrap_or_default(),
            false,
        )
    }

    pub async fn group_get(&self, address: &str) -> Result<Option<Group>> {
        Ok(self
            .find(Kind::Group, address, self.group_attrs())
            .await?
            .map(|e| self.to_group(&e)))
    }

    pub async fn group_list(&self, q: &Query) -> Result<Page<Group>> {
        let a = self.attrs();
        let mut f = format!("(&{}({}=*)", self.kind_filter(Kind::Group), a.mail);
        if let Some(d) = &q.domain {
            f.push_str(&format!(
                "({}=*@{})",
                a.mail,
                ldap_escape(d.trim().to_ascii_lowercase())
            ));
        }
        if let Some(t) = q.text.as_deref().filter(|t| !t.trim().is_empty()) {
            f.push_str(&format!("({}=*{}*)", a.mail, ldap_escape(t.trim())));
        }
        if let Some(st) = q.status {
            if !a.group_status.is_empty() {
                f.push_str(&Self::status_filter(
                    std::slice::from_ref(&a.group_status),
                    st,
                ));
            }
        }
        f.push(')');
        let found = self
            .search(
                self.base(),
                Scope::Subtree,
                &f,
                self.group_attrs(),
                MAX_SCAN,
            )
            .await?;
        let mut groups: Vec<Group> = found.iter().map(|e| self.to_group(e)).collect();
        if let Some(st) = q.status {
            groups.retain(|g| g.status == st);
        }
        groups.sort_by(|x, y| x.address.cmp(&y.address));
        Ok(page_of(groups, q))
    }

    pub async fn group_add(&self, group: &Group) -> Result<Group> {
        let a = self.attrs().clone();
        let p = &self.config.provision.ldap;
        let address = check_address("address", &group.address)?;
        let (local, _) = address.split_once('@').unwrap_or((&address, ""));
        let aliases: Vec<String> = group
            .aliases
            .iter()
            .map(|x| check_address("alias", x))
            .collect::<Result<_>>()?;
        // A member given by DN among the addresses (the CLI's --member)
        // goes with the DN members.
        let (dn_given, addr_given): (Vec<&String>, Vec<&String>) =
            group.members.iter().partition(|m| looks_like_dn(m));
        let members: Vec<String> = addr_given
            .into_iter()
            .map(|x| check_address("member", x))
            .collect::<Result<_>>()?;
        let mut member_dns: Vec<String> = group.member_dns.clone();
        member_dns.extend(dn_given.into_iter().map(|d| d.trim().to_string()));
        if aliases.len() + members.len() + member_dns.len() > MAX_VALUES {
            return Err(ProvError::Invalid("too many members".into()));
        }
        let mut all = vec![address.clone()];
        all.extend(aliases.iter().cloned());
        no_repeats(&all)?;
        self.addresses_free(&all, None).await?;
        let mut dn = format!("cn={},{}", dn_escape(local), self.group_base);
        let mut cn = local.to_string();
        if self.exists(&dn).await? {
            dn = format!("cn={},{}", dn_escape(address.as_str()), self.group_base);
            cn = address.clone();
        }
        let set = |v: &[String]| v.iter().cloned().collect::<HashSet<String>>();
        let one = |v: &str| HashSet::from([v.to_string()]);
        let mut cns = one(&cn);
        if let Some(n) = group.name.as_ref().filter(|n| !n.trim().is_empty()) {
            if a.name.eq_ignore_ascii_case("cn") {
                cns.insert(n.clone());
            }
        }
        let mut attrs: Vec<(String, HashSet<String>)> = vec![
            ("objectClass".into(), set(&p.group_classes)),
            ("cn".into(), cns),
            (a.mail.clone(), one(&address)),
            (a.alternate_address.clone(), set(&aliases)),
            (a.group_address_member.clone(), set(&members)),
        ];
        if let Some(n) = group.name.as_ref().filter(|n| !n.trim().is_empty()) {
            if !a.name.eq_ignore_ascii_case("cn") {
                attrs.push((a.name.clone(), one(n)));
            }
        }
        let (dn_attr, required) = self.dn_member_attr(&p.group_classes);
        let mut dns = set(&member_dns);
        if dns.is_empty() && required {
            // groupOfNames / groupOfUniqueNames need a member: the empty
            // DN stands for none (msgd skips it when expanding).
            dns.insert(String::new());
        }
        attrs.push((dn_attr, dns));
        if let Some(e) = group.errors_to.as_ref().filter(|e| !e.is_empty()) {
            attrs.push((
                a.group_errors_to.clone(),
                one(&check_address("errors_to", e)?),
            ));
        }
        attrs.push((
            a.group_allowed_broadcaster.clone(),
            set(&group.allowed_broadcasters),
        ));
        attrs.push((
            a.group_allowed_domain.clone(),
            set(&lower(group.allowed_domains.clone())),
        ));
        attrs.push((a.group_status.clone(), one(group.status.as_str())));
        attrs.retain(|(k, v)| !k.is_empty() && !v.is_empty());
        self.add_entry(&dn, attrs).await.map_err(|e| match e {
            ProvError::Exists(_) => ProvError::Exists(address.clone()),
            e => e,
        })?;
        self.group_get(&address)
            .await?
            .ok_or_else(|| ProvError::NotFound(address.clone()))
    }

    pub async fn group_modify(&self, address: &str, change: &GroupChange) -> Result<Group> {
        let a = self.attrs().clone();
        let e = self
            .find(Kind::Group, address, self.group_attrs())
            .await?
            .ok_or_else(|| ProvError::NotFound(address.into()))?;
        let before = self.to_group(&e);
        let classes = e.all("objectClass");
        let (dn_attr, required) = self.dn_member_attr(&classes);
        let mut mods: Vec<Mod<String>> = Vec::new();
        let one = |v: String| HashSet::from([v]);
        if let Some(n) = &change.name {
            let n = n.clone().filter(|n| !n.trim().is_empty());
            if a.name.eq_ignore_ascii_case("cn") {
                // cn holds the RDN value too: only the name values change.
                let mail = e.first(&a.mail).unwrap_or_default();
                let old: HashSet<String> = e
                    .all(&a.name)
                    .into_iter()
                    .filter(|v| !is_address_like(v, &mail))
                    .collect();
                if !old.is_empty() {
                    mods.push(Mod::Delete(a.name.clone(), old));
                }
                if let Some(n) = n.filter(|n| !is_address_like(n, &mail)) {
                    mods.push(Mod::Add(a.name.clone(), one(n)));
                }
            } else if !a.name.is_empty() {
                mods.push(Mod::Replace(a.name.clone(), n.into_iter().collect()));
            }
        }
        // Aliases.
        let add_alias: Vec<String> = change
            .add_aliases
            .iter()
            .map(|x| check_address("alias", x))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .filter(|x| !before.aliases.contains(x))
            .collect();
        self.addresses_free(&add_alias, Some(&e.dn)).await?;
        if !add_alias.is_empty() {
            mods.push(Mod::Add(
                a.alternate_address.clone(),
                add_alias.into_iter().collect(),
            ));
        }
        let rm: HashSet<String> = e
            .all(&a.alternate_address)
            .into_iter()
            .filter(|v| {
                change
                    .remove_aliases
                    .iter()
                    .any(|r| r.trim().eq_ignore_ascii_case(v))
            })
            .collect();
        if !rm.is_empty() {
            mods.push(Mod::Delete(a.alternate_address.clone(), rm));
        }
        // Members: a DN (no @, has =) or an address.
        let (mut add_dns, mut add_addrs) = (HashSet::new(), HashSet::new());
        for m in &change.add_members {
            if looks_like_dn(m) {
                if !before
                    .member_dns
                    .iter()
                    .any(|d| d.eq_ignore_ascii_case(m.trim()))
                {
                    add_dns.insert(m.trim().to_string());
                }
            } else {
                let m = check_address("member", m)?;
                if !before.members.contains(&m) {
                    add_addrs.insert(m);
                }
            }
        }
        if add_dns.len() + add_addrs.len() > MAX_VALUES {
            return Err(ProvError::Invalid("too many members".into()));
        }
        let rm_dns: HashSet<String> = e
            .all(&dn_attr)
            .into_iter()
            .filter(|d| {
                !d.is_empty()
                    && change
                        .remove_members
                        .iter()
                        .any(|r| r.trim().eq_ignore_ascii_case(d))
            })
            .collect();
        let rm_addrs: HashSet<String> = e
            .all(&a.group_address_member)
            .into_iter()
            .filter(|v| {
                change
                    .remove_members
                    .iter()
                    .any(|r| r.trim().eq_ignore_ascii_case(v))
            })
            .collect();
        if !add_addrs.is_empty() {
            mods.push(Mod::Add(a.group_address_member.clone(), add_addrs));
        }
        if !rm_addrs.is_empty() {
            mods.push(Mod::Delete(a.group_address_member.clone(), rm_addrs));
        }
        if !add_dns.is_empty() || !rm_dns.is_empty() {
            let mut now: HashSet<String> = e
                .all(&dn_attr)
                .into_iter()
                .filter(|d| !d.is_empty() && !rm_dns.contains(d))
                .collect();
            now.extend(add_dns);
            if now.is_empty() && required {
                now.insert(String::new());
            }
            mods.push(Mod::Replace(dn_attr.clone(), now));
        }
        if let Some(et) = &change.errors_to {
            let v = match et.as_ref().filter(|x| !x.is_empty()) {
                Some(x) => one(check_address("errors_to", x)?),
                None => HashSet::new(),
            };
            mods.push(Mod::Replace(a.group_errors_to.clone(), v));
        }
        if let Some(b) = &change.allowed_broadcasters {
            if b.len() > MAX_VALUES {
                return Err(ProvError::Invalid("too many broadcasters".into()));
            }
            mods.push(Mod::Replace(
                a.group_allowed_broadcaster.clone(),
                b.iter().map(|x| x.trim().to_string()).collect(),
            ));
        }
        if let Some(d) = &change.allowed_domains {
            if d.len() > MAX_VALUES {
                return Err(ProvError::Invalid("too many domains".into()));
            }
            mods.push(Mod::Replace(
                a.group_allowed_domain.clone(),
                lower(d.clone()).into_iter().collect(),
            ));
        }
        if let Some(st) = change.status {
            mods.push(Mod::Replace(
                a.group_status.clone(),
                one(st.as_str().into()),
            ));
        }
        mods.retain(|m| match m {
            Mod::Add(k, _) | Mod::Delete(k, _) | Mod::Replace(k, _) | Mod::Increment(k, _) => {
                !k.is_empty()
            }
        });
        self.modify_entry(&e.dn, mods).await?;
        self.group_get(&before.address)
            .await?
            .ok_or_else(|| ProvError::NotFound(before.address.clone()))
    }

    pub async fn group_delete(&self, address: &str) -> Result<()> {
        let e = self
            .find(Kind::Group, address, &[])
            .await?
            .ok_or_else(|| ProvError::NotFound(address.into()))?;
        self.delete_entry(&e.dn).await
    }

    // --------------------------------------------------------------------
    // domains

    fn to_domain(&self, e: &Entry, name: Option<&str>) -> Domain {
        let a = self.attrs();
        let names = lower(e.all("associatedDomain"));
        Domain {
            name: name
                .map(str::to_string)
                .or_else(|| names.first().cloned())
                .unwrap_or_default(),
            status: self.status_of(e, &a.domain_status),
            default_quota: e.number(&a.domain_default_quota),
            default_msg_quota: e.number(&a.msg_quota),
            default_mail_host: e.first(&a.domain_default_host),
            admins: e.all(&a.domain_admin),
            max_users: e.number(&a.domain_max_users),
            max_quota: e.number(&a.domain_disk_quota),
        }
    }

    async fn domain_entry(&self, name: &str) -> Result<Option<Entry>> {
        let name = check_domain(name)?;
        let filter = format!("(associatedDomain={})", ldap_escape(name.as_str()));
        let mut found = self
            .search(self.base(), Scope::Subtree, &filter, self.domain_attrs(), 2)
            .await?;
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            _ => Err(ProvError::Invalid(format!(
                "{name}: several directory entries have associatedDomain={name}"
            ))),
        }
    }

    pub async fn domain_get(&self, name: &str) -> Result<Option<Domain>> {
        let n = check_domain(name)?;
        Ok(self
            .domain_entry(&n)
            .await?
            .map(|e| self.to_domain(&e, Some(&n))))
    }

    pub async fn domain_list(&self, q: &Query) -> Result<Page<Domain>> {
        let a = self.attrs();
        let mut f = String::from("(&(associatedDomain=*)");
        if let Some(t) = q
            .text
            .as_deref()
            .or(q.domain.as_deref())
            .filter(|t| !t.trim().is_empty())
        {
            f.push_str(&format!(
                "(associatedDomain=*{}*)",
                ldap_escape(t.trim().to_ascii_lowercase())
            ));
        }
        if let Some(st) = q.status {
            f.push_str(&Self::status_filter(&a.domain_status, st));
        }
        f.push(')');
        let found = self
            .search(
                self.base(),
                Scope::Subtree,
                &f,
                self.domain_attrs(),
                MAX_SCAN,
            )
            .await?;
        let mut domains = Vec::new();
        for e in &found {
            for n in lower(e.all("associatedDomain")) {
                let keep = q
                    .text
                    .as_deref()
                    .or(q.domain.as_deref())
                    .is_none_or(|t| n.contains(&t.trim().to_ascii_lowercase()));
                if keep {
                    domains.push(self.to_domain(e, Some(&n)));
                }
            }
        }
        if let Some(st) = q.status {
            domains.retain(|d| d.status == st);
        }
        domains.sort_by(|x, y| x.name.cmp(&y.name));
        domains.dedup_by(|x, y| x.name == y.name);
        Ok(page_of(domains, q))
    }

    /// The DN of an administrator named by DN (must exist) or address
    /// (a user's or a group's).
    async fn admin_dn(&self, who: &str) -> Result<String> {
        let who = who.trim();
        if looks_like_dn(who) {
            if self.exists(who).await? {
                return Ok(who.to_string());
            }
            return Err(ProvError::NotFound(who.into()));
        }
        let addr = check_address("admin", who)?;
        let filter = format!("({}={})", self.attrs().mail, ldap_escape(addr.as_str()));
        let found = self
            .search(self.base(), Scope::Subtree, &filter, &[], 2)
            .await?;
        match found.as_slice() {
            [e] => Ok(e.dn.clone()),
            [] => Err(ProvError::NotFound(addr)),
            _ => Err(ProvError::Invalid(format!("{addr}: several entries"))),
        }
    }

    pub async fn domain_add(&self, domain: &Domain) -> Result<Domain> {
        let a = self.attrs().clone();
        let name = check_domain(&domain.name)?;
        if self.domain_entry(&name).await?.is_some() {
            return Err(ProvError::Exists(name));
        }
        let p = &self.config.provision.ldap;
        let dn = format!("dc={},{}", dn_escape(name.as_str()), self.domain_base);
        let one = |v: String| HashSet::from([v]);
        let mut admins = HashSet::new();
        for x in &domain.admins {
            admins.insert(self.admin_dn(x).await?);
        }
        let mut attrs: Vec<(String, HashSet<String>)> = vec![
            (
                "objectClass".into(),
                p.domain_classes.iter().cloned().collect(),
            ),
            ("dc".into(), one(name.clone())),
            ("associatedDomain".into(), one(name.clone())),
            (a.domain_admin.clone(), admins),
        ];
        if let Some(s) = a.domain_status.first() {
            attrs.push((s.clone(), one(domain.status.as_str().into())));
        }
        for (attr, v) in [
            (&a.domain_default_quota, domain.default_quota),
            (&a.msg_quota, domain.default_msg_quota),
            (&a.domain_max_users, domain.max_users),
            (&a.domain_disk_quota, domain.max_quota),
        ] {
            if let Some(v) = v {
                attrs.push((attr.clone(), one(v.to_string())));
            }
        }
        if let Some(h) = &domain.default_mail_host {
            attrs.push((a.domain_default_host.clone(), one(h.clone())));
        }
        attrs.retain(|(k, v)| !k.is_empty() && !v.is_empty());
        self.add_entry(&dn, attrs).await.map_err(|e| match e {
            ProvError::Exists(_) => ProvError::Exists(name.clone()),
            e => e,
        })?;
        self.domain_get(&name)
            .await?
            .ok_or_else(|| ProvError::NotFound(name.clone()))
    }

    pub async fn domain_modify(&self, name: &str, change: &DomainChange) -> Result<Domain> {
        let a = self.attrs().clone();
        let name = check_domain(name)?;
        let e = self
            .domain_entry(&name)
            .await?
            .ok_or_else(|| ProvError::NotFound(name.clone()))?;
        let mut mods: Vec<Mod<String>> = Vec::new();
        let num = |v: &Option<u64>| v.iter().map(|n| n.to_string()).collect::<HashSet<_>>();
        if let Some(st) = change.status {
            if let Some((first, rest)) = a.domain_status.split_first() {
                mods.push(Mod::Replace(
                    first.clone(),
                    HashSet::from([st.as_str().to_string()]),
                ));
                for r in rest.iter().filter(|r| !e.all(r).is_empty()) {
                    mods.push(Mod::Replace(r.clone(), HashSet::new()));
                }
            }
        }
        for (attr, v) in [
            (&a.domain_default_quota, &change.default_quota),
            (&a.msg_quota, &change.default_msg_quota),
            (&a.domain_max_users, &change.max_users),
            (&a.domain_disk_quota, &change.max_quota),
        ] {
            if let Some(v) = v {
                mods.push(Mod::Replace(attr.clone(), num(v)));
            }
        }
        if let Some(h) = &change.default_mail_host {
            mods.push(Mod::Replace(
                a.domain_default_host.clone(),
                h.iter().cloned().collect(),
            ));
        }
        if !change.add_admins.is_empty() || !change.remove_admins.is_empty() {
            let mut admins: Vec<String> = e.all(&a.domain_admin);
            for r in &change.remove_admins {
                let dn = if looks_like_dn(r) {
                    r.trim().to_string()
                } else {
                    match self.admin_dn(r).await {
                        Ok(d) => d,
                        Err(ProvError::NotFound(_)) => continue,
                        Err(e) => return Err(e),
                    }
                };
                admins.retain(|x| !x.eq_ignore_ascii_case(&dn));
            }
            for x in &change.add_admins {
                let dn = self.admin_dn(x).await?;
                if !admins.iter().any(|y| y.eq_ignore_ascii_case(&dn)) {
                    admins.push(dn);
                }
            }
            if admins.len() > MAX_VALUES {
                return Err(ProvError::Invalid("too many administrators".into()));
            }
            mods.push(Mod::Replace(
                a.domain_admin.clone(),
                admins.into_iter().collect(),
            ));
        }
        mods.retain(|m| match m {
            Mod::Add(k, _) | Mod::Delete(k, _) | Mod::Replace(k, _) | Mod::Increment(k, _) => {
                !k.is_empty()
            }
        });
        self.modify_entry(&e.dn, mods).await?;
        self.domain_get(&name)
            .await?
            .ok_or_else(|| ProvError::NotFound(name.clone()))
    }

    /// Refused while the domain has users or groups.
    pub async fn domain_delete(&self, name: &str) -> Result<()> {
        let name = check_domain(name)?;
        let e = self
            .domain_entry(&name)
            .await?
            .ok_or_else(|| ProvError::NotFound(name.clone()))?;
        let pattern = format!("*@{}", ldap_escape(name.as_str()));
        let parts: Vec<String> = self
            .address_attrs()
            .iter()
            .filter(|x| !x.is_empty())
            .map(|x| format!("({x}={pattern})"))
            .collect();
        let filter = format!("(&(!(objectClass=msgdContact))(|{}))", parts.concat());
        // `max` 1: more than one is Invalid, which also says "some".
        let any = match self
            .search(self.base(), Scope::Subtree, &filter, &[], 1)
            .await
        {
            Ok(found) => !found.is_empty(),
            Err(ProvError::Invalid(_)) => true,
            Err(e) => return Err(e),
        };
        if any {
            return Err(ProvError::Invalid(format!(
                "{name} still has users or groups: delete them first"
            )));
        }
        // An entry naming several domains loses only this one.
        let names = lower(e.all("associatedDomain"));
        if names.len() > 1 {
            let keep: HashSet<String> = e
                .all("associatedDomain")
                .into_iter()
                .filter(|n| !n.eq_ignore_ascii_case(&name))
                .collect();
            return self
                .modify_entry(&e.dn, vec![Mod::Replace("associatedDomain".into(), keep)])
                .await;
        }
        self.delete_entry(&e.dn).await
    }

    /// (users, quota bytes given to them) of a domain: users not marked
    /// deleted whose `mail` is in the domain; a user without a quota of
    /// its own counts the domain's default quota (as on the embedded
    /// directory).
    pub async fn domain_usage(&self, name: &str) -> Result<(u64, u64)> {
        let name = check_domain(name)?;
        let a = self.attrs();
        let filter = format!(
            "(&{}({}=*@{})(!{}))",
            self.kind_filter(Kind::User),
            a.mail,
            ldap_escape(name.as_str()),
            Self::status_filter(&a.status, EntryStatus::Deleted)
        );
        let mut usage_attrs = vec![a.mail.clone(), a.quota.clone()];
        usage_attrs.extend(a.status.iter().cloned());
        let found = self
            .search(self.base(), Scope::Subtree, &filter, &usage_attrs, MAX_SCAN)
            .await?;
        let default = self
            .domain_entry(&name)
            .await?
            .and_then(|e| e.number(&a.domain_default_quota));
        let mut users = 0u64;
        let mut quota = 0u64;
        for e in &found {
            let u = self.to_user(e);
            if u.status == EntryStatus::Deleted {
                continue;
            }
            users += 1;
            quota = quota.saturating_add(u.quota.or(default).unwrap_or(0));
        }
        Ok((users, quota))
    }
}

/// The query's page of sorted items.
fn page_of<T>(items: Vec<T>, q: &Query) -> Page<T> {
    let total = items.len();
    let limit = q.limit.clamp(1, MAX_PAGE);
    let items = items.into_iter().skip(q.offset).take(limit).collect();
    Page { items, total }
}

#[cfg(test)]
#[path = "ldap_tests.rs"]
mod ldap_tests;
