//! Provisioning and delegated administration (issue 15, docs/admin.md):
//! one model of users, groups and domains over both directory back ends,
//! with rights delegated per domain and every change logged.
//!
//! Layout, one file a concern:
//! - this file: the model (what the CLI, the HTTP API and the console
//!   exchange), `Actor` (who acts), `ProvError`, and `Provisioner`, which
//!   checks the actor's rights (`policy`), calls the back end, and records
//!   the change (`audit`);
//! - `embedded`: the embedded directory file (src/directory/embedded.rs);
//! - `ldap`: LDAP writes with the admin bind (`directory.ldap.admin_dn`),
//!   separate from the read-only service account, Sun attribute names
//!   mapped by `[directory.ldap.attributes]`;
//! - `policy`: site and domain administrators, per-domain limits;
//! - `audit`: the change log;
//! - `purge`: users marked deleted are purged from their store later,
//!   never in the same step as the deletion;
//! - `csv`: bulk import and export;
//! - `cli`: `msgd user|group|domain ...`.
//!
//! Invariants: a password is hashed before it leaves this module and never
//! logged; every value placed in an LDAP filter or DN is escaped; a
//! refusal is a `ProvError` with a message fit for an administrator.

pub mod api;
pub mod audit;
pub mod cli;
pub mod console;
pub mod csv;
pub mod embedded;
pub mod ldap;
pub mod policy;
pub mod purge;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::{Config, DirectoryBackend};
use crate::directory::EntryStatus;
use crate::redact::Secret;

// ------------------------------------------------------------------------
// the model

/// A user as the provisioning sees it (more than `directory::Account`,
/// which is what delivery and login need).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct User {
    /// Canonical address (`mail`), lowercase.
    pub address: String,
    /// A display name (cn).
    pub name: Option<String>,
    /// mailAlternateAddress (the embedded directory keeps every other
    /// address here).
    pub aliases: Vec<String>,
    /// mailEquivalentAddress.
    pub equivalents: Vec<String>,
    pub mail_host: Option<String>,
    pub partition: Option<String>,
    /// Bytes.
    pub quota: Option<u64>,
    /// Messages.
    pub msg_quota: Option<u64>,
    pub status: EntryStatus,
    /// mailDeliveryOption `mailbox`: keep a copy (with forwarding).
    pub keep_mailbox: bool,
    /// mailForwardingAddress.
    pub forward: Vec<String>,
    /// The service class it was created with.
    pub class: Option<String>,
    /// When it was marked deleted (unix seconds).
    pub deleted_at: Option<i64>,
}

impl Default for User {
    fn default() -> Self {
        User {
            address: String::new(),
            name: None,
            aliases: Vec::new(),
            equivalents: Vec::new(),
            mail_host: None,
            partition: None,
            quota: None,
            msg_quota: None,
            status: EntryStatus::Active,
            keep_mailbox: true,
            forward: Vec::new(),
            class: None,
            deleted_at: None,
        }
    }
}

/// A change to a user: `None` leaves a field alone; `Some(None)` clears
/// an optional one.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UserChange {
    pub name: Option<Option<String>>,
    /// A new password (hashed by the back end; never serialized, so
    /// never in the change log).
    #[serde(skip_serializing)]
    pub password: Option<Secret>,
    pub add_aliases: Vec<String>,
    pub remove_aliases: Vec<String>,
    pub add_equivalents: Vec<String>,
    pub remove_equivalents: Vec<String>,
    /// A mailHost change of an existing user starts `msgd user move`
    /// (docs/operations.md) rather than rewriting the attribute.
    pub mail_host: Option<Option<String>>,
    pub partition: Option<Option<String>>,
    pub quota: Option<Option<u64>>,
    pub msg_quota: Option<Option<u64>>,
    pub status: Option<EntryStatus>,
    pub keep_mailbox: Option<bool>,
    /// Replaces the forwarding addresses.
    pub forward: Option<Vec<String>>,
}

/// A group (mailing list).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Group {
    pub address: String,
    pub name: Option<String>,
    pub aliases: Vec<String>,
    /// Members by address (mgrpRFC822MailMember).
    pub members: Vec<String>,
    /// Members by DN (LDAP only: uniqueMember / member).
    pub member_dns: Vec<String>,
    /// mgrpErrorsTo.
    pub errors_to: Option<String>,
    /// mgrpAllowedBroadcaster.
    pub allowed_broadcasters: Vec<String>,
    /// mgrpAllowedDomain.
    pub allowed_domains: Vec<String>,
    pub status: EntryStatus,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupChange {
    pub name: Option<Option<String>>,
    pub add_aliases: Vec<String>,
    pub remove_aliases: Vec<String>,
    pub add_members: Vec<String>,
    pub remove_members: Vec<String>,
    pub errors_to: Option<Option<String>>,
    pub allowed_broadcasters: Option<Vec<String>>,
    pub allowed_domains: Option<Vec<String>>,
    pub status: Option<EntryStatus>,
}

/// A mail domain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Domain {
    /// Lowercase.
    pub name: String,
    pub status: EntryStatus,
    /// Quota (bytes, messages) and store given to new users.
    pub default_quota: Option<u64>,
    pub default_msg_quota: Option<u64>,
    pub default_mail_host: Option<String>,
    /// Its administrators (addresses; DNs on LDAP).
    pub admins: Vec<String>,
    /// Most users, and most quota bytes given to all of them together.
    pub max_users: Option<u64>,
    pub max_quota: Option<u64>,
}

impl Domain {
    /// Has a user count or total quota limit to check.
    pub fn has_limits(&self) -> bool {
        self.max_users.is_some() || self.max_quota.is_some()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DomainChange {
    pub status: Option<EntryStatus>,
    pub default_quota: Option<Option<u64>>,
    pub default_msg_quota: Option<Option<u64>>,
    pub default_mail_host: Option<Option<String>>,
    pub add_admins: Vec<String>,
    pub remove_admins: Vec<String>,
    pub max_users: Option<Option<u64>>,
    pub max_quota: Option<Option<u64>>,
}

/// What a listing asks for: a domain, a substring of the address or name,
/// a status, and a page.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Query {
    pub domain: Option<String>,
    pub text: Option<String>,
    pub status: Option<EntryStatus>,
    pub offset: usize,
    /// At most `MAX_PAGE`.
    pub limit: usize,
}

impl Default for Query {
    fn default() -> Self {
        Query {
            domain: None,
            text: None,
            status: None,
            offset: 0,
            limit: 100,
        }
    }
}

/// Longest page a listing returns.
pub const MAX_PAGE: usize = 1000;

/// One page of a listing and how many matched in all.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: usize,
}

// ------------------------------------------------------------------------
// who acts

/// Who makes a change: every call names one, every change is logged with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum Actor {
    /// Manages everything: the operator's CLI (`id` is `cli:<unix user>`)
    /// or a site administrator.
    Site { id: String },
    /// Manages the users and groups of these domains (lowercase) only.
    Domain { id: String, domains: Vec<String> },
}

impl Actor {
    /// Who, for the log.
    pub fn id(&self) -> &str {
        match self {
            Actor::Site { id } | Actor::Domain { id, .. } => id,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProvError {
    #[error("{0}: no such entry")]
    NotFound(String),
    #[error("{0} exists already")]
    Exists(String),
    /// The actor may not do this (names what and why).
    #[error("not allowed: {0}")]
    Denied(String),
    /// A per-domain limit would be exceeded.
    #[error("limit reached: {0}")]
    Limit(String),
    /// A bad value (names the field).
    #[error("invalid: {0}")]
    Invalid(String),
    /// The directory could not answer: try again later.
    #[error("directory temporarily unavailable: {0}")]
    Temporary(String),
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
}

pub type Result<T> = std::result::Result<T, ProvError>;

// ------------------------------------------------------------------------
// the provisioner

// One per login (or process): its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Backend {
    Embedded(embedded::EmbeddedProv),
    Ldap(ldap::LdapProv),
}

/// Checks rights, calls the back end, logs the change. Cheap to share.
pub struct Provisioner {
    backend: Backend,
    config: Arc<Config>,
    audit: audit::Log,
    /// Held from a limit check to the write it allows, so that two
    /// administrators adding users at once in this process cannot both
    /// pass a check that only one of them fits (docs/admin.md "Limits":
    /// two processes can still race).
    limits: tokio::sync::Mutex<()>,
}

/// Dispatches one call to the back end.
macro_rules! backend {
    ($self:ident . $m:ident ( $($a:expr),* )) => {
        match &$self.backend {
            Backend::Embedded(b) => b.$m($($a),*).await,
            Backend::Ldap(b) => b.$m($($a),*).await,
        }
    };
}

impl Provisioner {
    pub fn open(config: Arc<Config>) -> anyhow::Result<Provisioner> {
        let backend = match config.directory.backend {
            DirectoryBackend::Embedded => Backend::Embedded(embedded::EmbeddedProv::open(&config)?),
            DirectoryBackend::Ldap => Backend::Ldap(ldap::LdapProv::open(&config)?),
        };
        Ok(Provisioner {
            backend,
            audit: audit::Log::open(&config)?,
            config,
            limits: tokio::sync::Mutex::new(()),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// An administrator's login for the API and the console: the password
    /// checked by the back end, the rights read from the directory.
    /// `Denied` for a valid user who administers nothing.
    pub async fn admin_login(&self, login: &str, password: &Secret) -> Result<Actor> {
        let who = backend!(self.admin_identity(login, Some(password)))?;
        policy::actor_of(&self.config, who)
    }

    /// The rights of an administrator named on the CLI (`--as ADDRESS`),
    /// without a password (the operator already holds the config).
    pub async fn actor_named(&self, login: &str) -> Result<Actor> {
        let who = backend!(self.admin_identity(login, None))?;
        policy::actor_of(&self.config, who)
    }

    pub async fn user_get(&self, actor: &Actor, address: &str) -> Result<User> {
        policy::may_touch_address(actor, address)?;
        backend!(self.user_get(address))?.ok_or_else(|| ProvError::NotFound(address.into()))
    }

    pub async fn user_list(&self, actor: &Actor, q: &Query) -> Result<Page<User>> {
        let q = policy::scope_query(actor, q)?;
        backend!(self.user_list(&q))
    }

    /// Creates a user; the domain's defaults and the service class fill
    /// what `user` leaves empty; the domain's limits are checked.
    pub async fn user_add(&self, actor: &Actor, user: User, password: Secret) -> Result<User> {
        policy::may_touch_address(actor, &user.address)?;
        policy::may_create_user(actor, &user)?;
        let (user, domain) = policy::with_defaults(self, user).await?;
        // The check and the add are one step only where the domain has
        // limits; other adds run side by side (a bulk import).
        let limited = domain.filter(Domain::has_limits);
        let _limits = match limited {
            Some(_) => Some(self.limits.lock().await),
            None => None,
        };
        if let Some(d) = &limited {
            policy::check_domain_limits(self, d, &user, None).await?;
        }
        let made = backend!(self.user_add(&user, &password))?;
        self.audit.record(actor, "user.add", &made.address, &made);
        Ok(made)
    }

    pub async fn user_modify(
        &self,
        actor: &Actor,
        address: &str,
        change: UserChange,
    ) -> Result<User> {
        policy::may_touch_address(actor, address)?;
        policy::may_change_user(actor, &change)?;
        let _limits = self.limits.lock().await;
        let before = self.user_get(actor, address).await?;
        policy::check_user_limits(self, &before, Some(&change)).await?;
        let after = backend!(self.user_modify(address, &change))?;
        self.audit
            .record_change(actor, "user.modify", address, &change);
        Ok(after)
    }

    /// Marks the user deleted (mail refused or kept per
    /// `provision.deleted_mail`, no login); `purge` removes it later.
    pub async fn user_delete(&self, actor: &Actor, address: &str) -> Result<User> {
        policy::may_touch_address(actor, address)?;
        let after = backend!(self.user_mark_deleted(address, now()))?;
        self.audit.record(actor, "user.delete", address, &after);
        Ok(after)
    }

    pub async fn group_get(&self, actor: &Actor, address: &str) -> Result<Group> {
        policy::may_touch_address(actor, address)?;
        backend!(self.group_get(address))?.ok_or_else(|| ProvError::NotFound(address.into()))
    }

    pub async fn group_list(&self, actor: &Actor, q: &Query) -> Result<Page<Group>> {
        let q = policy::scope_query(actor, q)?;
        backend!(self.group_list(&q))
    }

    pub async fn group_add(&self, actor: &Actor, group: Group) -> Result<Group> {
        policy::may_touch_address(actor, &group.address)?;
        let made = backend!(self.group_add(&group))?;
        self.audit.record(actor, "group.add", &made.address, &made);
        Ok(made)
    }

    pub async fn group_modify(
        &self,
        actor: &Actor,
        address: &str,
        change: GroupChange,
    ) -> Result<Group> {
        policy::may_touch_address(actor, address)?;
        let after = backend!(self.group_modify(address, &change))?;
        self.audit
            .record_change(actor, "group.modify", address, &change);
        Ok(after)
    }

    /// Groups hold no mail: deleted at once.
    pub async fn group_delete(&self, actor: &Actor, address: &str) -> Result<()> {
        policy::may_touch_address(actor, address)?;
        backend!(self.group_delete(address))?;
        self.audit.record(actor, "group.delete", address, &());
        Ok(())
    }

    pub async fn domain_get(&self, actor: &Actor, name: &str) -> Result<Domain> {
        policy::may_read_domain(actor, name)?;
        backend!(self.domain_get(name))?.ok_or_else(|| ProvError::NotFound(name.into()))
    }

    pub async fn domain_list(&self, actor: &Actor, q: &Query) -> Result<Page<Domain>> {
        let mut page = backend!(self.domain_list(q))?;
        policy::filter_domains(actor, &mut page);
        Ok(page)
    }

    /// Site administrators only.
    pub async fn domain_add(&self, actor: &Actor, domain: Domain) -> Result<Domain> {
        policy::must_be_site(actor, "add a domain")?;
        let made = backend!(self.domain_add(&domain))?;
        self.audit.record(actor, "domain.add", &made.name, &made);
        Ok(made)
    }

    /// Site administrators change limits and administrators; a domain's
    /// own administrator only its defaults.
    pub async fn domain_modify(
        &self,
        actor: &Actor,
        name: &str,
        change: DomainChange,
    ) -> Result<Domain> {
        policy::may_change_domain(actor, name, &change)?;
        let after = backend!(self.domain_modify(name, &change))?;
        self.audit
            .record_change(actor, "domain.modify", name, &change);
        Ok(after)
    }

    /// Site administrators only; refused while the domain has users or
    /// groups.
    pub async fn domain_delete(&self, actor: &Actor, name: &str) -> Result<()> {
        policy::must_be_site(actor, "delete a domain")?;
        backend!(self.domain_delete(name))?;
        self.audit.record(actor, "domain.delete", name, &());
        Ok(())
    }

    /// Users of a domain and the quota bytes given to them, for the limits.
    pub async fn domain_usage(&self, name: &str) -> Result<(u64, u64)> {
        backend!(self.domain_usage(name))
    }

    /// Records in the change log an action done outside the back end
    /// (the console starting `msgd user move`).
    pub fn record<T: Serialize>(&self, actor: &Actor, action: &str, target: &str, what: &T) {
        self.audit.record(actor, action, target, what);
    }

    /// A domain without a rights check (for `policy`: defaults, limits).
    pub async fn domain_info(&self, name: &str) -> Result<Option<Domain>> {
        backend!(self.domain_get(name))
    }

    /// Users marked deleted before `before` (unix seconds), for the purge.
    pub async fn deleted_users(&self, before: i64) -> Result<Vec<User>> {
        backend!(self.deleted_users(before))
    }

    /// Removes a purged user's entry for good (the purge calls this after
    /// its mail is gone).
    pub async fn user_remove(&self, actor: &Actor, address: &str) -> Result<()> {
        policy::must_be_site(actor, "remove a user for good")?;
        backend!(self.user_remove(address))?;
        self.audit.record(actor, "user.purge", address, &());
        Ok(())
    }
}

/// Who an administrator login names, as the back end found it: `id` (an
/// address, or a DN), the domains whose entries list it as administrator,
/// and whether it is a site administrator by the directory (the config's
/// `provision.site_admins` is checked by `policy`).
#[derive(Debug, Clone, Default)]
pub struct AdminIdentity {
    pub id: String,
    /// Other names `provision.site_admins` may use for it (its DN or
    /// address).
    pub names: Vec<String>,
    pub site: bool,
    pub domains: Vec<String>,
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
