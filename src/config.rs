//! Configuration: built-in defaults < role profiles < `--config` file <
//! `MSGD_*` environment variables (`__` separates nested keys).
//!
//! Every table denies unknown keys so a typo is an error that names the key,
//! never a silently ignored setting. A running session takes one
//! `Arc<Config>` snapshot and keeps it for its whole life.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::roles::Role;

/// The quickstart default: loopback, usual ports plus 10000, data under the
/// current directory. Production profiles in `roles/` override the binds.
pub const QUICKSTART: &str = include_str!("../etc/quickstart.toml");

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
    /// Listeners by name: smtp, submission, submissions, lmtp, imap, imaps,
    /// pop3, pop3s, http. Which ones run depends on the roles.
    pub listener: BTreeMap<String, ListenerConfig>,
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
    pub format: String,
    /// Empty: log to stderr. Otherwise a folder for `msgd.log`.
    pub dir: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: "text".into(),
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
    pub backend: String,
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
            backend: "embedded".into(),
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
        }
    }
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
    /// DNs that are members of a group (users or groups).
    pub group_dn_member: Vec<String>,
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
            group_dn_member: vec!["uniqueMember".into(), "member".into()],
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
    pub over_quota: String,
    /// Networks (CIDR) whose hosts may deliver over the LMTP listener's
    /// TCP addresses (the MTAs); others are closed at once. Default:
    /// loopback and the private ranges. The unix socket is not affected.
    pub lmtp_networks: Vec<String>,
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
            over_quota: "temporary".into(),
            lmtp_networks: DEFAULT_LMTP_NETWORKS.map(String::from).to_vec(),
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
    pub login_networks: Vec<String>,
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
    pub login_networks: Vec<String>,
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
    /// (`"store1.example.com" = "10.0.0.5:24"`); other names go through DNS.
    pub hosts: BTreeMap<String, String>,
    /// Seconds one delivery attempt (connect and transaction) may take.
    pub delivery_timeout: u64,
    /// Smarthost (`host:port`) for all mail to other domains; empty:
    /// deliver directly to the domain's MX hosts.
    pub relay: String,
    /// Login for AUTH PLAIN at the smarthost; empty: no AUTH.
    pub relay_user: String,
    /// File holding the smarthost password (first line).
    pub relay_password_file: String,
    /// TLS to the smarthost: `opportunistic` (STARTTLS when offered),
    /// `require` (STARTTLS must succeed),
    /// `implicit` (TLS from the first byte, port 465 style), `none`.
    pub relay_tls: String,
    /// Verify the smarthost's certificate (against `tls_ca_file`) when
    /// `relay_tls` is `require` or `implicit`.
    pub relay_tls_verify: bool,
    /// How mail for local domains leaves the queue: `lmtp` (straight to
    /// the store named by mailHost, in-process when it is this one) or
    /// `smtp:host:port` (to an mta-in).
    pub local_via: String,
    /// Port of MX hosts (25; tests point it at a free loopback port).
    pub smtp_port: u16,
    /// Per-domain TLS policy for MX delivery: `opportunistic` (default:
    /// STARTTLS when offered, certificate not checked), `require`
    /// (STARTTLS must succeed, certificate not checked; otherwise a
    /// temporary failure), `verify` (as require, and the certificate must
    /// be valid for the MX host name), `none` (never STARTTLS).
    pub tls_policy: BTreeMap<String, String>,
    /// PEM file of trust anchors for `verify` and `relay_tls = "require"`;
    /// empty: /etc/ssl/certs/ca-certificates.crt.
    pub tls_ca_file: String,
    /// Connections open at the same time to one destination domain.
    pub max_per_domain: usize,
    /// Seconds an idle connection to an MX host is kept for the next message.
    pub connection_idle: u64,
}

impl Default for MtaConfig {
    fn default() -> Self {
        MtaConfig {
            lmtp_port: 24,
            hosts: BTreeMap::new(),
            delivery_timeout: 120,
            relay: String::new(),
            relay_user: String::new(),
            relay_password_file: String::new(),
            relay_tls: "opportunistic".into(),
            relay_tls_verify: true,
            local_via: "lmtp".into(),
            smtp_port: 25,
            tls_policy: BTreeMap::new(),
            tls_ca_file: String::new(),
            max_per_domain: 10,
            connection_idle: 30,
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
    pub backends: BTreeMap<String, String>,
    /// mailHost -> `host:port` for IMAP only (wins over `backends`).
    pub imap_backends: BTreeMap<String, String>,
    /// mailHost -> `host:port` for POP3 only (wins over `backends`).
    pub pop3_backends: BTreeMap<String, String>,
    /// Store ports when a map gives none; 0: 143/110, or 993/995 with
    /// `backend_tls = "implicit"`.
    pub imap_port: u16,
    pub pop3_port: u16,
    /// Seconds to connect to one store address before trying the next.
    pub connect_timeout: u64,
    /// Seconds the login dialogue with the store may take in all.
    pub backend_timeout: u64,
    /// TLS to the stores: `none`, `starttls` or `implicit`.
    pub backend_tls: String,
    /// PEM file of the CA (or the self-signed certificates) the stores'
    /// certificates are checked against; needed unless `backend_tls` is
    /// `none` or `backend_tls_insecure` is set.
    pub backend_ca_file: String,
    /// Accept any store certificate (tests and labs only).
    pub backend_tls_insecure: bool,
    /// Name the stores' certificates are checked for; empty: the host
    /// connected to (from the maps or the mailHost).
    pub backend_server_name: String,
    /// Send a PROXY v2 header naming the client to the store first.
    pub backend_proxy_protocol: bool,
    /// IMAP: send ID with x-originating-ip/port and x-connected-ip/port
    /// (the Dovecot convention) to the store before logging in.
    pub backend_id: bool,
    /// How the mmp logs in at the store: `credentials` (the user's own
    /// login and password) or `proxyauth` (SASL PLAIN with the user as
    /// authorization identity and `proxy_user` / `proxy_password_file` as
    /// credentials).
    pub login_mode: String,
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
            backend_tls: "starttls".into(),
            backend_ca_file: String::new(),
            backend_tls_insecure: false,
            backend_server_name: String::new(),
            backend_proxy_protocol: false,
            backend_id: true,
            login_mode: "credentials".into(),
            proxy_user: String::new(),
            proxy_password_file: String::new(),
            max_login_failures_per_ip: None,
            max_login_failures_per_user: None,
            login_failure_window: None,
            preauth_timeout: 60,
            idle_timeout: 1800,
        }
    }
}

/// Authenticated submission (the mta-out role: 587 and 465).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubmissionConfig {
    /// Client networks (CIDR) that may submit without AUTH, e.g. a
    /// webmail host: `["10.0.0.0/8", "::1/128"]`.
    pub trusted_networks: Vec<String>,
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

/// The DNS resolver used for MX lookups.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Name servers as `ip:port` (`["127.0.0.1:5353"]`); empty: the
    /// system's /etc/resolv.conf.
    pub nameservers: Vec<String>,
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
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerConfig {
    pub enabled: bool,
    /// Protocol; empty means the listener's name (smtp, submission, ...).
    pub protocol: String,
    pub bind: Vec<SocketAddr>,
    /// `starttls`, `implicit` or `none`; empty means the protocol's usual.
    pub tls: String,
    /// Expect a HAProxy PROXY v1/v2 header first on each connection.
    pub proxy_protocol: bool,
    /// Networks (CIDR) of the load balancers allowed to send that header;
    /// a connection from anywhere else is closed. Empty: nobody.
    pub proxy_networks: Vec<String>,
    /// Also listen on this unix socket (LMTP from local MTAs); relative
    /// paths are under the data folder.
    pub unix: String,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            enabled: true,
            protocol: String::new(),
            bind: Vec::new(),
            tls: String::new(),
            proxy_protocol: false,
            proxy_networks: Vec::new(),
            unix: String::new(),
        }
    }
}

/// Every protocol a listener can speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Smtp,
    Submission,
    Submissions,
    Lmtp,
    Imap,
    Imaps,
    Pop3,
    Pop3s,
    Http,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    None,
    StartTls,
    Implicit,
}

impl Protocol {
    pub fn parse(s: &str) -> Option<Protocol> {
        Some(match s {
            "smtp" => Protocol::Smtp,
            "submission" => Protocol::Submission,
            "submissions" => Protocol::Submissions,
            "lmtp" => Protocol::Lmtp,
            "imap" => Protocol::Imap,
            "imaps" => Protocol::Imaps,
            "pop3" => Protocol::Pop3,
            "pop3s" => Protocol::Pop3s,
            "http" => Protocol::Http,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Smtp => "smtp",
            Protocol::Submission => "submission",
            Protocol::Submissions => "submissions",
            Protocol::Lmtp => "lmtp",
            Protocol::Imap => "imap",
            Protocol::Imaps => "imaps",
            Protocol::Pop3 => "pop3",
            Protocol::Pop3s => "pop3s",
            Protocol::Http => "http",
        }
    }

    pub fn default_tls(self) -> TlsMode {
        match self {
            Protocol::Submissions | Protocol::Imaps | Protocol::Pop3s => TlsMode::Implicit,
            Protocol::Lmtp | Protocol::Http => TlsMode::None,
            _ => TlsMode::StartTls,
        }
    }
}

impl ListenerConfig {
    pub fn protocol(&self, name: &str) -> Option<Protocol> {
        Protocol::parse(if self.protocol.is_empty() {
            name
        } else {
            &self.protocol
        })
    }

    pub fn tls_mode(&self, proto: Protocol) -> Option<TlsMode> {
        match self.tls.as_str() {
            "" => Some(proto.default_tls()),
            "none" => Some(TlsMode::None),
            "starttls" => Some(TlsMode::StartTls),
            "implicit" => Some(TlsMode::Implicit),
            _ => None,
        }
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
    for (name, l) in &c.listener {
        match l.protocol(name) {
            None => errors.push(format!(
                "listener.{name}: unknown protocol '{}'",
                if l.protocol.is_empty() {
                    name
                } else {
                    &l.protocol
                }
            )),
            Some(p) => {
                if l.tls_mode(p).is_none() {
                    errors.push(format!(
                        "listener.{name}.tls: '{}' is not one of none, starttls, implicit",
                        l.tls
                    ));
                }
            }
        }
        if l.enabled && l.bind.is_empty() && l.unix.is_empty() {
            errors.push(format!("listener.{name}.bind: no address to listen on"));
        }
        for n in &l.proxy_networks {
            if crate::smtp::auth::parse_cidr(n).is_none() {
                errors.push(format!(
                    "listener.{name}.proxy_networks: '{n}' is not a network (CIDR)"
                ));
            }
        }
    }
    if c.tls.cert.is_empty() != c.tls.key.is_empty() {
        errors.push("tls: cert and key must be given together".into());
    }
    if !matches!(c.log.format.as_str(), "text" | "json") {
        errors.push(format!(
            "log.format: '{}' is not one of text, json",
            c.log.format
        ));
    }
    if !matches!(c.directory.backend.as_str(), "embedded" | "ldap") {
        errors.push(format!(
            "directory.backend: '{}' is not one of embedded, ldap",
            c.directory.backend
        ));
    }
    if c.directory.backend == "ldap" {
        errors.extend(validate_ldap(&c.directory.ldap));
        errors.extend(crate::directory::ldap::cleartext_errors(&c.directory.ldap));
    }
    if !c.store.partition.contains_key(&c.store.default_partition) {
        errors.push(format!(
            "store.default_partition: no partition named '{}'",
            c.store.default_partition
        ));
    }
    if !matches!(c.store.over_quota.as_str(), "temporary" | "permanent") {
        errors.push(format!(
            "store.over_quota: '{}' is not one of temporary, permanent",
            c.store.over_quota
        ));
    }
    for (key, nets) in [
        ("imap.login_networks", &c.imap.login_networks),
        ("pop3.login_networks", &c.pop3.login_networks),
        ("store.lmtp_networks", &c.store.lmtp_networks),
    ] {
        for n in nets {
            if crate::smtp::auth::parse_cidr(n).is_none() {
                errors.push(format!("{key}: '{n}' is not a network (CIDR)"));
            }
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
    for n in &c.submission.trusted_networks {
        if crate::smtp::auth::parse_cidr(n).is_none() {
            errors.push(format!(
                "submission.trusted_networks: '{n}' is not a network (e.g. 10.0.0.0/8)"
            ));
        }
    }
    for n in &c.dns.nameservers {
        if n.parse::<SocketAddr>().is_err() && n.parse::<std::net::IpAddr>().is_err() {
            errors.push(format!("dns.nameservers: '{n}' is not ip:port"));
        }
    }
    if !matches!(
        c.mta.relay_tls.as_str(),
        "opportunistic" | "require" | "implicit" | "none"
    ) {
        errors.push(format!(
            "mta.relay_tls: '{}' is not one of opportunistic, require, implicit, none",
            c.mta.relay_tls
        ));
    }
    for (d, p) in &c.mta.tls_policy {
        if !matches!(p.as_str(), "opportunistic" | "require" | "verify" | "none") {
            errors.push(format!(
                "mta.tls_policy.\"{d}\": '{p}' is not one of opportunistic, require, verify, none"
            ));
        }
    }
    if let Some(e) = crate::route::relay_credentials_error(&c.mta) {
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
    if c.mta.local_via != "lmtp" && crate::route::local_via_smtp(&c.mta.local_via).is_none() {
        errors.push(format!(
            "mta.local_via: '{}' is not \"lmtp\" or \"smtp:host:port\"",
            c.mta.local_via
        ));
    }
    if c.server.hostname.is_empty() {
        errors.push("server.hostname: must not be empty".into());
    }
    validate_mmp(&c.mmp, &mut errors);
    errors
}

fn validate_mmp(m: &MmpConfig, errors: &mut Vec<String>) {
    if !matches!(m.backend_tls.as_str(), "none" | "starttls" | "implicit") {
        errors.push(format!(
            "mmp.backend_tls: '{}' is not one of none, starttls, implicit",
            m.backend_tls
        ));
    }
    match m.login_mode.as_str() {
        "credentials" => {}
        "proxyauth" => {
            if m.proxy_user.is_empty() || m.proxy_password_file.is_empty() {
                errors.push(
                    "mmp.login_mode: proxyauth needs proxy_user and proxy_password_file".into(),
                );
            }
        }
        other => errors.push(format!(
            "mmp.login_mode: '{other}' is not one of credentials, proxyauth"
        )),
    }
    for (name, v) in &m.backends {
        if crate::mmp::split_host_port(v).map(|(_, p)| p.is_some()) != Some(false) {
            errors.push(format!(
                "mmp.backends.\"{name}\": '{v}' must be a host without port (ports go in imap_backends / pop3_backends or imap_port / pop3_port)"
            ));
        }
    }
    for (section, map) in [
        ("imap_backends", &m.imap_backends),
        ("pop3_backends", &m.pop3_backends),
    ] {
        for (name, v) in map {
            if crate::mmp::split_host_port(v).is_none() {
                errors.push(format!(
                    "mmp.{section}.\"{name}\": '{v}' is not host or host:port"
                ));
            }
        }
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

    #[test]
    fn network_trust_keys_are_checked() {
        let c: Config = Figment::new()
            .merge(Toml::string(QUICKSTART))
            .merge(Toml::string(
                "[listener.imap]\nproxy_protocol = true\nproxy_networks = [\"10.0.0.0/33\"]\n\
                 [store]\nlmtp_networks = [\"mta.example\"]\n[limits]\nwrite_timeout = 0\n",
            ))
            .extract()
            .unwrap();
        let e = validate(&c).join("\n");
        assert!(
            e.contains("listener.imap.proxy_networks: '10.0.0.0/33'"),
            "{e}"
        );
        assert!(e.contains("store.lmtp_networks: 'mta.example'"), "{e}");
        assert!(e.contains("limits: write_timeout"), "{e}");
        // Defaults: no balancer trusted, LMTP from loopback and private ranges.
        let d = Config::default();
        assert!(d.listener.values().all(|l| l.proxy_networks.is_empty()));
        assert!(d.store.lmtp_networks.contains(&"10.0.0.0/8".to_string()));
        assert!(d.store.lmtp_networks.contains(&"::1/128".to_string()));
    }
}
