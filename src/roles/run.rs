//! Running the server: one runtime, one `Services`, the listeners of the
//! chosen roles, and a graceful drain on SIGTERM/SIGINT.
//!
//! Under systemd (`systemd/msgd@.service`, `Type=notify`; every message
//! goes to `NOTIFY_SOCKET` and is skipped without it):
//! - `READY=1` is sent once the store (when the role has one), the
//!   directory and the queue are open and every listener is bound and
//!   accepting; `STATUS=` says what the process is doing at each step.
//! - With `WatchdogSec=` (`WATCHDOG_USEC`), a task pings `WATCHDOG=1` every
//!   half period, and only when the runtime answers: a spawned task and a
//!   blocking-pool task both complete within the half period.
//! - SIGHUP (`ExecReload`) reloads: the config file is loaded again, the
//!   TLS certificate and key are read again, and new sessions get the new
//!   snapshot (each accepted connection takes the current one; running
//!   sessions keep theirs). The process-wide parts that can change safely
//!   are updated in place (`apply_live`): the connection limits, the
//!   failed-login limiter, the memory budget (`[limits]`), the
//!   directory's and the credential cache's TTLs; `log.level` through the
//!   handle `logging::init` returned. Keys read once at
//!   start (listeners, data_dir, the store, the directory's back end, ...:
//!   `ops::configcmd::needs_restart`) keep their running values and are
//!   logged as waiting for a restart. A config or certificate that does
//!   not load is logged and the running one stays.
//! - `STOPPING=1` on SIGTERM/SIGINT, before sessions drain.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use super::Role;
use crate::cli::{EXIT_FAILURE, EXIT_OK};
use crate::config::{Config, DirectoryBackend, Loaded, Protocol};
use crate::directory::{embedded, Directory};
use crate::net::{self, Conn, ConnInfo};
use crate::queue::Queue;
use crate::services::Services;
use crate::store::Store;
use crate::tls::Tls;
use sd_notify::NotifyState;

/// `file`: the `--config` file, loaded again on SIGHUP.
pub fn main(loaded: Loaded, roles: Vec<Role>, file: Option<PathBuf>) -> i32 {
    let log_level = match crate::logging::init(&loaded.config.log) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("msgd: {e:#}");
            return crate::cli::EXIT_USAGE;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("msgd")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the runtime");
            return EXIT_FAILURE;
        }
    };
    match rt.block_on(serve(loaded, roles, file, log_level)) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            notify(&[NotifyState::Status(&format!("failed: {e:#}"))]);
            error!(error = %format!("{e:#}"), "msgd stopped");
            eprintln!("msgd: {e:#}");
            EXIT_FAILURE
        }
    }
}

/// Which role serves a listener of this protocol, given the roles running.
/// A store answers IMAP/POP itself; an mmp without a local store proxies.
fn owner(protocol: Protocol, roles: &[Role]) -> Option<Role> {
    let want = match protocol {
        Protocol::Smtp => Role::MtaIn,
        Protocol::Submission | Protocol::Submissions => Role::MtaOut,
        Protocol::Lmtp => Role::Store,
        Protocol::Imap | Protocol::Imaps | Protocol::Pop3 | Protocol::Pop3s => {
            if roles.contains(&Role::Store) {
                Role::Store
            } else {
                Role::Mmp
            }
        }
        Protocol::Http | Protocol::Https => {
            if roles.contains(&Role::Store) {
                Role::Store
            } else {
                Role::Mem
            }
        }
        // The administration console: where the mem role runs.
        Protocol::Console => Role::Mem,
        // The store serves its scripts itself; an mmp without a local
        // store proxies to the user's store.
        Protocol::Managesieve => {
            if roles.contains(&Role::Store) {
                Role::Store
            } else {
                Role::Mmp
            }
        }
    };
    roles.contains(&want).then_some(want)
}

/// The session handler for a protocol served by a role, or why there is none.
type Handler = fn(Conn, ConnInfo, Services) -> futures_box::BoxFuture;

fn handler(protocol: Protocol, role: Role) -> Result<Handler, &'static str> {
    match (role, protocol) {
        (Role::MtaIn, Protocol::Smtp) | (Role::Store, Protocol::Lmtp) => {
            Ok(|c, i, s| Box::pin(crate::smtp::serve(c, i, s)))
        }
        (Role::Store, Protocol::Imap | Protocol::Imaps) => {
            Ok(|c, i, s| Box::pin(crate::imap::serve(c, i, s)))
        }
        (Role::Store, Protocol::Pop3 | Protocol::Pop3s) => {
            Ok(|c, i, s| Box::pin(crate::pop3::serve(c, i, s)))
        }
        (Role::MtaOut, Protocol::Submission | Protocol::Submissions) => {
            Ok(|c, i, s| Box::pin(crate::smtp::serve(c, i, s)))
        }
        (Role::Mmp, Protocol::Imap | Protocol::Imaps) => {
            Ok(|c, i, s| Box::pin(crate::mmp::serve_imap(c, i, s)))
        }
        (Role::Mmp, Protocol::Pop3 | Protocol::Pop3s) => {
            Ok(|c, i, s| Box::pin(crate::mmp::serve_pop3(c, i, s)))
        }
        (Role::Store | Role::Mem, Protocol::Http | Protocol::Https) => {
            Ok(|c, i, s| Box::pin(crate::http::serve(c, i, s)))
        }
        (Role::Mem, Protocol::Console) => Ok(|c, i, s| Box::pin(crate::http::serve(c, i, s))),
        (Role::Store, Protocol::Managesieve) => {
            Ok(|c, i, s| Box::pin(crate::sieve::managesieve::serve(c, i, s)))
        }
        (Role::Mmp, Protocol::Managesieve) => {
            Ok(|c, i, s| Box::pin(crate::mmp::serve_managesieve(c, i, s)))
        }
        _ => Err("no handler"),
    }
}

mod futures_box {
    pub type BoxFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
}

async fn serve(
    loaded: Loaded,
    roles: Vec<Role>,
    file: Option<PathBuf>,
    log_level: crate::logging::Level,
) -> anyhow::Result<()> {
    notify(&[NotifyState::Status(
        "starting: opening the store and the directory",
    )]);
    // SIGHUP is caught from here on: a reload asked for while starting is
    // done once serving, never the default action (terminate).
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("listening for SIGHUP")?;
    let config = Arc::new(loaded.config);
    for key in crate::config::deprecated_keys(&config) {
        warn!(
            key,
            "deprecated configuration key: use the [limits] login failure keys (see etc/msgd.toml)"
        );
    }
    std::fs::create_dir_all(&config.server.data_dir)
        .with_context(|| format!("creating data folder {}", config.server.data_dir.display()))?;
    // Metrics and health first: /health answers 503 while the store opens.
    let role_names: Vec<&str> = roles.iter().map(|r| r.name()).collect();
    let metrics = crate::metrics::install(&role_names.join(","));
    if let Some(h) = &metrics {
        tokio::spawn(crate::metrics::upkeep(h.clone()));
    }
    let admin = crate::admin::Admin::new(roles.contains(&Role::Store));
    crate::admin::spawn(crate::admin::bind(&config)?, admin.clone());
    let tls = Arc::new(Tls::from_config(&config)?);
    let quickstart_account = if config.directory.backend == DirectoryBackend::Embedded {
        first_start(&config)?
    } else {
        None
    };
    let directory = Directory::open(&config)?;
    let store = if roles.contains(&Role::Store) {
        let store = Store::open(&config)?;
        admin.store_opened();
        Some(store)
    } else {
        None
    };
    let queue = if roles.contains(&Role::MtaIn) || roles.contains(&Role::MtaOut) {
        let dir = config.data_path(&config.queue.dir, "queue");
        Some(Queue::open(
            &dir,
            config.queue.clone(),
            &config.server.hostname,
        )?)
    } else {
        None
    };
    let shutdown = CancellationToken::new();
    let (logins, mmp) = Services::shared_parts(&config);
    let resolver = Arc::new(crate::dns::Resolver::from_config(&config)?);
    let hygiene = if roles.contains(&Role::MtaIn) || roles.contains(&Role::MtaOut) {
        Arc::new(crate::hygiene::Hygiene::open(&config, resolver.clone()).context("[hygiene]")?)
    } else {
        Arc::default()
    };
    let services = Services {
        logins,
        hygiene,
        dkim: Arc::default(),
        mmp,
        resolver,
        web: Arc::new(crate::http::Web {
            mem: roles.contains(&Role::Mem),
            metrics,
            ..Default::default()
        }),
        config: config.clone(),
        directory,
        store,
        tls,
        queue: queue.clone(),
        shutdown: shutdown.clone(),
        conns: Default::default(),
        budget: Arc::new(crate::budget::Budget::new(
            config.limits.max_bytes_in_flight,
        )),
    };
    admin.attach(services.clone());
    if services.web.mem {
        // The webmail's keys and store client: a bad key file stops the
        // start rather than every login.
        crate::mem::state(&services).context("webmail (mem role)")?;
    }
    if let Some(store) = &services.store {
        // Operator commands (`msgd backup`, `msgd store stats`, ...) reach
        // this process through its admin socket.
        let sock = crate::ops::control::bind(&config)?;
        let history = Arc::new(crate::ops::stats::History::default());
        tokio::spawn(crate::ops::stats::sample(
            store.clone(),
            history.clone(),
            shutdown.clone(),
        ));
        let ctx = crate::ops::Ctx {
            config: config.clone(),
            store: store.clone(),
            directory: services.directory.clone(),
            online: true,
            history: Some(history),
        };
        // Retention, purge of expunged files, expunged table trimming.
        tokio::spawn(crate::ops::expire::schedule(ctx.clone(), shutdown.clone()));
        // Users marked deleted: their mail, then their entry (issue 15).
        tokio::spawn(crate::provision::purge::schedule(
            ctx.clone(),
            shutdown.clone(),
        ));
        tokio::spawn(crate::ops::control::serve(sock, ctx, shutdown.clone()));
    }
    let queue_runner = match queue {
        Some(q) => {
            // The server lock first: a second server on the same queue
            // folder is refused before anything could be delivered twice.
            let lock = crate::queue::control::lock(q.dir())?;
            tokio::spawn(crate::queue::control::serve(
                q.clone(),
                lock,
                shutdown.clone(),
            ));
            let router = crate::deliver::queue::Router::new(&services);
            Some(tokio::spawn(q.run(router, shutdown.clone())))
        }
        None => None,
    };

    // Bind everything first: a port in use is a start-up error, not a
    // half-running server.
    notify(&[NotifyState::Status("starting: binding the listeners")]);
    let mut bound = Vec::new();
    let mut bound_unix = Vec::new();
    for (name, l) in &config.listener {
        if !l.enabled {
            continue;
        }
        let Some(protocol) = l.protocol(name) else {
            continue;
        };
        let Some(role) = owner(protocol, &roles) else {
            continue;
        };
        let h = match handler(protocol, role) {
            Ok(h) => h,
            Err(why) => {
                warn!(listener = %name, role = %role, "{why}; listener not started");
                continue;
            }
        };
        let Some(listen) = net::Listen::from_config(name, l, &config) else {
            continue;
        };
        if l.proxy_protocol && l.proxy_networks.is_empty() {
            warn!(listener = %name, "proxy_protocol is on but proxy_networks is empty: every TCP connection will be refused");
        }
        if !l.unix.is_empty() {
            let path = config.data_path(&l.unix, "");
            let sock = crate::net_unix::bind(&path)
                .with_context(|| format!("listener.{name}: cannot listen on {}", path.display()))?;
            info!(listener = %name, path = %path.display(), role = %role, "listening");
            bound_unix.push((sock, protocol, h));
        }
        for addr in &l.bind {
            let sock = net::bind(*addr)
                .with_context(|| format!("listener.{name}: cannot listen on {addr}"))?;
            info!(listener = %name, %addr, role = %role, "listening");
            bound.push((sock, listen.clone(), h));
        }
    }
    if bound.is_empty() && bound_unix.is_empty() {
        anyhow::bail!("no listener to run for roles {roles:?}");
    }
    let tracker = TaskTracker::new();
    // The configuration new sessions start with; SIGHUP replaces it.
    let live = Arc::new(RwLock::new(config.clone()));
    let listeners = bound.len() + bound_unix.len();
    let mut accept_loops = Vec::new();
    for (sock, listen, h) in bound {
        accept_loops.push(tokio::spawn(net::serve(
            sock,
            listen,
            services.clone(),
            tracker.clone(),
            with_current_config(live.clone(), h),
        )));
    }
    for (sock, protocol, h) in bound_unix {
        accept_loops.push(tokio::spawn(crate::net_unix::serve(
            sock,
            protocol,
            services.clone(),
            tracker.clone(),
            with_current_config(live.clone(), h),
        )));
    }
    admin.listeners_bound();
    info!(roles = %role_names.join(","), "msgd ready");
    let serving = format!(
        "serving {} on {listeners} listener(s)",
        role_names.join(",")
    );
    notify(&[NotifyState::Ready, NotifyState::Status(&serving)]);
    spawn_watchdog();
    tokio::spawn(reload_on_hangup(
        hangups,
        Reloader {
            file,
            roles: roles.clone(),
            live,
            tls: services.tls.clone(),
            services: services.clone(),
            serving,
            log_level,
        },
        shutdown.clone(),
    ));
    if let Some((address, password)) = quickstart_account {
        print_quickstart(&config, &address, &password);
    }

    wait_for_signal().await;
    info!("shutting down: no new connections; letting sessions finish");
    notify(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: letting sessions finish"),
    ]);
    shutdown.cancel();
    for l in accept_loops {
        let _ = l.await;
    }
    if let Some(q) = queue_runner {
        let _ = q.await;
    }
    tracker.close();
    let grace = Duration::from_secs(config.server.shutdown_grace);
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        warn!(
            remaining = tracker.len(),
            "sessions still open after the grace period; closing them"
        );
    }
    info!("msgd stopped");
    Ok(())
}

/// Wraps a session handler so that each new session gets the current
/// configuration snapshot (the one SIGHUP last installed).
fn with_current_config(
    live: Arc<RwLock<Arc<Config>>>,
    h: Handler,
) -> impl Fn(Conn, ConnInfo, Services) -> futures_box::BoxFuture + Send + Sync + 'static {
    move |c, i, mut s| {
        s.config = live.read().unwrap_or_else(|e| e.into_inner()).clone();
        h(c, i, s)
    }
}

/// Sends state to systemd (nothing without `NOTIFY_SOCKET`).
fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!(error = %e, "cannot notify systemd");
    }
}

/// With `WATCHDOG_USEC` set (systemd's `WatchdogSec=`): pings every half
/// period while the runtime answers. A wedged runtime (every worker
/// blocked, the blocking pool stuck) sends nothing and systemd restarts
/// the service.
fn spawn_watchdog() {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = (period / 2).max(Duration::from_millis(10));
    info!(period_ms = period.as_millis() as u64, "systemd watchdog on");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let probe = async {
                tokio::spawn(async {}).await.is_ok()
                    && tokio::task::spawn_blocking(|| ()).await.is_ok()
            };
            match tokio::time::timeout(every, probe).await {
                Ok(true) => notify(&[NotifyState::Watchdog]),
                _ => warn!("the runtime did not answer the watchdog probe; no ping"),
            }
        }
    });
}

/// What a reload needs.
struct Reloader {
    file: Option<PathBuf>,
    roles: Vec<Role>,
    /// The snapshot new sessions take.
    live: Arc<RwLock<Arc<Config>>>,
    tls: Arc<Tls>,
    /// The process-wide parts a reload updates in place (`apply_live`).
    services: Services,
    /// The STATUS line while serving.
    serving: String,
    /// `log.level`'s handle (`logging::init`).
    log_level: crate::logging::Level,
}

async fn reload_on_hangup(
    mut hup: tokio::signal::unix::Signal,
    r: Reloader,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            got = hup.recv() => if got.is_none() { return },
            _ = shutdown.cancelled() => return,
        }
        let mut states = vec![NotifyState::Reloading];
        if let Ok(now) = NotifyState::monotonic_usec_now() {
            states.push(now);
        }
        states.push(NotifyState::Status("reloading the configuration"));
        notify(&states);
        let r2 = (
            r.file.clone(),
            r.roles.clone(),
            r.live.clone(),
            r.tls.clone(),
        );
        let outcome =
            tokio::task::spawn_blocking(move || reload(r2.0.as_deref(), &r2.1, &r2.2, &r2.3))
                .await
                .unwrap_or(false);
        if outcome {
            let now = r.live.read().unwrap_or_else(|e| e.into_inner()).clone();
            apply_live(&r.services, &now);
            if let Err(e) = r.log_level.set(&now.log.level) {
                // Checked by the loader already; kept as it was if it fails here.
                warn!(error = %format!("{e:#}"), "reload: log.level not changed");
            }
        }
        let status = if outcome {
            r.serving.clone()
        } else {
            format!("{} (last reload failed: see the log)", r.serving)
        };
        notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
    }
}

/// Loads the configuration and the certificate again and installs them
/// for new sessions. False (and the running ones kept) on any error.
fn reload(
    file: Option<&std::path::Path>,
    roles: &[Role],
    live: &RwLock<Arc<Config>>,
    tls: &Tls,
) -> bool {
    let file_name = file
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "built-in defaults".into());
    let loaded = match crate::config::load(file, roles) {
        Ok(l) => l.config,
        Err(errors) => {
            for e in &errors {
                error!(file = %file_name, error = %e, "reload: configuration error");
            }
            warn!("reload refused: the running configuration stays");
            return false;
        }
    };
    let old = live.read().unwrap_or_else(|e| e.into_inner()).clone();
    let changed = crate::ops::configcmd::changed_keys(&old, &loaded);
    let new = match crate::ops::configcmd::keep_start_only(&old, &loaded) {
        Ok(c) => c,
        Err(e) => {
            error!(error = %format!("{e:#}"), "reload refused: the running configuration stays");
            return false;
        }
    };
    match tls.reload(&new) {
        Ok(path) => info!(cert = %path.display(), "reload: TLS certificate read"),
        Err(e) => {
            error!(error = %format!("{e:#}"), "reload refused: the certificate does not load; the running configuration and certificate stay");
            return false;
        }
    }
    let (later, now): (Vec<String>, Vec<String>) = changed
        .into_iter()
        .partition(|k| crate::ops::configcmd::needs_restart(k));
    if !later.is_empty() {
        warn!(keys = %later.join(", "), "reload: these keys are read at start only; they take effect at the next restart");
    }
    *live.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
    info!(file = %file_name, applied = %now.join(", "), "configuration reloaded; new sessions use it");
    true
}

/// Puts the reloaded values that live in process-wide objects (rather than
/// in each session's snapshot) into force: connection limits and write
/// timeout for new connections, the failed-login limiter's numbers (the
/// failures counted so far stay), the memory budget, the directory's, the
/// mmp login cache's and the credential cache's TTLs (`log.level`: the
/// reloader's `logging::Level`). Within the runtime (the budget may spawn
/// a task to take back bytes in use).
fn apply_live(services: &Services, c: &Config) {
    services.conns.set_limits(&c.limits);
    services
        .logins
        .set_limits(crate::loginlimit::Limits::from_config(&c.limits));
    services.budget.set_limit(c.limits.max_bytes_in_flight);
    services
        .directory
        .set_cache_ttl(Duration::from_secs(c.directory.cache_ttl));
    services
        .mmp
        .set_cache_ttl(Duration::from_secs(c.directory.cache_ttl));
    services
        .directory
        .auth()
        .cache
        .set_ttl(Duration::from_secs(c.auth.cache_ttl));
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot listen for SIGTERM");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

/// On first start with an empty embedded directory, create the postmaster
/// of the default domain with a generated password.
fn first_start(config: &Config) -> anyhow::Result<Option<(String, String)>> {
    let path = config.directory_path();
    let data = embedded::load(&path)?;
    if !data.users.is_empty() {
        return Ok(None);
    }
    let address = format!("postmaster@{}", config.server.domain.to_lowercase());
    let password = crate::directory::password::generate();
    embedded::edit(&path, |d| {
        if d.users.is_empty() {
            embedded::add_user(d, &address, &password, None, true)
        } else {
            Ok(())
        }
    })?;
    Ok(Some((address, password)))
}

fn print_quickstart(config: &Config, address: &str, password: &str) {
    let port = |n: &str| {
        config
            .listener
            .get(n)
            .filter(|l| l.enabled)
            .and_then(|l| l.bind.first())
            .map(|a| a.to_string())
            .unwrap_or_else(|| "-".into())
    };
    println!("msgd is running. A first account was created (this is shown once):");
    println!("  address:  {address}");
    println!("  password: {password}");
    println!(
        "  submission {} (STARTTLS)  submissions {} (TLS)",
        port("submission"),
        port("submissions")
    );
    println!(
        "  SMTP {}  IMAP {}  IMAPS {}  POP3 {}  POP3S {}  LMTP {}",
        port("smtp"),
        port("imap"),
        port("imaps"),
        port("pop3"),
        port("pop3s"),
        port("lmtp")
    );
    if port("managesieve") != "-" {
        println!("  ManageSieve {} (STARTTLS)", port("managesieve"));
    }
    if port("console") != "-" {
        let admin = config
            .provision
            .site_admins
            .iter()
            .any(|a| a.eq_ignore_ascii_case(address));
        println!(
            "  administration console: http://{}/admin/{}",
            port("console"),
            if admin {
                " (this account is its site administrator)"
            } else {
                ""
            }
        );
    }
    println!(
        "  data: {}  certificate: {}",
        config.server.data_dir.display(),
        config.server.data_dir.join("tls/cert.pem").display()
    );
    let _ = std::io::Write::flush(&mut std::io::stdout());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_config(path: &std::path::Path, data: &std::path::Path, hostname: &str, extra: &str) {
        std::fs::write(
            path,
            format!(
                "[server]\nhostname = \"{hostname}\"\ndata_dir = \"{}\"\n{extra}",
                data.display()
            ),
        )
        .unwrap();
    }

    #[test]
    fn sighup_reload_installs_the_new_snapshot_and_keeps_keys_read_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("msgd.toml");
        let roles = vec![Role::Store];
        write_config(&file, dir.path(), "before.example", "");
        let start = crate::config::load(Some(&file), &roles).unwrap().config;
        let tls = Tls::from_config(&start).unwrap();
        let live = RwLock::new(Arc::new(start.clone()));

        let data2 = dir.path().join("elsewhere");
        write_config(
            &file,
            &data2,
            "after.example",
            "[imap]\nmax_literal = 12345678\n",
        );
        assert!(reload(Some(&file), &roles, &live, &tls));
        let now = live.read().unwrap().clone();
        assert_eq!(now.server.hostname, "after.example");
        assert_eq!(now.imap.max_literal, 12345678);
        // data_dir is read at start: the running value stays.
        assert_eq!(now.server.data_dir, start.server.data_dir);

        // A broken file: refused, the snapshot stays.
        std::fs::write(&file, "[server]\nno_such_key = 1\n").unwrap();
        assert!(!reload(Some(&file), &roles, &live, &tls));
        assert!(Arc::ptr_eq(&now, &live.read().unwrap()));
    }

    #[test]
    fn each_new_session_takes_the_current_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let services = crate::services::test_services(dir.path(), |_| {});
        let mut next = (*services.config).clone();
        next.server.hostname = "new.example".into();
        let live = Arc::new(RwLock::new(Arc::new(next)));
        // A handler that records the hostname of the snapshot it got.
        static SEEN: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());
        let h: Handler = |_, _, s| {
            *SEEN.lock().unwrap() = s.config.server.hostname.clone();
            Box::pin(async {})
        };
        let wrapped = with_current_config(live.clone(), h);
        let (a, _b) = tokio::io::duplex(64);
        let info = ConnInfo {
            session_id: 1,
            peer: "127.0.0.1:5000".parse().unwrap(),
            via: None,
            local: "127.0.0.1:143".parse().unwrap(),
            protocol: Protocol::Imap,
            tls_mode: crate::config::TlsMode::StartTls,
            tls_active: false,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(wrapped(Box::new(a), info, services.clone()));
        assert_eq!(*SEEN.lock().unwrap(), "new.example");
    }

    #[tokio::test]
    async fn sighup_reload_applies_limits_and_ttls_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("msgd.toml");
        let roles = vec![Role::Store];
        write_config(&file, dir.path(), "h.example", "");
        let start = crate::config::load(Some(&file), &roles).unwrap().config;
        let services = crate::services::test_services(dir.path(), |c| *c = start.clone());
        let tls = Tls::from_config(&start).unwrap();
        let live = RwLock::new(Arc::new(start.clone()));
        let start_limits = Arc::new(start.limits.clone());
        let lease = services.budget.try_take(4096).unwrap();

        write_config(
            &file,
            dir.path(),
            "h.example",
            "[limits]\nmax_connections_per_ip = 1\nmax_connections = 7\nwrite_timeout = 9\n\
             max_login_failures_per_client = 2\nlogin_failure_window = 60\n\
             max_bytes_in_flight = 104857600\nmax_bad_commands = 3\n\
             [directory]\ncache_ttl = 5\n[auth]\ncache_ttl = 0\n[log]\nlevel = \"debug\"\n",
        );
        assert!(reload(Some(&file), &roles, &live, &tls));
        let now = live.read().unwrap().clone();
        // Read by each new session from its snapshot.
        assert_eq!(now.limits.max_bad_commands, 3);
        assert_eq!(now.log.level, "debug");
        apply_live(&services, &now);
        // The accept loops' limits.
        let l = services.conns.limits_or(&start_limits);
        assert_eq!(
            (l.max_connections, l.max_connections_per_ip, l.write_timeout),
            (7, 1, 9)
        );
        // The failed-login limiter.
        let ll = services.logins.limits();
        assert_eq!(ll.per_client, 2);
        assert_eq!(ll.window, Duration::from_secs(60));
        // The memory budget: the new limit, the lease in use still counted.
        let limit = 100 << 20;
        assert_eq!(services.budget.limit(), limit);
        assert_eq!(services.budget.available(), limit - 4096);
        drop(lease);
        assert_eq!(services.budget.available(), limit);
        assert!(services.budget.try_take(limit + 1).is_none());
    }

    #[test]
    fn managesieve_is_served_by_the_store_else_proxied_by_the_mmp() {
        let p = Protocol::Managesieve;
        assert_eq!(owner(p, &Role::ALL), Some(Role::Store));
        assert_eq!(owner(p, &[Role::Store]), Some(Role::Store));
        assert_eq!(owner(p, &[Role::Mmp]), Some(Role::Mmp));
        assert_eq!(owner(p, &[Role::MtaIn]), None);
        assert!(handler(p, Role::Mmp).is_ok());
        assert!(handler(p, Role::Store).is_ok());
    }
}
