//! The one value every role and session receives: configuration snapshot,
//! directory, store, TLS and the shutdown signal. Cheap to clone; no globals.
//!
//! Invariant: every piece of state shared by the sessions of a process
//! lives here, built once at start (`roles::run`) or per test: the
//! connection table and session counter (`conns`), the byte budget, the
//! failed-login limiter of every login path, the mmp's shared state. Two
//! processes (or two tests) never share any of it, and no module keeps
//! mutable state in a static (`scripts/check-imports.py` checks it). Two
//! exceptions by design, both libraries' process-global set-ups: the
//! `metrics` facade's recorder (`crate::metrics::install`, once at start;
//! its rendering handle lives here, in `web.metrics`) and tracing's
//! subscriber (`logging::init`; the `log.level` handle it returns is the
//! reloader's).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::budget::Budget;
use crate::config::Config;
use crate::directory::Directory;
use crate::dns::Resolver;
use crate::loginlimit::LoginLimiter;
use crate::net::ConnTable;
use crate::queue::Queue;
use crate::store::Store;
use crate::tls::Tls;

#[derive(Clone)]
pub struct Services {
    /// The snapshot a session started with (a SIGHUP reload gives new
    /// sessions a new one: `roles::run`); a session keeps its own.
    pub config: Arc<Config>,
    /// Also the password side of every login: the credential cache and
    /// the hashing pool (`Directory::auth`, `crate::authcache`).
    pub directory: Arc<Directory>,
    /// Present when this process runs the store role (all-in-one included).
    pub store: Option<Store>,
    pub tls: Arc<Tls>,
    /// Present when this process runs an MTA role (mta-in, mta-out).
    pub queue: Option<Arc<Queue>>,
    /// Cancelled on SIGTERM/SIGINT: listeners stop accepting, sessions
    /// finish their current transaction and say goodbye.
    pub shutdown: CancellationToken,
    /// Open connections of the whole process, for the connection limits
    /// (`limits.max_connections`, `limits.max_connections_per_ip`), and the
    /// counter that numbers its sessions.
    pub conns: Arc<ConnTable>,
    /// Message bytes held in memory, process-wide (`limits.max_bytes_in_flight`).
    pub budget: Arc<Budget>,
    /// Failed logins per client and per account, shared by every login
    /// path of the process (IMAP, POP3, SMTP AUTH, mmp).
    pub logins: Arc<LoginLimiter>,
    /// The mmp's process-wide state (TLS client setup for the stores).
    pub mmp: Arc<crate::mmp::Shared>,
    /// The one DNS resolver of the process (`[dns]`): MX hosts, stores by
    /// mailHost, the smarthost, the mmp's backends.
    pub resolver: Arc<Resolver>,
    /// HTTP: which routes this process serves and their shared state.
    pub web: Arc<crate::http::Web>,
    /// The MTAs' mail checks (`crate::hygiene`): lists, rate counters,
    /// greylist database, content filter. Empty (all off) elsewhere.
    pub hygiene: Arc<crate::hygiene::Hygiene>,
    /// The DKIM signer of submission and JMAP sends, with its parsed keys:
    /// one per process, not per session (`deliver::dkim::Signers`).
    pub dkim: Arc<crate::deliver::dkim::Signers>,
}

impl crate::net::Accepting for Services {
    fn limits(&self) -> &crate::config::LimitsConfig {
        &self.config.limits
    }

    fn conns(&self) -> &Arc<ConnTable> {
        &self.conns
    }

    fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    fn tls(&self) -> &Tls {
        &self.tls
    }
}

impl Services {
    /// The process-wide parts built from the config: the login limiter
    /// and the mmp's shared state.
    pub fn shared_parts(config: &Config) -> (Arc<LoginLimiter>, Arc<crate::mmp::Shared>) {
        let logins = Arc::new(LoginLimiter::from_config(&config.limits));
        let mmp = Arc::new(crate::mmp::Shared::from_config(config, logins.clone()));
        (logins, mmp)
    }

    /// The store, for sessions that only run in the store role.
    pub fn store(&self) -> &Store {
        self.store
            .as_ref()
            .expect("store sessions run only where the store role is enabled")
    }
}

/// Services over a temporary data folder, for tests: embedded directory,
/// a store with one partition, a generated certificate, no queue.
#[cfg(test)]
pub fn test_services(dir: &std::path::Path, edit: impl FnOnce(&mut Config)) -> Services {
    let mut c = Config::default();
    c.server.data_dir = dir.to_path_buf();
    c.store.min_free_disk = 0;
    // Failed logins answer at once in unit tests (the growing delay is
    // tested in loginlimit).
    c.limits.login_failure_delay_ms = 0;
    c.store.partition.insert(
        "primary".into(),
        crate::config::PartitionConfig {
            path: "partition/primary".into(),
        },
    );
    edit(&mut c);
    let config = Arc::new(c);
    let (logins, mmp) = Services::shared_parts(&config);
    Services {
        logins,
        mmp,
        resolver: Arc::new(Resolver::from_config(&config).expect("resolver")),
        directory: Directory::open(&config).expect("directory"),
        store: Some(Store::open(&config).expect("store")),
        tls: Arc::new(Tls::from_config(&config).expect("tls")),
        queue: None,
        web: Arc::default(),
        hygiene: Arc::default(),
        dkim: Arc::default(),
        shutdown: CancellationToken::new(),
        conns: Arc::default(),
        budget: Arc::new(Budget::new(config.limits.max_bytes_in_flight)),
        config,
    }
}
