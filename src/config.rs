//! Configuration: built-in defaults < role profiles < `--config` file <
//! `MSGD_*` environment variables (`__` separates nested keys).
//!
//! Every table denies unknown keys so a typo is an error that names the key,
//! never a silently ignored setting. A running session takes one
//! `Arc<Config>` snapshot and keeps it for its whole life.
//!
//! Invariants:
//! - Values are typed when the file loads: a choice is an enum (an unknown
//!   value is an error listing the accepted ones), a network is a
//!   [`Network`], an address a [`HostPort`] / [`Endpoint`], a route a
//!   [`LocalVia`]. No protocol module parses a configuration string again.
//! - `config` depends on nothing above it: only `netaddr` (typed values),
//!   `redact` (secrets) and `roles::Role` (which profiles to merge). The
//!   import rule is checked by `scripts/check-imports.sh`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::netaddr::{empty_is_none, quote, serde_via_str};
pub use crate::netaddr::{Endpoint, Host, HostPort, NameServer, Network};
use crate::roles::Role;

mod dnsbl;
mod filter;
mod greylist;
mod mta_sts;
mod ratelimit;

pub use dnsbl::DnsblConfig;
pub use dnsbl::{DnsblZone, ZoneKind};
pub use filter::FilterConfig;
pub use filter::{FailMode, FilterKind};
pub use greylist::GreylistConfig;
pub use mta_sts::MtaStsConfig;
pub use ratelimit::RateConfig;

/// An enum whose values are written as lowercase words in the
/// configuration. `FromStr` errors list the accepted values; serde reads
/// and writes the words (figment adds the key and file to the error).
macro_rules! choice {
    ($(#[$m:meta])* pub enum $name:ident {
        $($(#[$vm:meta])* $var:ident = $text:literal),+ $(,)?
    }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $var),+ }

        impl $name {
            /// The accepted words, in the order the documentation lists them.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$var => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<$name, String> {
                match s {
                    $($text => Ok($name::$var),)+
                    _ => Err(format!("'{}' is not one of {}", quote(s), Self::NAMES.join(", "))),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        serde_via_str!($name, "one of the listed words");
    };
}

choice! {
    /// `log.format`.
    pub enum LogFormat {
        Text = "text",
        Json = "json",
    }
}

choice! {
    /// `directory.backend`.
    pub enum DirectoryBackend {
        /// A file under data_dir managed by `msgd user`.
        Embedded = "embedded",
        Ldap = "ldap",
    }
}

choice! {
    /// `mmp.login_mode`: how the mmp logs in at the store.
    pub enum LoginMode {
        /// The user's own login and password.
        Credentials = "credentials",
        /// SASL PLAIN with the user as authorization identity and the
        /// mmp's `proxy_user` / `proxy_password_file` as credentials.
        ProxyAuth = "proxyauth",
    }
}

choice! {
    /// `mta.tls_policy` values: TLS for MX delivery to one domain.
    pub enum TlsPolicy {
        /// Never STARTTLS.
        None = "none",
        /// STARTTLS when offered, certificate not checked.
        Opportunistic = "opportunistic",
        /// STARTTLS must succeed (certificate not checked).
        Require = "require",
        /// As require, and the certificate must be valid for the MX name.
        Verify = "verify",
    }
}

/// `mta.local_via`: how mail for local domains leaves the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalVia {
    /// Straight to the store named by mailHost (in-process when it is this one).
    Lmtp,
    /// SMTP to an mta-in (`smtp:host:port`).
    Smtp(Endpoint),
}

impl FromStr for LocalVia {
    type Err = String;
    fn from_str(s: &str) -> Result<LocalVia, String> {
        if s == "lmtp" {
            return Ok(LocalVia::Lmtp);
        }
        s.strip_prefix("smtp:")
            .and_then(|hop| hop.parse().ok())
            .map(LocalVia::Smtp)
            .ok_or_else(|| format!("'{}' is not \"lmtp\" or \"smtp:host:port\"", quote(s)))
    }
}

impl fmt::Display for LocalVia {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            LocalVia::Lmtp => f.write_str("lmtp"),
            LocalVia::Smtp(hop) => write!(f, "smtp:{hop}"),
        }
    }
}

serde_via_str!(LocalVia, "\"lmtp\" or \"smtp:host:port\"");

/// The quickstart default: loopback, usual ports plus 10000, data under the
/// current directory. Production profiles in `roles/` override the binds.
pub const QUICKSTART: &str = include_str!("../etc/quickstart.toml");

/// The quickstart's HTTPS listener (only without a config file).
const QUICKSTART_HTTPS: &str = "[listener.https]\nbind = [\"127.0.0.1:18443\"]\n";

/// The quickstart's admin listener (only without a config file): the
/// configured default 9925 plus 10000, like the other quickstart ports.
const QUICKSTART_ADMIN: &str = "[admin]\nbind = [\"127.0.0.1:19925\"]\n";

/// The quickstart's administration console (only without a config file):
/// loopback, the suggested port 8081 plus 10000, with the quickstart's
/// postmaster account (etc/quickstart.toml's domain) as site administrator.
const QUICKSTART_CONSOLE: &str = "[listener.console]\nbind = [\"127.0.0.1:18081\"]\n\
[provision]\nsite_admins = [\"postmaster@localhost\"]\n";

/// The quickstart's ManageSieve listener (only without a config file): the
/// usual port 4190 plus 10000 (docs/sieve.md); a configured server adds
/// `[listener.managesieve]` itself.
const QUICKSTART_MANAGESIEVE: &str = "[listener.managesieve]\nbind = [\"127.0.0.1:14190\"]\n";

/// Role profiles, merged over the defaults when the role runs.
pub fn role_profile(role: Role) -> &'static str {
    match role {
        Role::MtaIn => include_str!("../roles/mta-in.toml"),
        Role::MtaOut => include_str!("../roles/mta-out.toml"),
        Role::Store => include_str!("../roles/store.toml"),
        Role::Mmp => include_str!("../roles/mmp.toml"),
        Role::Mem => include_str!("../roles/mem.toml"),
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub log: LogConfig,
    pub tls: TlsConfig,
    pub directory: DirectoryConfig,
    pub auth: AuthConfig,
    pub store: StoreConfig,
    pub smtp: SmtpConfig,
    pub imap: ImapConfig,
    pub pop3: Pop3Config,
    pub limits: LimitsConfig,
    pub queue: QueueConfig,
    pub mta: MtaConfig,
    pub mmp: MmpConfig,
    pub submission: SubmissionConfig,
    pub dns: DnsConfig,
    pub http: HttpConfig,
    pub mem: MemConfig,
    pub admin: AdminConfig,
    /// Provisioning and delegated administration (docs/admin.md).
    pub provision: ProvisionConfig,
    /// Listeners by name: smtp, submission, submissions, lmtp, imap, imaps,
    /// pop3, pop3s, http. Which ones run depends on the roles.
    pub listener: BTreeMap<String, ListenerConfig>,
    /// `[backup]`: targets of `msgd backup` / `msgd restore` other than a folder.
    pub backup: BackupConfig,
    /// `[dkim]`: outbound DKIM signing (src/deliver/dkim.rs, docs/hygiene.md).
    pub dkim: DkimConfig,
    /// `[hygiene]`: inbound SPF, DKIM, DMARC and ARC verification, DNS
    /// lists, rate limits, greylisting, the content filter (docs/hygiene.md).
    pub hygiene: HygieneConfig,
    /// `[mta_sts]`: MTA-STS and TLS-RPT for outbound delivery (docs/hygiene.md).
    pub mta_sts: MtaStsConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Name used in greetings, Received headers and the generated certificate.
    pub hostname: String,
    /// Root of everything msgd writes unless a path is given explicitly.
    pub data_dir: PathBuf,
    /// Default mail domain: the quickstart account lives here and bare login
    /// names are qualified with it.
    pub domain: String,
    /// Seconds given to sessions to finish after SIGTERM before they are cut.
    pub shutdown_grace: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            hostname: "localhost".into(),
            data_dir: PathBuf::from("msgd-data"),
            domain: "localhost".into(),
            shutdown_grace: 10,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A level (`info`) or a tracing EnvFilter (`msgd=debug,info`).
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
    /// Empty: log to stderr. Otherwise a folder for `msgd.log`.
    pub dir: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
            dir: String::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain. Empty: a self-signed one is generated into
    /// `<data_dir>/tls/` at first start.
    pub cert: String,
    /// PEM private key matching `cert`.
    pub key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DirectoryConfig {
    /// `embedded` (a file under data_dir managed by `msgd user`) or `ldap`.
    pub backend: DirectoryBackend,
    /// Embedded directory file; empty means `<data_dir>/directory.json`.
    pub path: String,
    /// Seconds a lookup result is cached (positive and negative).
    pub cache_ttl: u64,
    /// The LDAP back end (`backend = "ldap"`).
    pub ldap: LdapConfig,
}

impl Default for DirectoryConfig {
    fn default() -> Self {
        DirectoryConfig {
            backend: DirectoryBackend::Embedded,
            path: String::new(),
            cache_ttl: 30,
            ldap: LdapConfig::default(),
        }
    }
}

/// `[auth]`: password checks (docs/security.md, "Credential cache").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Seconds a successful password check is remembered (as an HMAC
    /// under a per-process key, never the password); 0: no cache.
    pub cache_ttl: u64,
    /// Most remembered checks; the oldest goes first.
    pub cache_size: usize,
    /// Threads verifying password hashes; 0: max(1, cores / 2).
    pub hash_threads: usize,
    /// Argon2id memory in KiB for new hashes (existing hashes keep theirs).
    pub argon2_m_cost: u32,
    /// Argon2id passes for new hashes.
    pub argon2_t_cost: u32,
    /// Argon2id lanes for new hashes.
    pub argon2_p_cost: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            cache_ttl: 300,
            cache_size: 100_000,
            hash_threads: 0,
            argon2_m_cost: 19_456,
            argon2_t_cost: 2,
            argon2_p_cost: 1,
        }
    }
}

/// `[directory.ldap]`: where the LDAP servers are and how entries map onto
/// accounts. Defaults follow the seed's schema (mail, mailHost, ...).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LdapConfig {
    /// Servers in order of preference (a master, then replicas):
    /// `ldap://host:389/` or `ldaps://host:636/`. On a connection failure
    /// the next one is tried.
    pub urls: Vec<String>,
    /// Seconds before the first URL is tried again after a failover.
    pub failback_after: u64,
    /// Where users, groups and domains are searched (subtree).
    pub base_dn: String,
    /// Service account for lookups; empty: anonymous.
    pub bind_dn: String,
    /// Its password (prefer `bind_password_file`); `Debug` hides it.
    pub bind_password: crate::redact::Secret,
    /// File holding the service password (trailing newline ignored);
    /// relative to data_dir.
    pub bind_password_file: String,
    /// Account allowed to modify users' mailHost (`msgd user move`);
    /// empty: the move cannot switch mailHost in LDAP.
    pub admin_dn: String,
    /// File holding that account's password (trailing newline ignored;
    /// relative to data_dir). Never logged.
    pub admin_password_file: String,
    /// Upgrade `ldap://` connections with StartTLS (`ldaps://` is always TLS).
    pub starttls: bool,
    /// Allow a non-loopback `ldap://` URL without `starttls`: passwords
    /// (users' binds, the service password) then cross the network in
    /// clear. Refused at start and by check-config unless set.
    pub allow_cleartext: bool,
    /// PEM CA certificates that sign the servers' certificates; empty: the
    /// system's roots. Relative to data_dir.
    pub ca_file: String,
    /// Seconds to connect (TCP, TLS and the service bind).
    pub connect_timeout: u64,
    /// Seconds one LDAP operation may take before the lookup fails temporarily.
    pub operation_timeout: u64,
    /// Bound service connections kept for lookups, shared by all roles.
    pub pool_size: usize,
    /// Connections used only for user-password binds (authentication).
    pub auth_pool_size: usize,
    /// A pooled connection idle this many seconds is checked (WhoAmI) before reuse.
    pub health_check_idle: u64,
    /// Domains that are always local, without asking the directory.
    pub local_domains: Vec<String>,
    /// Where domain entries are searched; empty: base_dn.
    pub domain_base_dn: String,
    /// A domain is local if this filter finds an entry; `{domain}` is replaced
    /// by the (escaped) domain. Empty: only `local_domains` are local.
    pub domain_filter: String,
    /// Attributes an address is looked up in (user and group entries).
    pub address_attributes: Vec<String>,
    /// Attributes a login name is looked up in (the bare name and the name
    /// qualified with server.domain are both tried).
    pub login_attributes: Vec<String>,
    /// Object classes that make an entry a group (a list of addresses).
    pub group_classes: Vec<String>,
    /// How deep groups inside groups are expanded.
    pub group_max_depth: u32,
    /// Most addresses one group expands to (the rest is dropped, loudly).
    pub group_max_members: usize,
    /// Status values (inetUserStatus / mailUserStatus) meaning "inactive",
    /// compared case-insensitively.
    pub inactive_values: Vec<String>,
    /// Attribute names, for sites whose schema differs.
    pub attributes: LdapAttributes,
    /// Where the personal address books live (docs/pab.md), e.g.
    /// `ou=pab,o=example`: per user `ou=<address>,<pab_base>`, one entry
    /// per contact, written by the service account. Empty: no PAB.
    pub pab_base: String,
}

impl Default for LdapConfig {
    fn default() -> Self {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        LdapConfig {
            urls: v(&["ldap://127.0.0.1:389/"]),
            failback_after: 300,
            base_dn: String::new(),
            bind_dn: String::new(),
            bind_password: Default::default(),
            bind_password_file: String::new(),
            admin_dn: String::new(),
            admin_password_file: String::new(),
            starttls: false,
            allow_cleartext: false,
            ca_file: String::new(),
            connect_timeout: 5,
            operation_timeout: 10,
            pool_size: 8,
            auth_pool_size: 4,
            health_check_idle: 5,
            local_domains: Vec::new(),
            domain_base_dn: String::new(),
            domain_filter: "(&(objectClass=mailDomain)(associatedDomain={domain}))".into(),
            address_attributes: v(&["mail", "mailAlternateAddress", "mailEquivalentAddress"]),
            login_attributes: v(&["uid", "mail"]),
            group_classes: v(&["groupOfUniqueNames", "groupOfNames", "mailGroup"]),
            group_max_depth: 5,
            group_max_members: 10000,
            inactive_values: v(&["inactive", "disabled", "deleted"]),
            attributes: LdapAttributes::default(),
            pab_base: String::new(),
        }
    }
}

impl LdapConfig {
    /// Passwords must not cross the network in clear: every non-loopback
    /// `ldap://` URL needs `starttls` (or `ldaps://`), unless the operator
    /// set `allow_cleartext`. Used by check-config and at start.
    pub fn cleartext_errors(&self) -> Vec<String> {
        if self.starttls || self.allow_cleartext {
            return Vec::new();
        }
        self.urls
            .iter()
            .filter(|u| {
                u.get(..7).is_some_and(|p| p.eq_ignore_ascii_case("ldap://"))
                    && !ldap_url_is_loopback(u)
            })
            .map(|u| {
                format!(
                    "directory.ldap.urls: '{}' sends passwords in clear; use ldaps://, set directory.ldap.starttls = true, or set directory.ldap.allow_cleartext = true",
                    quote(u)
                )
            })
            .collect()
    }
}

/// Is the host of an `ldap://` URL loopback (`localhost`, 127/8, ::1)?
fn ldap_url_is_loopback(url: &str) -> bool {
    let rest = url
        .strip_prefix("ldap://")
        .or_else(|| url.strip_prefix("ldapi://"))
        .unwrap_or(url);
    let hostport = rest.split('/').next().unwrap_or("");
    let host = match hostport.strip_prefix('[') {
        Some(r) => r.split(']').next().unwrap_or(""),
        None => hostport.rsplit_once(':').map_or(hostport, |(h, _)| h),
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

/// `[directory.ldap.attributes]`: which LDAP attribute holds each account field.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LdapAttributes {
    /// The canonical address.
    pub mail: String,
    pub alternate_address: String,
    pub equivalent_address: String,
    pub forwarding_address: String,
    /// Values `mailbox` / `forward`; absent means mailbox.
    pub delivery_option: String,
    /// The store holding the mailbox.
    pub mail_host: String,
    /// The store partition.
    pub message_store: String,
    /// Bytes; -1 or absent: no quota of the user's own (store.default_quota).
    pub quota: String,
    /// Status attributes; any one saying inactive makes the account inactive.
    pub status: Vec<String>,
    /// Addresses that are members of a group.
    pub group_address_member: String,
    /// A group's errors-to address: the envelope sender of the copies
    /// made for the group (bounces go to the list owner). Empty: not read.
    pub group_errors_to: String,
    /// DNs that are members of a group (users or groups).
    pub group_dn_member: Vec<String>,
    /// Message-count quota of a user (docs/directory.md).
    pub msg_quota: String,
    /// The address mail for a user is routed to instead of its mailbox.
    pub routing_address: String,
    /// The store a user without mailHost is meant to live on.
    pub preferred_host: String,
    /// A display name (users and groups), for the console and completion.
    pub name: String,
    /// A group's status (active / inactive / deleted).
    pub group_status: String,
    /// Who may post to a group (addresses, `mailto:` or LDAP URLs, DNs).
    pub group_allowed_broadcaster: String,
    /// Sender domains that may post to a group.
    pub group_allowed_domain: String,
    /// A domain entry's status attributes; any one saying inactive or
    /// deleted counts.
    pub domain_status: Vec<String>,
    /// DNs of a domain's administrators (users or groups), on the domain
    /// entry (docs/admin.md).
    pub domain_admin: String,
    /// Most users a domain may have, on the domain entry.
    pub domain_max_users: String,
    /// Most bytes of quota all users of a domain may be given together.
    pub domain_disk_quota: String,
    /// A domain's default user quota (bytes) and store, on the domain entry.
    pub domain_default_quota: String,
    pub domain_default_host: String,
    /// When a user was marked deleted (GeneralizedTime), written by the
    /// provisioning and read by the purge.
    pub deleted_time: String,
}

impl Default for LdapAttributes {
    fn default() -> Self {
        LdapAttributes {
            mail: "mail".into(),
            alternate_address: "mailAlternateAddress".into(),
            equivalent_address: "mailEquivalentAddress".into(),
            forwarding_address: "mailForwardingAddress".into(),
            delivery_option: "mailDeliveryOption".into(),
            mail_host: "mailHost".into(),
            message_store: "mailMessageStore".into(),
            quota: "mailQuota".into(),
            status: vec!["inetUserStatus".into(), "mailUserStatus".into()],
            group_address_member: "mgrpRFC822MailMember".into(),
            group_errors_to: "mgrpErrorsTo".into(),
            group_dn_member: vec!["uniqueMember".into(), "member".into()],
            msg_quota: "mailMsgQuota".into(),
            routing_address: "mailRoutingAddress".into(),
            preferred_host: "preferredMailHost".into(),
            name: "cn".into(),
            group_status: "inetMailGroupStatus".into(),
            group_allowed_broadcaster: "mgrpAllowedBroadcaster".into(),
            group_allowed_domain: "mgrpAllowedDomain".into(),
            domain_status: vec!["inetDomainStatus".into(), "mailDomainStatus".into()],
            domain_admin: "msgdDomainAdmin".into(),
            domain_max_users: "sunMaxUsers".into(),
            domain_disk_quota: "mailDomainDiskQuota".into(),
            domain_default_quota: "mailQuota".into(),
            domain_default_host: "mailHost".into(),
            deleted_time: "msgdDeletedTime".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Page cache of the mboxlist database, in bytes (seed: store.dbcachesize).
    pub dbcachesize: u64,
    /// Folder of the mboxlist database; empty means `<data_dir>/mboxlist`.
    pub dbdir: String,
    /// Partitions by name; users live in `default_partition` unless the
    /// directory says otherwise.
    pub partition: BTreeMap<String, PartitionConfig>,
    pub default_partition: String,
    /// Host name of this store as it appears in the directory's mailHost.
    pub host: String,
    /// Deliveries are refused with a temporary failure below this many free
    /// bytes on a partition.
    pub min_free_disk: u64,
    /// Default quota in bytes for users whose directory entry has none (0: none).
    pub default_quota: u64,
    /// Most messages a user may keep (IMAP QUOTA MESSAGE resource; 0: no limit).
    pub default_message_quota: u64,
    /// How a delivery over quota is answered: `temporary` (452 4.2.2, the
    /// sender retries) or `permanent` (552 5.2.2, it bounces).
    pub over_quota: OverQuota,
    /// How a batch of deliveries makes its new message files durable
    /// before the index commit that acknowledges them (docs/store.md
    /// "Durability"): `files` fsyncs each file and each changed folder,
    /// several at once; `filesystem` (Linux) makes one `syncfs` call per
    /// partition filesystem the batch wrote to.
    pub sync: SyncMode,
    /// Duplicate delivery suppression: seconds a delivery id (queue id and
    /// recipient of an mta-in, or this process's queue) is remembered per
    /// mailbox; a repeat within it is answered 250 without a second copy.
    pub duplicate_window: u64,
    /// Most delivery ids remembered per user (oldest dropped first; 0:
    /// no suppression).
    pub duplicate_max: u64,
    /// Networks (CIDR) whose hosts may deliver over the LMTP listener's
    /// TCP addresses (the MTAs); others are closed at once. Default:
    /// loopback and the private ranges. The unix socket is not affected.
    pub lmtp_networks: Vec<Network>,
    /// Retention and clean-up (`msgd expire`, issue 14).
    pub expire: ExpireConfig,
}

/// `[store.expire]`: retention rules, the grace of expunged files and how
/// much of the expunged table QRESYNC keeps (`ops/expire.rs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExpireConfig {
    /// Seconds between runs of expire by the store role (0: never; the
    /// command still works).
    pub interval: u64,
    /// Seconds an expunged message file is kept under
    /// `<partition>/expunged/` before it is purged.
    pub purge_after: u64,
    /// Expunge records kept per mailbox for QRESYNC (RFC 7162); older
    /// clients get a full resync. 0: never trimmed.
    pub expunged_keep: u64,
    /// Retention rules (`[[store.expire.rule]]`); a message matching every
    /// condition of one rule is removed.
    pub rule: Vec<ExpireRule>,
}

impl Default for ExpireConfig {
    fn default() -> Self {
        ExpireConfig {
            interval: 86400,
            purge_after: 3600,
            expunged_keep: 10_000,
            rule: Vec::new(),
        }
    }
}

/// One retention rule: patterns say where it applies (`*` any run of
/// characters, `?` one), conditions say what goes; a rule needs at least
/// one condition.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExpireRule {
    /// Mailbox name pattern ("Trash", "Junk", "Archive/*", "*").
    pub mailbox: String,
    /// User pattern ("*@example.com"); absent: every user.
    pub user: Option<String>,
    /// Messages that entered the mailbox more than this many days ago.
    pub max_age_days: Option<u64>,
    /// Messages larger than this many bytes.
    pub max_size: Option<u64>,
    /// Messages with all these flags: `seen`, `answered`, `flagged`,
    /// `deleted`, `draft` or a keyword.
    pub flags: Vec<String>,
}

impl Default for ExpireRule {
    fn default() -> Self {
        ExpireRule {
            mailbox: "*".into(),
            user: None,
            max_age_days: None,
            max_size: None,
            flags: Vec::new(),
        }
    }
}

impl ExpireRule {
    /// A rule without a condition would remove everything it matches.
    pub fn has_condition(&self) -> bool {
        self.max_age_days.is_some() || self.max_size.is_some() || !self.flags.is_empty()
    }
}

/// The MTAs of a two-tier site sit on loopback or a private network.
pub const DEFAULT_LMTP_NETWORKS: [&str; 6] = [
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
];

/// `store.over_quota`: how a delivery to a full mailbox is answered
/// (applied in one place, `deliver::local`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OverQuota {
    /// 452 4.2.2: the sender keeps the message and retries.
    #[default]
    Temporary,
    /// 552 5.2.2: the message bounces.
    Permanent,
}

/// `store.sync`: how a batch's message files become durable (`store::writer::Syncer`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// fdatasync of every new file and fsync of every changed folder, in
    /// parallel (POSIX; right wherever the partition lives).
    #[default]
    Files,
    /// One syncfs(2) per partition filesystem per batch: every dirty file
    /// and the journal of that filesystem in one call. For partitions on
    /// a filesystem of their own (Linux; elsewhere it acts as `files`).
    Filesystem,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            dbcachesize: 64 << 20,
            dbdir: String::new(),
            partition: BTreeMap::new(),
            default_partition: "primary".into(),
            host: String::new(),
            min_free_disk: 64 << 20,
            default_quota: 0,
            default_message_quota: 0,
            over_quota: OverQuota::Temporary,
            sync: SyncMode::Files,
            duplicate_window: 3 * 86400,
            duplicate_max: 100_000,
            lmtp_networks: DEFAULT_LMTP_NETWORKS
                .iter()
                .map(|n| n.parse().expect("the default networks parse"))
                .collect(),
            expire: ExpireConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PartitionConfig {
    pub path: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// Largest message accepted, in bytes (advertised in SIZE).
    pub max_message_size: u64,
    /// Most recipients per transaction.
    pub max_recipients: usize,
    /// Seconds a command may take to arrive.
    pub command_timeout: u64,
    /// Seconds a whole DATA/BDAT transfer may take (a deadline for the
    /// transfer, not per read: a trickling client is dropped with 421).
    pub data_timeout: u64,
    /// Seconds a command may take to arrive before the client has said
    /// EHLO/HELO, and on submission listeners before AUTH (Postfix-style
    /// short pre-authentication deadline).
    pub preauth_timeout: u64,
    /// Rejected recipients (5xx to RCPT) an SMTP session may collect
    /// without delivering a message before it is closed with
    /// `421 4.7.0 Too many errors` (Postfix's smtpd_hard_error_limit).
    /// 0: no limit. Not applied to LMTP (its clients are our own MTAs).
    pub hard_error_limit: u32,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            max_message_size: 50 << 20,
            max_recipients: 1000,
            command_timeout: 300,
            data_timeout: 600,
            preauth_timeout: 60,
            hard_error_limit: 20,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImapConfig {
    /// Allow LOGIN / AUTHENTICATE PLAIN without TLS from non-loopback peers.
    pub allow_plaintext_auth: bool,
    /// Largest literal (APPEND) accepted, in bytes.
    pub max_literal: u64,
    /// Seconds an unauthenticated connection may idle.
    pub preauth_timeout: u64,
    /// Seconds an authenticated connection may idle (RFC 9051: at least 30 min).
    pub idle_timeout: u64,
    /// Accounts allowed to log in on behalf of other users (AUTHENTICATE
    /// PLAIN with an authorization identity): the mmp's service account.
    pub proxy_users: Vec<String>,
    /// Networks (CIDR) whose connections may log in; empty: any. A store
    /// behind mmps lists them here so users cannot bypass the proxies.
    pub login_networks: Vec<Network>,
    /// Advertise LITERAL+ (RFC 7888: non-synchronizing literals of any
    /// size); false advertises LITERAL- (at most 4096 bytes each).
    pub literal_plus: bool,
}

impl Default for ImapConfig {
    fn default() -> Self {
        ImapConfig {
            allow_plaintext_auth: false,
            max_literal: 50 << 20,
            preauth_timeout: 60,
            idle_timeout: 1800,
            proxy_users: Vec::new(),
            login_networks: Vec::new(),
            literal_plus: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pop3Config {
    /// Allow USER/PASS and AUTH PLAIN without TLS from non-loopback peers.
    pub allow_plaintext_auth: bool,
    /// Seconds a connection may idle (RFC 1939: at least 10 minutes).
    pub idle_timeout: u64,
    /// Seconds a connection may idle before login (Dovecot-like short
    /// pre-authentication timer); also the deadline of a command then.
    pub preauth_timeout: u64,
    /// Logins (canonical addresses, e.g. the mmp's `proxy_user`) allowed to
    /// log in as another user with AUTH PLAIN and an authorization
    /// identity. Empty: nobody may.
    pub proxy_users: Vec<String>,
    /// Networks (CIDR) whose connections may log in; empty: any.
    pub login_networks: Vec<Network>,
}

impl Default for Pop3Config {
    fn default() -> Self {
        Pop3Config {
            allow_plaintext_auth: false,
            idle_timeout: 600,
            preauth_timeout: 60,
            proxy_users: Vec::new(),
            login_networks: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Longest command line accepted by any protocol, in bytes.
    pub max_line: usize,
    /// Bad commands tolerated before the connection is closed.
    pub max_bad_commands: u32,
    /// Failed authentications tolerated before the connection is closed.
    pub max_auth_failures: u32,
    /// Connections per process, counted across every TCP listener.
    /// Failed logins from one client (an IPv4 address or an IPv6 /64)
    /// within `login_failure_window` seconds before that client's logins
    /// are refused unchecked, on every path (IMAP, POP3, SMTP AUTH, mmp).
    /// 0: no limit. See src/loginlimit.rs.
    pub max_login_failures_per_client: u32,
    /// Failed logins for one account (the canonical address the directory
    /// resolved) within the window before the clients that failed for it
    /// are refused; others still get a real (slowed) check. 0: no limit.
    pub max_login_failures_per_account: u32,
    /// Seconds over which login failures are counted.
    pub login_failure_window: u64,
    /// Milliseconds before the answer to a failed login; doubles with each
    /// failure of the client, up to 8 times this (a refused attempt waits
    /// the longest).
    pub login_failure_delay_ms: u64,
    /// Connections per listener process-wide.
    pub max_connections: usize,
    /// Connections from one client, across listeners; IPv6 clients are
    /// grouped by /64 (one subscriber's prefix).
    pub max_connections_per_ip: usize,
    /// Seconds a write may make no progress (a client that does not read
    /// its responses) before the connection is closed.
    pub write_timeout: u64,
    /// Seconds a command (line and literals, IMAP/POP3/mmp) may take from
    /// its first byte, plus `1 / min_data_rate` s per byte received.
    pub command_deadline: u64,
    /// Bytes per second that extend a command's deadline (Postfix's
    /// smtpd_min_data_rate): a slow link still uploads, a trickle does not.
    pub min_data_rate: u64,
    /// Bytes of an SMTP/LMTP message body kept in memory while it is
    /// received; the rest goes to an unlinked 0600 file under
    /// `<data_dir>/spool`.
    pub spool_threshold: u64,
    /// Bytes of message data the whole process may hold in memory at once
    /// (SMTP/LMTP bodies being received or delivered, IMAP APPEND
    /// literals). When spent: SMTP `452 4.3.1`, IMAP `NO [LIMIT]`.
    pub max_bytes_in_flight: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_line: 8192,
            max_bad_commands: 10,
            max_auth_failures: 3,
            max_login_failures_per_client: 10,
            max_login_failures_per_account: 10,
            login_failure_window: 900,
            login_failure_delay_ms: 1000,
            max_connections: 10000,
            max_connections_per_ip: 200,
            write_timeout: 300,
            command_deadline: 300,
            min_data_rate: 500,
            spool_threshold: 1 << 20,
            max_bytes_in_flight: 256 << 20,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MtaConfig {
    /// LMTP port of the stores, when `hosts` does not name one.
    pub lmtp_port: u16,
    /// Static map from a store's mailHost to its LMTP address
    /// (`"store1.example.com" = "10.0.0.5:24"`; without a port,
    /// `lmtp_port`); other names go through DNS.
    pub hosts: BTreeMap<String, HostPort>,
    /// Seconds one delivery attempt (connect and transaction) may take.
    pub delivery_timeout: u64,
    /// Smarthost (`host:port`) for all mail to other domains; empty:
    /// deliver directly to the domain's MX hosts.
    #[serde(
        deserialize_with = "empty_is_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub relay: Option<Endpoint>,
    /// Login for AUTH PLAIN at the smarthost; empty: no AUTH.
    pub relay_user: String,
    /// File holding the smarthost password (first line).
    pub relay_password_file: String,
    /// TLS to the smarthost: `opportunistic` (STARTTLS when offered),
    /// `require` (STARTTLS must succeed),
    /// `implicit` (TLS from the first byte, port 465 style), `none`.
    pub relay_tls: RelayTls,
    /// Verify the smarthost's certificate (against `tls_ca_file`) when
    /// `relay_tls` is `require` or `implicit`.
    pub relay_tls_verify: bool,
    /// How mail for local domains leaves the queue: `lmtp` (straight to
    /// the store named by mailHost, in-process when it is this one) or
    /// `smtp:host:port` (to an mta-in).
    pub local_via: LocalVia,
    /// Port of MX hosts (25; tests point it at a free loopback port).
    pub smtp_port: u16,
    /// Per-domain TLS policy for MX delivery: `opportunistic` (default:
    /// STARTTLS when offered, certificate not checked), `require`
    /// (STARTTLS must succeed, certificate not checked; otherwise a
    /// temporary failure), `verify` (as require, and the certificate must
    /// be valid for the MX host name), `none` (never STARTTLS).
    pub tls_policy: BTreeMap<String, TlsPolicy>,
    /// PEM file of trust anchors for `verify` and `relay_tls = "require"`;
    /// empty: /etc/ssl/certs/ca-certificates.crt.
    pub tls_ca_file: String,
    /// Connections open at the same time to one destination domain.
    pub max_per_domain: usize,
    /// Seconds an idle connection to a next hop (store over LMTP,
    /// smarthost, MX host) is kept for the next message; 0: closed after
    /// each transaction.
    pub connection_idle: u64,
    /// Idle LMTP connections kept per store address (`deliver::pool`);
    /// 0: a new connection per delivery. Sized for cut-through, where each
    /// SMTP session delivers on a connection of its own.
    pub lmtp_pool: usize,
    /// Idle connections kept to the smarthost, per address.
    pub relay_pool: usize,
}

/// `mta.relay_tls`: TLS to the smarthost (`deliver::relay`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayTls {
    /// STARTTLS when offered, any certificate.
    #[default]
    Opportunistic,
    /// STARTTLS must succeed (certificate checked with `relay_tls_verify`).
    Require,
    /// TLS from the first byte (port 465 style).
    Implicit,
    /// Never TLS.
    None,
}

impl RelayTls {
    /// The value as written in the config file.
    pub fn name(self) -> &'static str {
        match self {
            RelayTls::Opportunistic => "opportunistic",
            RelayTls::Require => "require",
            RelayTls::Implicit => "implicit",
            RelayTls::None => "none",
        }
    }
}

impl Default for MtaConfig {
    fn default() -> Self {
        MtaConfig {
            lmtp_port: 24,
            hosts: BTreeMap::new(),
            delivery_timeout: 120,
            relay: None,
            relay_user: String::new(),
            relay_password_file: String::new(),
            relay_tls: RelayTls::Opportunistic,
            relay_tls_verify: true,
            local_via: LocalVia::Lmtp,
            smtp_port: 25,
            tls_policy: BTreeMap::new(),
            tls_ca_file: String::new(),
            max_per_domain: 10,
            connection_idle: 30,
            lmtp_pool: 100,
            relay_pool: 4,
        }
    }
}

/// The mmp role: IMAP/POP3 proxy that logs users in against the directory
/// and relays them to the store named by their mailHost.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MmpConfig {
    /// Store (mailHost) for users whose directory entry has none; empty:
    /// such logins fail with NO [UNAVAILABLE].
    pub default_backend: String,
    /// mailHost -> host (name or IP, no port) to connect to for both
    /// protocols; unmapped mailHosts are connected to by name.
    pub backends: BTreeMap<String, Host>,
    /// mailHost -> `host:port` (or host) for IMAP only (wins over `backends`).
    pub imap_backends: BTreeMap<String, HostPort>,
    /// mailHost -> `host:port` (or host) for POP3 only (wins over `backends`).
    pub pop3_backends: BTreeMap<String, HostPort>,
    /// Store ports when a map gives none; 0: 143/110, or 993/995 with
    /// `backend_tls = "implicit"`.
    pub imap_port: u16,
    pub pop3_port: u16,
    /// Seconds to connect to one store address before trying the next.
    pub connect_timeout: u64,
    /// Seconds the login dialogue with the store may take in all.
    pub backend_timeout: u64,
    /// TLS to the stores: `none`, `starttls` or `implicit`.
    pub backend_tls: TlsMode,
    /// PEM file of the CA (or the self-signed certificates) the stores'
    /// certificates are checked against; needed unless `backend_tls` is
    /// `none` or `backend_tls_insecure` is set.
    pub backend_ca_file: String,
    /// Accept any store certificate (tests and labs only).
    pub backend_tls_insecure: bool,
    /// Name the stores' certificates are checked for; empty: the host
    /// connected to (from the maps or the mailHost).
    #[serde(
        deserialize_with = "empty_is_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub backend_server_name: Option<Host>,
    /// Send a PROXY v2 header naming the client to the store first.
    pub backend_proxy_protocol: bool,
    /// IMAP: send ID with x-originating-ip/port and x-connected-ip/port
    /// (the Dovecot convention) to the store before logging in.
    pub backend_id: bool,
    /// IMAP: store connections kept per store address after a client's
    /// LOGOUT, made not authenticated (RFC 8437 UNAUTHENTICATE) and used
    /// for the next login there: no TCP or TLS handshake and no greeting
    /// per login. 0: none. Needs `backend_id` (the ID says the mmp answers
    /// its clients' UNAUTHENTICATE itself) and no `backend_proxy_protocol`
    /// (a PROXY header names one client per connection); the store allows
    /// it from loopback or its `imap.login_networks`.
    pub backend_reuse: usize,
    /// Seconds a kept store connection may wait for its next login;
    /// keep it below the stores' `imap.preauth_timeout`.
    pub backend_reuse_idle: u64,
    /// How the mmp logs in at the store: `credentials` (the user's own
    /// login and password) or `proxyauth` (SASL PLAIN with the user as
    /// authorization identity and `proxy_user` / `proxy_password_file` as
    /// credentials).
    pub login_mode: LoginMode,
    pub proxy_user: String,
    /// File holding the proxy password (first line); relative paths are
    /// under the data folder.
    pub proxy_password_file: String,
    /// Deprecated: `limits.max_login_failures_per_client`,
    /// `limits.max_login_failures_per_account` and
    /// `limits.login_failure_window` (one set for every path). Still
    /// accepted: a value given here replaces the `[limits]` one.
    pub max_login_failures_per_ip: Option<u32>,
    pub max_login_failures_per_user: Option<u32>,
    pub login_failure_window: Option<u64>,
    /// Seconds an unauthenticated client may idle.
    pub preauth_timeout: u64,
    /// Seconds a proxied session may idle in both directions (RFC 9051:
    /// at least 30 minutes).
    pub idle_timeout: u64,
    /// mailHost -> `host:port` (or host) for ManageSieve only (wins over
    /// `backends`).
    pub sieve_backends: BTreeMap<String, HostPort>,
    /// The stores' ManageSieve port when `sieve_backends` gives none
    /// (RFC 5804: 4190).
    pub sieve_backend_port: u16,
}

impl Default for MmpConfig {
    fn default() -> Self {
        MmpConfig {
            default_backend: String::new(),
            backends: BTreeMap::new(),
            imap_backends: BTreeMap::new(),
            pop3_backends: BTreeMap::new(),
            imap_port: 0,
            pop3_port: 0,
            connect_timeout: 10,
            backend_timeout: 30,
            backend_tls: TlsMode::StartTls,
            backend_ca_file: String::new(),
            backend_tls_insecure: false,
            backend_server_name: None,
            backend_proxy_protocol: false,
            backend_id: true,
            backend_reuse: 32,
            backend_reuse_idle: 30,
            login_mode: LoginMode::Credentials,
            proxy_user: String::new(),
            proxy_password_file: String::new(),
            max_login_failures_per_ip: None,
            max_login_failures_per_user: None,
            login_failure_window: None,
            preauth_timeout: 60,
            idle_timeout: 1800,
            sieve_backends: BTreeMap::new(),
            sieve_backend_port: 4190,
        }
    }
}

/// Authenticated submission (the mta-out role: 587 and 465).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubmissionConfig {
    /// Client networks (CIDR) that may submit without AUTH, e.g. a
    /// webmail host: `["10.0.0.0/8", "::1/128"]`.
    pub trusted_networks: Vec<Network>,
    /// The From: header addresses must belong to the authenticated user
    /// too (not only the envelope sender).
    pub check_from_header: bool,
    /// The Received field names the client's address (default: no, the
    /// user's location stays private).
    pub received_shows_client: bool,
    /// Allow AUTH without TLS from non-loopback clients.
    pub allow_plaintext_auth: bool,
    /// Deprecated: `limits.max_login_failures_per_client` / `_per_account`
    /// and `limits.login_failure_window`. Still accepted: a value given
    /// here replaces the `[limits]` one (both counts for the limit).
    pub auth_fail_limit: Option<u32>,
    pub auth_fail_window: Option<u64>,
}

impl Default for SubmissionConfig {
    fn default() -> Self {
        SubmissionConfig {
            trusted_networks: Vec::new(),
            check_from_header: true,
            received_shows_client: false,
            allow_plaintext_auth: false,
            auth_fail_limit: None,
            auth_fail_window: None,
        }
    }
}

/// HTTP on the store: the JMAP API (src/jmap/) and its limits, and the
/// bearer tokens a mem presents for the user it acts for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Base URL clients reach this server at (`https://mail.example.com`),
    /// used in the JMAP session resource; empty: from the request's Host
    /// header and the listener's scheme.
    pub base_url: String,
    /// Key shared by every mem and store to sign bearer tokens (32 random
    /// bytes, hex); relative to `server.data_dir`. Created at first start
    /// when missing; copy the same file to every mem and store.
    pub token_key_file: String,
    /// Seconds a bearer token issued by a mem stays valid.
    pub token_ttl: u64,
    /// Clients bearer tokens are accepted from (the mems); empty: loopback
    /// only.
    pub token_networks: Vec<Network>,
    /// Seconds a request's headers may take to arrive; the body gets this
    /// plus `1 / limits.min_data_rate` s per byte (src/http/deadline.rs).
    pub request_timeout: u64,
    /// Seconds an idle keep-alive connection is kept.
    pub idle_timeout: u64,
    /// JMAP change journal entries kept per user: `Foo/changes` from an
    /// older state answers `cannotCalculateChanges` (the client resyncs).
    pub changes_kept: u64,
    /// JMAP limits (RFC 8620 2), advertised in the session and enforced.
    pub max_size_upload: u64,
    pub max_concurrent_upload: u32,
    pub max_size_request: u64,
    pub max_concurrent_requests: u32,
    pub max_calls_in_request: u32,
    pub max_objects_in_get: u32,
    pub max_objects_in_set: u32,
    /// Bytes of uploaded blobs one user may keep at once (they expire
    /// after `upload_ttl` seconds).
    pub upload_quota: u64,
    pub upload_ttl: u64,
    /// Seconds between event-source pings are clamped to this range.
    pub push_ping_min: u64,
    pub push_ping_max: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            base_url: String::new(),
            token_key_file: "http-token.key".into(),
            token_ttl: 300,
            token_networks: Vec::new(),
            request_timeout: 60,
            idle_timeout: 120,
            changes_kept: 10_000,
            max_size_upload: 50_000_000,
            max_concurrent_upload: 4,
            max_size_request: 10_000_000,
            max_concurrent_requests: 4,
            max_calls_in_request: 16,
            max_objects_in_get: 500,
            max_objects_in_set: 500,
            upload_quota: 200_000_000,
            upload_ttl: 86_400,
            push_ping_min: 30,
            push_ping_max: 300,
        }
    }
}

/// The mem role: the webmail front end that logs users in against the
/// directory and forwards their JMAP calls to the store named by mailHost.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemConfig {
    /// Key sealing the session cookies (32 random bytes, hex), shared by
    /// every mem so that a session made on one works on the next; relative
    /// to `server.data_dir`, created at first start when missing.
    pub session_key_file: String,
    /// Seconds of inactivity after which a session ends.
    pub session_idle: u64,
    /// Seconds after login at which a session ends however active.
    pub session_max: u64,
    /// mailHost -> `host` or `host:port` of that store's HTTP(S) listener;
    /// unmapped mailHosts are connected to by name on `store_port`.
    pub stores: BTreeMap<String, HostPort>,
    /// Store (mailHost) for users whose directory entry has none; empty:
    /// such logins are refused (mem role alone; all-in-one serves them).
    pub default_store: String,
    /// Port of the stores' HTTP(S) listener when `stores` gives none.
    pub store_port: u16,
    /// Speak HTTPS to the stores (their certificates checked against
    /// `store_ca_file`).
    pub store_tls: bool,
    /// PEM file of the CA (or self-signed certificates) of the stores;
    /// relative to `server.data_dir`. Needed with `store_tls` unless
    /// `store_tls_insecure`.
    pub store_ca_file: String,
    /// Accept any store certificate (tests and labs only).
    pub store_tls_insecure: bool,
    /// Seconds to connect to a store (address lookup included) before the
    /// user gets a 503.
    pub connect_timeout: u64,
    /// Seconds a store may take to start its answer to a forwarded request
    /// (the body then streams without a deadline of its own).
    pub store_timeout: u64,
    /// Idle connections to the stores kept per store for reuse.
    pub pool_idle_per_store: usize,
}

impl Default for MemConfig {
    fn default() -> Self {
        MemConfig {
            session_key_file: "mem-session.key".into(),
            session_idle: 1800,
            session_max: 43200,
            stores: BTreeMap::new(),
            default_store: String::new(),
            store_port: 8080,
            store_tls: false,
            store_ca_file: String::new(),
            store_tls_insecure: false,
            connect_timeout: 5,
            store_timeout: 60,
            pool_idle_per_store: 32,
        }
    }
}

/// `[admin]`: the admin HTTP listener of every process (src/admin.rs):
/// `/metrics` (Prometheus text) and `/health`, off the public ports.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Serve the admin listener (one per process, whatever its roles).
    pub enabled: bool,
    /// Addresses to listen on; loopback by default (the quickstart uses
    /// 127.0.0.1:19925). Anyone who reaches it reads the metrics.
    pub bind: Vec<SocketAddr>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            bind: vec![SocketAddr::from(([127, 0, 0, 1], 9925))],
        }
    }
}

/// `[dkim]`: outbound DKIM signing of submitted mail (src/deliver/dkim.rs)
/// and the keys of `msgd dkim keygen|show` (src/ops/dkim.rs).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DkimConfig {
    /// Sign mail from submission and JMAP when the From domain has a key.
    pub enabled: bool,
    /// Key folder, relative to server.data_dir: `<key_dir>/<domain>/<selector>.<rsa|ed25519>.key`.
    pub key_dir: String,
    /// Selector per domain for keygen (default `default_selector`); signing
    /// uses every key present in the domain's folder.
    pub selector: BTreeMap<String, String>,
    /// Selector when a domain has none configured and none is given.
    pub default_selector: String,
    /// Header fields to sign (lower case); From is always signed and
    /// over-signed.
    pub headers: Vec<String>,
}

impl Default for DkimConfig {
    fn default() -> Self {
        DkimConfig {
            enabled: true,
            key_dir: "dkim".into(),
            selector: BTreeMap::new(),
            default_selector: "msgd".into(),
            headers: [
                "from",
                "to",
                "cc",
                "subject",
                "date",
                "message-id",
                "reply-to",
                "mime-version",
                "content-type",
                "in-reply-to",
                "references",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// `[backup]`: where `msgd backup` may write besides a folder.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// `[backup.s3]`: the S3-compatible object store of `s3://bucket/prefix`.
    pub s3: BackupS3Config,
}

/// `[backup.s3]` (src/ops/backup_target.rs). The standard AWS_* environment
/// variables (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID,
/// AWS_SECRET_ACCESS_KEY, AWS_ALLOW_HTTP, ...) override these.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupS3Config {
    /// `https://s3.example.net` (empty: AWS's own endpoint for the region).
    pub endpoint: String,
    /// Signing region (`us-east-1` for most S3-compatible servers).
    pub region: String,
    /// Access key id (not secret; the key itself is read from a file).
    pub access_key_id: String,
    /// File holding the secret access key, relative to server.data_dir;
    /// its content is never logged.
    pub secret_access_key_file: String,
    /// Plain-HTTP endpoints: always allowed on loopback, elsewhere only
    /// with `allow_http = true`.
    pub allow_http: bool,
    /// `https://bucket.host/key` instead of `https://host/bucket/key`.
    pub virtual_hosted_style: bool,
    /// Seconds one request may take (0: 60).
    pub timeout: u64,
    /// PEM file of extra CA certificates trusted for the endpoint (a
    /// private CA), relative to server.data_dir; the system's are kept.
    pub ca_file: String,
}

impl Default for BackupS3Config {
    fn default() -> Self {
        BackupS3Config {
            endpoint: String::new(),
            region: "us-east-1".into(),
            access_key_id: String::new(),
            secret_access_key_file: String::new(),
            allow_http: false,
            virtual_hosted_style: false,
            timeout: 60,
            ca_file: String::new(),
        }
    }
}

/// The one DNS resolver of the process (src/dns.rs): MX lookups, stores
/// by mailHost, the smarthost, the mmp's backends.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Name servers as `ip:port` (`["127.0.0.1:5353"]`; an address
    /// alone is port 53); empty: the system's /etc/resolv.conf.
    pub nameservers: Vec<NameServer>,
    /// Seconds one query may take (0: 5).
    pub timeout: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Queue folder; empty means `<data_dir>/queue`.
    pub dir: String,
    /// Seconds before the first retry; doubles each attempt.
    pub retry_base: u64,
    /// Longest wait between attempts, in seconds.
    pub retry_max: u64,
    /// Seconds a message may stay queued before it bounces.
    pub lifetime: u64,
    /// Seconds after which the sender is told delivery is delayed.
    pub delay_warning: u64,
    /// Messages delivered at the same time.
    pub concurrency: usize,
    /// Cut-through delivery: a message whose recipients all live on
    /// stores (LMTP) is delivered to them before the SMTP server answers
    /// its DATA, under the queue id it would have had; only what the
    /// stores did not take is written to the queue (docs/delivery.md
    /// "Cut-through"). On by default; false: every message is queued
    /// first.
    pub cut_through: bool,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            dir: String::new(),
            retry_base: 60,
            retry_max: 4 * 3600,
            lifetime: 5 * 86400,
            delay_warning: 4 * 3600,
            concurrency: 20,
            cut_through: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerConfig {
    pub enabled: bool,
    /// Protocol; empty means the listener's name (smtp, submission, ...).
    #[serde(
        deserialize_with = "empty_is_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub protocol: Option<Protocol>,
    pub bind: Vec<SocketAddr>,
    /// `starttls`, `implicit` or `none`; empty means the protocol's usual.
    #[serde(
        deserialize_with = "empty_is_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub tls: Option<TlsMode>,
    /// Expect a HAProxy PROXY v1/v2 header first on each connection.
    pub proxy_protocol: bool,
    /// Networks (CIDR) of the load balancers allowed to send that header;
    /// a connection from anywhere else is closed. Empty: nobody.
    pub proxy_networks: Vec<Network>,
    /// Also listen on this unix socket (LMTP from local MTAs); relative
    /// paths are under the data folder.
    pub unix: String,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            enabled: true,
            protocol: None,
            bind: Vec::new(),
            tls: None,
            proxy_protocol: false,
            proxy_networks: Vec::new(),
            unix: String::new(),
        }
    }
}

choice! {
    /// Every protocol a listener can speak (`listener.NAME.protocol`).
    pub enum Protocol {
        Smtp = "smtp",
        Submission = "submission",
        Submissions = "submissions",
        Lmtp = "lmtp",
        Imap = "imap",
        Imaps = "imaps",
        Pop3 = "pop3",
        Pop3s = "pop3s",
        Http = "http",
        Https = "https",
        /// The administration console and its HTTP API (docs/admin.md),
        /// served by the mem role; plaintext unless `tls` says otherwise.
        Console = "console",
        /// ManageSieve (RFC 5804) on the store (docs/sieve.md).
        Managesieve = "managesieve",
    }
}

choice! {
    /// TLS of a listener (`listener.NAME.tls`) or towards the stores
    /// (`mmp.backend_tls`).
    pub enum TlsMode {
        None = "none",
        StartTls = "starttls",
        Implicit = "implicit",
    }
}

impl Protocol {
    pub fn name(self) -> &'static str {
        self.as_str()
    }

    pub fn default_tls(self) -> TlsMode {
        match self {
            Protocol::Submissions | Protocol::Imaps | Protocol::Pop3s | Protocol::Https => {
                TlsMode::Implicit
            }
            Protocol::Lmtp | Protocol::Http | Protocol::Console => TlsMode::None,
            _ => TlsMode::StartTls,
        }
    }
}

impl ListenerConfig {
    /// The protocol given, else the one the listener is named after
    /// (None: neither; `validate` reports it).
    pub fn protocol(&self, name: &str) -> Option<Protocol> {
        self.protocol.or_else(|| name.parse().ok())
    }

    /// The TLS given, else the protocol's usual.
    pub fn tls_mode(&self, proto: Protocol) -> TlsMode {
        self.tls.unwrap_or(proto.default_tls())
    }
}

/// Where the configuration came from, for error messages.
pub struct Loaded {
    pub config: Config,
    /// True when no `--config` file was given (the quickstart default).
    pub quickstart: bool,
}

/// Loads the configuration. Returns every problem found, each naming the
/// key and the file it came from.
pub fn load(file: Option<&Path>, roles: &[Role]) -> Result<Loaded, Vec<String>> {
    let mut fig = Figment::new().merge(Toml::string(QUICKSTART));
    if file.is_none() {
        // The quickstart alone also serves HTTPS (webmail and JMAP with the
        // generated certificate); with a config file HTTPS is the operator's
        // choice (`[listener.https]`), so no fixed port appears in every
        // configured server.
        fig = fig.merge(Toml::string(QUICKSTART_HTTPS));
        fig = fig.merge(Toml::string(QUICKSTART_ADMIN));
        fig = fig.merge(Toml::string(QUICKSTART_CONSOLE));
        fig = fig.merge(Toml::string(QUICKSTART_MANAGESIEVE));
    }
    if file.is_some() {
        for role in roles {
            fig = fig.merge(Toml::string(role_profile(*role)));
        }
    }
    if let Some(path) = file {
        if !path.exists() {
            return Err(vec![format!("{}: no such file", path.display())]);
        }
        if let Ok(text) = std::fs::read_to_string(path) {
            check_nesting(&path.display().to_string(), &text).map_err(|e| vec![e])?;
        }
        fig = fig.merge(Toml::file_exact(path));
    }
    let env_errors = check_env(
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
    );
    if !env_errors.is_empty() {
        return Err(env_errors);
    }
    // Only nested keys (SECTION__KEY): other MSGD_* variables in the
    // environment are not configuration.
    fig = fig.merge(
        Env::prefixed("MSGD_")
            .filter(|k| k.as_str().contains("__"))
            .split("__"),
    );
    let mut config: Config = match fig.extract() {
        Ok(c) => c,
        Err(e) => return Err(e.into_iter().map(|e| e.to_string()).collect()),
    };
    map_deprecated(&mut config);
    let errors = validate(&config);
    if errors.is_empty() {
        Ok(Loaded {
            config,
            quickstart: file.is_none(),
        })
    } else {
        Err(errors)
    }
}

/// Old per-path login-failure keys, mapped onto the one `[limits]` set
/// (a warning is logged at start for each one set).
pub fn map_deprecated(c: &mut Config) {
    let l = &mut c.limits;
    if let Some(n) = c.submission.auth_fail_limit {
        l.max_login_failures_per_client = n;
        l.max_login_failures_per_account = n;
    }
    if let Some(w) = c.submission.auth_fail_window {
        l.login_failure_window = w;
    }
    if let Some(n) = c.mmp.max_login_failures_per_ip {
        l.max_login_failures_per_client = n;
    }
    if let Some(n) = c.mmp.max_login_failures_per_user {
        l.max_login_failures_per_account = n;
    }
    if let Some(w) = c.mmp.login_failure_window {
        l.login_failure_window = w;
    }
}

/// Deprecated keys present in this configuration, for a warning at start.
pub fn deprecated_keys(c: &Config) -> Vec<&'static str> {
    let mut v = Vec::new();
    let s = &c.submission;
    let m = &c.mmp;
    for (set, key) in [
        (s.auth_fail_limit.is_some(), "submission.auth_fail_limit"),
        (s.auth_fail_window.is_some(), "submission.auth_fail_window"),
        (
            m.max_login_failures_per_ip.is_some(),
            "mmp.max_login_failures_per_ip",
        ),
        (
            m.max_login_failures_per_user.is_some(),
            "mmp.max_login_failures_per_user",
        ),
        (m.login_failure_window.is_some(), "mmp.login_failure_window"),
    ] {
        if set {
            v.push(key);
        }
    }
    v
}

/// Deepest nesting of arrays and tables accepted in a configuration file
/// or an environment value, and most `__`-separated parts in a variable
/// name. Checked before any parser sees the text: toml stops at 80 levels
/// by itself, but figment's parser of environment values and its nesting
/// of `A__B__C` keys recurse without limit (100,000 `[` overflow the stack).
/// Real configurations nest 3 levels.
pub(crate) const MAX_CONFIG_NESTING: usize = 32;

/// Refuses text whose arrays/tables (`[`, `{`) nest deeper than
/// [`MAX_CONFIG_NESTING`]. Brackets inside strings and comments do not
/// count. `what` names the source in the error.
pub(crate) fn check_nesting(what: &str, text: &str) -> Result<(), String> {
    let mut depth = 0usize;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '[' | '{' => {
                depth += 1;
                if depth > MAX_CONFIG_NESTING {
                    return Err(format!(
                        "{what}: arrays or tables nested more than {MAX_CONFIG_NESTING} deep"
                    ));
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            '#' => {
                // A comment runs to the end of the line.
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '"' | '\'' => {
                // A string (TOML's triple-quoted ones are two empty strings
                // around a plain one, which counts the same).
                let mut escaped = false;
                for s in chars.by_ref() {
                    if c == '"' && s == '\\' && !escaped {
                        escaped = true;
                        continue;
                    }
                    if s == c && !escaped {
                        break;
                    }
                    escaped = false;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks the `MSGD_*` configuration variables among `vars` before figment
/// reads them: values nest at most [`MAX_CONFIG_NESTING`] deep and names
/// have at most that many `__`-separated parts.
pub(crate) fn check_env(vars: impl IntoIterator<Item = (String, String)>) -> Vec<String> {
    let mut errors = Vec::new();
    for (k, v) in vars {
        let is_config =
            k.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("MSGD_")) && k.contains("__");
        if !is_config {
            continue;
        }
        // A hostile name may be 100 KB long: name it by its start.
        let name: String = k.chars().take(64).collect();
        if k.matches("__").count() >= MAX_CONFIG_NESTING {
            errors.push(format!(
                "{name}...: more than {MAX_CONFIG_NESTING} nested key parts"
            ));
        } else if let Err(e) = check_nesting(&name, &v) {
            errors.push(e);
        }
    }
    errors
}

/// Checks that go beyond the shape of the file.
pub(crate) fn validate(c: &Config) -> Vec<String> {
    let mut errors = Vec::new();
    // Values (networks, addresses, choices) were checked by their types
    // when the file loaded; what is left are rules across keys.
    for (name, l) in &c.listener {
        if l.protocol(name).is_none() {
            errors.push(format!(
                "listener.{}: no protocol: the name is not one of {}, so give protocol = \"...\"",
                quote(name),
                Protocol::NAMES.join(", ")
            ));
        }
        if l.enabled && l.bind.is_empty() && l.unix.is_empty() {
            errors.push(format!(
                "listener.{}.bind: no address to listen on",
                quote(name)
            ));
        }
    }
    if c.admin.enabled && c.admin.bind.is_empty() {
        errors.push("admin.bind: no address to listen on (or set admin.enabled = false)".into());
    }
    if c.tls.cert.is_empty() != c.tls.key.is_empty() {
        errors.push("tls: cert and key must be given together".into());
    }
    if c.directory.backend == DirectoryBackend::Ldap {
        errors.extend(validate_ldap(&c.directory.ldap));
        errors.extend(c.directory.ldap.cleartext_errors());
    }
    if !c.store.partition.contains_key(&c.store.default_partition) {
        errors.push(format!(
            "store.default_partition: no partition named '{}'",
            c.store.default_partition
        ));
    }
    for (i, r) in c.store.expire.rule.iter().enumerate() {
        if !r.has_condition() {
            errors.push(format!(
                "store.expire.rule[{i}]: no condition (max_age_days, max_size or flags): it would remove every message of '{}'",
                r.mailbox
            ));
        }
    }
    if c.limits.write_timeout == 0 || c.limits.command_deadline == 0 {
        errors.push("limits: write_timeout and command_deadline must be positive".into());
    }
    if c.limits.max_line < 512 {
        errors.push("limits.max_line: must be at least 512 (RFC 5321 4.5.3.1.4)".into());
    }
    if let Err(e) = c.auth.argon2().check() {
        errors.push(format!("auth.argon2_m_cost/t_cost/p_cost: {e}"));
    }
    if c.auth.hash_threads > 256 {
        errors.push("auth.hash_threads: at most 256".into());
    }
    if let Some(e) = relay_credentials_error(&c.mta) {
        errors.push(e);
    }
    if c.limits.max_bytes_in_flight != 0 && c.limits.max_bytes_in_flight < c.smtp.max_message_size {
        errors.push(format!(
            "limits.max_bytes_in_flight: {} is less than smtp.max_message_size ({}): no message of the largest size could be delivered",
            c.limits.max_bytes_in_flight, c.smtp.max_message_size
        ));
    }
    if c.limits.max_bytes_in_flight != 0 && c.limits.max_bytes_in_flight < c.imap.max_literal {
        errors.push(format!(
            "limits.max_bytes_in_flight: {} is less than imap.max_literal ({}): no APPEND of the largest size could succeed",
            c.limits.max_bytes_in_flight, c.imap.max_literal
        ));
    }
    if c.server.hostname.is_empty() {
        errors.push("server.hostname: must not be empty".into());
    }
    validate_mmp(&c.mmp, &mut errors);
    errors.extend(c.hygiene.dnsbl.errors());
    c.hygiene.filter.validate(&mut errors);
    errors
}

fn validate_mmp(m: &MmpConfig, errors: &mut Vec<String>) {
    if m.login_mode == LoginMode::ProxyAuth
        && (m.proxy_user.is_empty() || m.proxy_password_file.is_empty())
    {
        errors.push("mmp.login_mode: proxyauth needs proxy_user and proxy_password_file".into());
    }
    if m.idle_timeout < 1800 {
        errors.push("mmp.idle_timeout: must be at least 1800 (RFC 9051 section 5.4)".into());
    }
    if m.preauth_timeout == 0 || m.connect_timeout == 0 || m.backend_timeout == 0 {
        errors.push(
            "mmp: preauth_timeout, connect_timeout and backend_timeout must be positive".into(),
        );
    }
}

/// Does `mail_host` (the directory's mailHost of a user) name this store?
/// No mailHost means "here". The store's name is `store.host`, or the
/// server's hostname when that is empty.
pub fn is_own_store(config: &Config, mail_host: Option<&str>) -> bool {
    match mail_host {
        None | Some("") => true,
        Some(h) => {
            let own = if config.store.host.is_empty() {
                &config.server.hostname
            } else {
                &config.store.host
            };
            h.eq_ignore_ascii_case(own)
        }
    }
}

/// `mta.relay_user` is set: the relay settings must make sure the
/// password goes only to a relay that proved its name (a certificate
/// verified for it), or over loopback. An error message otherwise.
pub fn relay_credentials_error(cfg: &MtaConfig) -> Option<String> {
    let loopback = cfg.relay.as_ref().is_some_and(|r| r.host.is_loopback());
    if cfg.relay_user.is_empty() || loopback {
        return None;
    }
    let verified =
        cfg.relay_tls_verify && matches!(cfg.relay_tls, RelayTls::Require | RelayTls::Implicit);
    (!verified).then(|| {
        format!(
            "mta.relay_user: the smarthost password would be sent without a verified TLS certificate \
             (mta.relay_tls = \"{}\", mta.relay_tls_verify = {}); set relay_tls = \"require\" or \"implicit\" \
             with relay_tls_verify = true, or use a loopback relay",
            cfg.relay_tls.name(),
            cfg.relay_tls_verify
        )
    })
}

fn validate_ldap(l: &LdapConfig) -> Vec<String> {
    let mut errors = Vec::new();
    if l.urls.is_empty() {
        errors.push("directory.ldap.urls: no LDAP server given".into());
    }
    for u in &l.urls {
        if !(u.starts_with("ldap://") || u.starts_with("ldaps://")) {
            errors.push(format!(
                "directory.ldap.urls: '{u}' is not an ldap:// or ldaps:// URL"
            ));
        }
    }
    if l.base_dn.is_empty() {
        errors.push("directory.ldap.base_dn: must not be empty".into());
    }
    if !l.bind_password.is_empty() && !l.bind_password_file.is_empty() {
        errors.push("directory.ldap: give bind_password or bind_password_file, not both".into());
    }
    if l.pool_size == 0 || l.auth_pool_size == 0 {
        errors.push("directory.ldap: pool_size and auth_pool_size must be at least 1".into());
    }
    if l.connect_timeout == 0 || l.operation_timeout == 0 {
        errors.push(
            "directory.ldap: connect_timeout and operation_timeout must be at least 1".into(),
        );
    }
    if l.address_attributes.is_empty() || l.login_attributes.is_empty() {
        errors.push(
            "directory.ldap: address_attributes and login_attributes must not be empty".into(),
        );
    }
    if !l.domain_filter.is_empty() && !l.domain_filter.contains("{domain}") {
        errors.push("directory.ldap.domain_filter: must contain {domain}".into());
    }
    errors
}

impl Config {
    /// Resolves a path relative to the data folder.
    pub fn data_path(&self, p: &str, default: &str) -> PathBuf {
        let p = if p.is_empty() { default } else { p };
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.server.data_dir.join(p)
        }
    }

    pub fn directory_path(&self) -> PathBuf {
        self.data_path(&self.directory.path, "directory.json")
    }

    pub fn partition_path(&self, name: &str) -> Option<PathBuf> {
        self.store
            .partition
            .get(name)
            .map(|p| self.data_path(&p.path, &format!("partition/{name}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quickstart_default_is_valid() {
        let c: Config = Figment::new()
            .merge(Toml::string(QUICKSTART))
            .extract()
            .unwrap();
        assert!(validate(&c).is_empty(), "{:?}", validate(&c));
        assert_eq!(
            c.listener["imap"].bind,
            vec!["127.0.0.1:10143".parse().unwrap()]
        );
    }

    /// The old per-path login failure keys still load, mapped onto the one
    /// `[limits]` set every path uses; without them the `[limits]` values hold.
    #[test]
    fn deprecated_login_failure_keys_are_mapped_to_limits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.toml");
        std::fs::write(
            &path,
            "[mmp]\nmax_login_failures_per_ip = 7\nmax_login_failures_per_user = 4\n\
             login_failure_window = 60\n[limits]\nlogin_failure_delay_ms = 5\n",
        )
        .unwrap();
        let c = load(Some(&path), &[Role::Mmp]).unwrap().config;
        assert_eq!(c.limits.max_login_failures_per_client, 7);
        assert_eq!(c.limits.max_login_failures_per_account, 4);
        assert_eq!(c.limits.login_failure_window, 60);
        assert_eq!(c.limits.login_failure_delay_ms, 5);
        assert_eq!(deprecated_keys(&c).len(), 3);
        std::fs::write(
            &path,
            "[submission]\nauth_fail_limit = 3\nauth_fail_window = 30\n",
        )
        .unwrap();
        let c = load(Some(&path), &[Role::MtaOut]).unwrap().config;
        assert_eq!(c.limits.max_login_failures_per_client, 3);
        assert_eq!(c.limits.max_login_failures_per_account, 3);
        assert_eq!(c.limits.login_failure_window, 30);
        std::fs::write(&path, "[limits]\nmax_login_failures_per_client = 2\n").unwrap();
        let c = load(Some(&path), &[Role::MtaOut]).unwrap().config;
        assert_eq!(c.limits.max_login_failures_per_client, 2);
        assert_eq!(c.limits.max_login_failures_per_account, 10);
        assert!(deprecated_keys(&c).is_empty());
    }

    #[test]
    fn every_role_profile_parses() {
        for role in Role::ALL {
            let c: Result<Config, _> = Figment::new()
                .merge(Toml::string(QUICKSTART))
                .merge(Toml::string(role_profile(role)))
                .extract();
            assert!(c.is_ok(), "{role:?}: {c:?}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_before_any_parser_sees_it() {
        let deep = "[".repeat(100_000);
        assert!(check_nesting("f", &format!("x = {deep}")).is_err());
        assert!(check_nesting("f", &"{a=".repeat(100_000)).is_err());
        // Brackets in strings and comments do not count; real files pass.
        assert!(check_nesting("f", &format!("x = \"{deep}\" # {deep}\ny = '{deep}'")).is_ok());
        assert!(check_nesting("f", "x = \"\\\"[\"\n[a.b]\ny = [[1], {z = [2]}]\n").is_ok());
        assert!(check_nesting("q", QUICKSTART).is_ok());
        for role in Role::ALL {
            assert!(check_nesting("r", role_profile(role)).is_ok());
        }
        let at = |n: usize| format!("x = {}1{}", "[".repeat(n), "]".repeat(n));
        assert!(check_nesting("f", &at(MAX_CONFIG_NESTING)).is_ok());
        assert!(check_nesting("f", &at(MAX_CONFIG_NESTING + 1)).is_err());
    }

    #[test]
    fn environment_nesting_is_refused_before_figment_parses_it() {
        let var = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        assert!(check_env(var("MSGD_SERVER__HOSTNAME", &"[".repeat(100_000))).len() == 1);
        let long = format!("MSGD_{}", vec!["A"; 30_000].join("__"));
        let e = check_env(var(&long, "1"));
        assert_eq!(e.len(), 1);
        assert!(e[0].len() < 200, "the error quotes 100 KB: {}", e[0].len());
        // Not configuration: left alone.
        assert!(check_env(var("PATH", &"[".repeat(100))).is_empty());
        assert!(check_env(var("MSGD_X", &"[".repeat(100))).is_empty());
        assert!(check_env(var("MSGD_SERVER__HOSTNAME", "[\"a\", [1]]")).is_empty());
    }

    #[test]
    fn unknown_key_is_an_error_naming_the_key() {
        let e = Figment::new()
            .merge(Toml::string("[server]\nhostnam = \"x\"\n"))
            .extract::<Config>()
            .unwrap_err();
        assert!(e.to_string().contains("hostnam"), "{e}");
    }

    /// The quickstart defaults with `toml` merged over them, as `load`
    /// reads a file: the typed values are checked here, the rules across
    /// keys by `validate`.
    fn extract(toml: &str) -> Result<Config, String> {
        Figment::new()
            .merge(Toml::string(QUICKSTART))
            .merge(Toml::string(toml))
            .extract::<Config>()
            .map_err(|e| e.to_string())
    }

    /// A bad value is refused when the file loads, by an error that names
    /// the key and quotes the value; a good one loads and validates.
    fn check_typed_key(good: &str, bad: &str, key: &str, says: &str) {
        let c = extract(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        assert!(validate(&c).is_empty(), "{good}: {:?}", validate(&c));
        let e = extract(bad).expect_err(bad);
        assert!(e.contains(key), "{bad}: the error does not name {key}: {e}");
        assert!(
            e.contains(says),
            "{bad}: the error does not say {says:?}: {e}"
        );
    }

    #[test]
    fn expire_rules_are_typed_and_need_a_condition() {
        let c = extract(
            "[store.expire]\ninterval = 0\n[[store.expire.rule]]\nmailbox = \"Trash\"\nmax_age_days = 30\n",
        )
        .unwrap();
        assert!(validate(&c).is_empty(), "{:?}", validate(&c));
        assert_eq!(c.store.expire.rule[0].max_age_days, Some(30));
        assert_eq!(c.store.expire.purge_after, 3600);
        let c = extract("[[store.expire.rule]]\nmailbox = \"*\"\n").unwrap();
        let e = validate(&c).join("\n");
        assert!(e.contains("store.expire.rule[0]: no condition"), "{e}");
        let e = extract("[[store.expire.rule]]\nmax_age_days = \"30\"\n").unwrap_err();
        assert!(e.contains("max_age_days"), "{e}");
    }

    #[test]
    fn every_networks_key_is_a_typed_list_checked_at_load() {
        for key in [
            "store.lmtp_networks",
            "imap.login_networks",
            "pop3.login_networks",
            "submission.trusted_networks",
            "listener.imap.proxy_networks",
        ] {
            let (table, name) = key.rsplit_once('.').unwrap();
            check_typed_key(
                &format!("[{table}]\n{name} = [\"10.0.0.0/8\", \"fd00::/8\", \"::1\"]\n"),
                &format!("[{table}]\n{name} = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n"),
                &format!("{key}.1"),
                "'10.0.0.0/33' is not a network (CIDR",
            );
            check_typed_key(
                &format!("[{table}]\n{name} = []\n"),
                &format!("[{table}]\n{name} = [\"mta.example\"]\n"),
                key,
                "'mta.example' is not a network",
            );
        }
        // Parsed once, at load: the values are networks, ready to match.
        let c = extract("[imap]\nlogin_networks = [\"10.1.0.0/16\"]\n").unwrap();
        assert!(c.imap.login_networks[0].contains("10.1.2.3".parse().unwrap()));
        assert!(!c.imap.login_networks[0].contains("10.2.0.1".parse().unwrap()));
    }

    #[test]
    fn network_defaults_trust_no_balancer_and_lmtp_from_private_ranges() {
        let d = Config::default();
        assert!(d.listener.values().all(|l| l.proxy_networks.is_empty()));
        let lmtp = &d.store.lmtp_networks;
        assert_eq!(lmtp.len(), DEFAULT_LMTP_NETWORKS.len());
        for ip in ["10.1.2.3", "::1", "127.0.0.1", "192.168.1.1", "fd00::1"] {
            assert!(crate::netaddr::in_any(lmtp, ip.parse().unwrap()), "{ip}");
        }
        assert!(!crate::netaddr::in_any(lmtp, "192.0.2.1".parse().unwrap()));
        let e = validate(&extract("[limits]\nwrite_timeout = 0\n").unwrap()).join("\n");
        assert!(e.contains("limits: write_timeout"), "{e}");
    }

    #[test]
    fn choices_are_enums_listing_the_accepted_values() {
        for (good, bad, key, says) in [
            (
                "[log]\nformat = \"json\"\n",
                "[log]\nformat = \"xml\"\n",
                "log.format",
                "'xml' is not one of text, json",
            ),
            (
                "[directory]\nbackend = \"embedded\"\n",
                "[directory]\nbackend = \"sql\"\n",
                "directory.backend",
                "'sql' is not one of embedded, ldap",
            ),
            (
                "[mmp]\nbackend_tls = \"implicit\"\n",
                "[mmp]\nbackend_tls = \"tls\"\n",
                "mmp.backend_tls",
                "'tls' is not one of none, starttls, implicit",
            ),
            (
                "[mmp]\nlogin_mode = \"proxyauth\"\nproxy_user = \"mmp\"\nproxy_password_file = \"p\"\n",
                "[mmp]\nlogin_mode = \"proxy\"\n",
                "mmp.login_mode",
                "'proxy' is not one of credentials, proxyauth",
            ),
            (
                "[mta.tls_policy]\n\"bank.example\" = \"verify\"\n",
                "[mta.tls_policy]\n\"bank.example\" = \"strict\"\n",
                "mta.tls_policy.bank.example",
                "'strict' is not one of none, opportunistic, require, verify",
            ),
            (
                "[listener.imap]\ntls = \"implicit\"\n",
                "[listener.imap]\ntls = \"ssl\"\n",
                "listener.imap.tls",
                "'ssl' is not one of none, starttls, implicit",
            ),
            (
                "[listener.imap2]\nprotocol = \"imaps\"\nbind = [\"127.0.0.1:1\"]\n",
                "[listener.imap2]\nprotocol = \"imap4\"\nbind = [\"127.0.0.1:1\"]\n",
                "listener.imap2.protocol",
                "'imap4' is not one of smtp, submission, submissions, lmtp",
            ),
        ] {
            check_typed_key(good, bad, key, says);
        }
        check_typed_key(
            "[store]\nsync = \"filesystem\"\n",
            "[store]\nsync = \"fsync\"\n",
            "store.sync",
            "`files` or `filesystem`",
        );
        assert_eq!(extract("").unwrap().store.sync, SyncMode::Files);
        assert_eq!(
            extract("[store]\nsync = \"filesystem\"\n")
                .unwrap()
                .store
                .sync,
            SyncMode::Filesystem
        );
        let c = extract("[listener.imap]\ntls = \"implicit\"\n").unwrap();
        assert_eq!(
            c.listener["imap"].tls_mode(Protocol::Imap),
            TlsMode::Implicit
        );
        assert_eq!(c.log.format, LogFormat::Text);
        // The empty string still means "the protocol's usual".
        let c = extract("[listener.imap]\ntls = \"\"\nprotocol = \"\"\n").unwrap();
        assert_eq!(c.listener["imap"].protocol("imap"), Some(Protocol::Imap));
        assert_eq!(
            c.listener["imap"].tls_mode(Protocol::Imap),
            TlsMode::StartTls
        );
        // A listener whose name is no protocol needs `protocol`.
        let c = extract("[listener.second]\nbind = [\"127.0.0.1:1\"]\n").unwrap();
        let e = validate(&c).join("\n");
        assert!(e.contains("listener.second: no protocol"), "{e}");
        assert!(e.contains("imaps, pop3, pop3s, http"), "{e}");
        // proxyauth without its credentials is a rule across keys.
        let c = extract("[mmp]\nlogin_mode = \"proxyauth\"\n").unwrap();
        let e = validate(&c).join("\n");
        assert!(
            e.contains("mmp.login_mode: proxyauth needs proxy_user"),
            "{e}"
        );
    }

    #[test]
    fn addresses_and_routes_are_typed_at_load() {
        for (good, bad, key, says) in [
            (
                "[mta]\nrelay = \"[::1]:2525\"\n",
                "[mta]\nrelay = \"smtp.example.net\"\n",
                "mta.relay",
                "'smtp.example.net' is not host:port",
            ),
            (
                "[mta]\nlocal_via = \"smtp:mta-in.example:25\"\n",
                "[mta]\nlocal_via = \"smtp:mta-in.example\"\n",
                "mta.local_via",
                "is not \"lmtp\" or \"smtp:host:port\"",
            ),
            (
                "[mta.hosts]\n\"store1.example\" = \"10.0.0.5:24\"\n",
                "[mta.hosts]\n\"store1.example\" = \"10.0.0.5:x\"\n",
                "mta.hosts.store1.example",
                "'10.0.0.5:x' is not host or host:port",
            ),
            (
                "[mmp.backends]\nstore1 = \"10.0.0.5\"\n",
                "[mmp.backends]\nstore1 = \"10.0.0.5:143\"\n",
                "mmp.backends.store1",
                "must be a host without port",
            ),
            (
                "[mmp.imap_backends]\nstore1 = \"[::1]:1143\"\n",
                "[mmp.imap_backends]\nstore1 = \"bad host\"\n",
                "mmp.imap_backends.store1",
                "'bad host' is not host or host:port",
            ),
            (
                "[mmp.pop3_backends]\nstore1 = \"store1.example\"\n",
                "[mmp.pop3_backends]\nstore1 = \"a:b:c\"\n",
                "mmp.pop3_backends.store1",
                "'a:b:c' is not host or host:port",
            ),
            (
                "[mmp]\nbackend_server_name = \"stores.example\"\n",
                "[mmp]\nbackend_server_name = \"stores example\"\n",
                "mmp.backend_server_name",
                "'stores example' is not a host name or address",
            ),
            (
                "[dns]\nnameservers = [\"127.0.0.1:5353\", \"::1\"]\n",
                "[dns]\nnameservers = [\"ns.example\"]\n",
                "dns.nameservers",
                "'ns.example' is not ip:port",
            ),
        ] {
            check_typed_key(good, bad, key, says);
        }
        let c = extract(
            "[mta]\nrelay = \"\"\nlocal_via = \"smtp:[::1]:2525\"\n\
             [mta.hosts]\ns1 = \"10.0.0.5\"\n[dns]\nnameservers = [\"::1\"]\n",
        )
        .unwrap();
        assert_eq!(c.mta.relay, None);
        assert_eq!(
            c.mta.local_via,
            LocalVia::Smtp("[::1]:2525".parse().unwrap())
        );
        assert_eq!(c.mta.local_via.to_string(), "smtp:[::1]:2525");
        // A mailHost mapped without a port gets the LMTP port.
        assert_eq!(
            c.mta.hosts["s1"]
                .with_default_port(c.mta.lmtp_port)
                .to_string(),
            "10.0.0.5:24"
        );
        assert_eq!(c.dns.nameservers[0].0, "[::1]:53".parse().unwrap());
        assert_eq!(Config::default().mta.local_via, LocalVia::Lmtp);
    }

    /// A bad value in an `MSGD_*` variable is refused the same way, naming
    /// the variable's key.
    #[test]
    fn typed_values_from_the_environment_are_checked() {
        use figment::providers::Serialized;
        let value: figment::value::Value = "[\"10.0.0.0/8\", \"x\"]".parse().unwrap();
        let e = Figment::new()
            .merge(Toml::string(QUICKSTART))
            .merge(Serialized::defaults(figment::util::nest(
                "store.lmtp_networks",
                value,
            )))
            .extract::<Config>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("store.lmtp_networks.1"), "{e}");
        assert!(e.contains("'x' is not a network"), "{e}");
    }

    #[test]
    fn a_typed_config_round_trips() {
        let text = "[mta]\nrelay = \"[::1]:2525\"\nlocal_via = \"smtp:mx.example:25\"\n\
                    [mta.tls_policy]\n\"a.example\" = \"require\"\n\
                    [listener.imaps2]\nprotocol = \"imaps\"\nbind = [\"127.0.0.1:1\"]\n\
                    proxy_networks = [\"10.0.0.0/8\"]\n";
        let c = extract(text).unwrap();
        let again: Config = Figment::new()
            .merge(figment::providers::Serialized::defaults(&c))
            .extract()
            .unwrap();
        assert_eq!(again.mta.relay, c.mta.relay);
        assert_eq!(again.mta.local_via, c.mta.local_via);
        assert_eq!(again.mta.tls_policy, c.mta.tls_policy);
        assert_eq!(again.listener["imaps2"].protocol, Some(Protocol::Imaps));
        assert_eq!(
            again.listener["imaps2"].proxy_networks,
            c.listener["imaps2"].proxy_networks
        );
        assert_eq!(again.listener["imap"].tls, None);
    }

    #[test]
    fn relay_credentials_need_a_verified_certificate_or_loopback() {
        let mta = |relay: &str, tls: &str, verify: bool| MtaConfig {
            relay: Some(relay.parse().unwrap()),
            relay_user: "me".into(),
            relay_tls: match tls {
                "opportunistic" => RelayTls::Opportunistic,
                "none" => RelayTls::None,
                "require" => RelayTls::Require,
                _ => RelayTls::Implicit,
            },
            relay_tls_verify: verify,
            ..MtaConfig::default()
        };
        for (relay, tls, verify, ok) in [
            ("smtp.example.net:587", "opportunistic", true, false),
            ("smtp.example.net:587", "none", true, false),
            ("smtp.example.net:587", "require", false, false),
            ("smtp.example.net:465", "implicit", false, false),
            ("smtp.example.net:587", "require", true, true),
            ("smtp.example.net:465", "implicit", true, true),
            ("127.0.0.1:2525", "opportunistic", true, true),
            ("[::1]:25", "none", false, true),
            ("localhost:25", "none", false, true),
        ] {
            let e = relay_credentials_error(&mta(relay, tls, verify));
            assert_eq!(e.is_none(), ok, "{relay} {tls} {verify}: {e:?}");
            if let Some(e) = e {
                assert!(e.starts_with("mta.relay_user:"), "{e}");
            }
        }
        // No user: nothing to protect.
        let mut c = mta("smtp.example.net:587", "opportunistic", false);
        c.relay_user.clear();
        assert!(relay_credentials_error(&c).is_none());
    }
}

/// `[provision]`: how users, groups and domains are created and who may
/// manage them (docs/admin.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProvisionConfig {
    /// Site administrators (addresses or LDAP DNs): they manage every
    /// domain. The CLI run by the operator acts as the site.
    pub site_admins: Vec<String>,
    /// An LDAP group whose members are site administrators; empty: none.
    pub site_admin_group: String,
    /// Seconds between a user being marked deleted and its mail being
    /// purged from its store (the store role runs the purge).
    pub purge_after: u64,
    /// What happens to mail for a deleted user: `refuse` (550 5.1.1) or
    /// `keep` (delivered until the purge).
    pub deleted_mail: DeletedMail,
    /// The change log, one JSON line per change (who, what, when);
    /// relative to data_dir.
    pub audit_log: String,
    /// Where new entries go and what they look like in LDAP.
    pub ldap: ProvisionLdapConfig,
    /// Service classes: named bundles of defaults for new users.
    pub class: BTreeMap<String, ServiceClass>,
}

impl Default for ProvisionConfig {
    fn default() -> Self {
        ProvisionConfig {
            site_admins: Vec::new(),
            site_admin_group: String::new(),
            purge_after: 7 * 86400,
            deleted_mail: DeletedMail::Refuse,
            audit_log: "provision-audit.log".into(),
            ldap: ProvisionLdapConfig::default(),
            class: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeletedMail {
    Refuse,
    Keep,
}

/// `[provision.ldap]`: where the provisioning creates LDAP entries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProvisionLdapConfig {
    /// Where new users are created; empty: `ou=people,<base_dn>`.
    pub user_base: String,
    /// Where new groups are created; empty: `ou=groups,<base_dn>`.
    pub group_base: String,
    /// Where new domains are created; empty: directory.ldap.domain_base_dn,
    /// else base_dn.
    pub domain_base: String,
    /// RDN attribute of new users (its value: the address's local part,
    /// or the whole address when the local part is taken).
    pub user_rdn: String,
    pub user_classes: Vec<String>,
    pub group_classes: Vec<String>,
    pub domain_classes: Vec<String>,
    /// How passwords are hashed for the directory: `ARGON2`, `SSHA512`
    /// or `SSHA` (the server must verify the scheme chosen).
    pub password_scheme: String,
}

impl Default for ProvisionLdapConfig {
    fn default() -> Self {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        ProvisionLdapConfig {
            user_base: String::new(),
            group_base: String::new(),
            domain_base: String::new(),
            user_rdn: "uid".into(),
            user_classes: v(&["inetOrgPerson", "msgdMailUser"]),
            group_classes: v(&["groupOfNames", "mailGroup"]),
            domain_classes: v(&["domain", "mailDomain"]),
            password_scheme: "SSHA512".into(),
        }
    }
}

/// `[provision.class.NAME]`: defaults a user created with `--class NAME`
/// gets (explicit values win).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceClass {
    pub quota: Option<u64>,
    pub msg_quota: Option<u64>,
    pub mail_host: Option<String>,
    pub partition: Option<String>,
}

/// `[hygiene]`: verification of inbound mail on the SMTP listener of the
/// mta-in and all-in-one roles (src/smtp/auth_results.rs, docs/hygiene.md).
/// Submission, authenticated sessions, LMTP and `trusted_networks` skip it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HygieneConfig {
    /// SPF, DKIM, ARC and DMARC at the end of DATA, one
    /// Authentication-Results field. Off by default: it queries DNS for
    /// every message, so a site turns it on with working `[dns]`.
    pub enabled: bool,
    /// A DMARC failure under `p=reject` is refused `550 5.7.1`; false:
    /// such mail is quarantined (Junk) instead.
    pub dmarc_reject: bool,
    /// A DMARC failure under `p=quarantine` goes to the recipients' Junk
    /// mailbox; false: it is delivered as usual (the header still says so).
    pub dmarc_quarantine: bool,
    /// Seconds all verification of one message may take (DNS included);
    /// what is not done by then is `temperror` and never a rejection (0: 10).
    pub timeout: u64,
    /// Clients whose mail is not verified (a site's own relays).
    pub trusted_networks: Vec<Network>,
    /// Per From-domain overrides: `[hygiene.domain."example.org"]`.
    pub domain: BTreeMap<String, HygieneDomain>,
    /// `[hygiene.dnsbl]`: DNS blocklists and allowlists.
    pub dnsbl: DnsblConfig,
    /// `[hygiene.rate]`: rate limits, and per-user limits on submission.
    pub rate: RateConfig,
    /// `[hygiene.greylist]`: greylisting.
    pub greylist: GreylistConfig,
    /// `[hygiene.filter]`: the content filter (rspamd or spamd).
    pub filter: FilterConfig,
}

impl Default for HygieneConfig {
    fn default() -> Self {
        HygieneConfig {
            enabled: false,
            dmarc_reject: true,
            dmarc_quarantine: true,
            timeout: 10,
            trusted_networks: Vec::new(),
            domain: BTreeMap::new(),
            dnsbl: DnsblConfig::default(),
            rate: RateConfig::default(),
            greylist: GreylistConfig::default(),
            filter: FilterConfig::default(),
        }
    }
}

/// `[hygiene.domain."NAME"]`: what to do with DMARC failures of one
/// RFC 5322.From domain.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HygieneDomain {
    /// Replaces the policy the domain publishes: none, quarantine, reject.
    pub dmarc_policy: Option<DmarcPolicy>,
}

/// A DMARC disposition (RFC 7489 6.3 `p=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DmarcPolicy {
    None,
    Quarantine,
    Reject,
}
