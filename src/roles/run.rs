//! Running the server: one runtime, one `Services`, the listeners of the
//! chosen roles, and a graceful drain on SIGTERM/SIGINT.

use std::sync::Arc;
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

pub fn main(loaded: Loaded, roles: Vec<Role>) -> i32 {
    if let Err(e) = crate::logging::init(&loaded.config.log) {
        eprintln!("msgd: {e:#}");
        return crate::cli::EXIT_USAGE;
    }
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
    match rt.block_on(serve(loaded, roles)) {
        Ok(()) => EXIT_OK,
        Err(e) => {
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
        _ => Err("no handler"),
    }
}

mod futures_box {
    pub type BoxFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
}

async fn serve(loaded: Loaded, roles: Vec<Role>) -> anyhow::Result<()> {
    let config = Arc::new(loaded.config);
    for key in crate::config::deprecated_keys(&config) {
        warn!(
            key,
            "deprecated configuration key: use the [limits] login failure keys (see etc/msgd.toml)"
        );
    }
    std::fs::create_dir_all(&config.server.data_dir)
        .with_context(|| format!("creating data folder {}", config.server.data_dir.display()))?;
    let tls = Arc::new(Tls::from_config(&config)?);
    let quickstart_account = if config.directory.backend == DirectoryBackend::Embedded {
        first_start(&config)?
    } else {
        None
    };
    let directory = Directory::open(&config)?;
    let store = if roles.contains(&Role::Store) {
        Some(Store::open(&config)?)
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
    let services = Services {
        logins,
        mmp,
        resolver,
        web: Arc::new(crate::http::Web {
            mem: roles.contains(&Role::Mem),
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
    if services.web.mem {
        // The webmail's keys and store client: a bad key file stops the
        // start rather than every login.
        crate::mem::state(&services).context("webmail (mem role)")?;
    }
    if let Some(store) = &services.store {
        // Operator commands (`msgd backup`, `msgd store stats`, ...) reach
        // this process through its admin socket.
        let sock = crate::ops::control::bind(&config)?;
        let ctx = crate::ops::Ctx {
            config: config.clone(),
            store: store.clone(),
            directory: services.directory.clone(),
            online: true,
        };
        // Retention, purge of expunged files, expunged table trimming.
        tokio::spawn(crate::ops::expire::schedule(ctx.clone(), shutdown.clone()));
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
    let mut accept_loops = Vec::new();
    for (sock, listen, h) in bound {
        accept_loops.push(tokio::spawn(net::serve(
            sock,
            listen,
            services.clone(),
            tracker.clone(),
            h,
        )));
    }
    for (sock, protocol, h) in bound_unix {
        accept_loops.push(tokio::spawn(crate::net_unix::serve(
            sock,
            protocol,
            services.clone(),
            tracker.clone(),
            h,
        )));
    }
    let role_names: Vec<&str> = roles.iter().map(|r| r.name()).collect();
    info!(roles = %role_names.join(","), "msgd ready");
    if let Some((address, password)) = quickstart_account {
        print_quickstart(&config, &address, &password);
    }

    wait_for_signal().await;
    info!("shutting down: no new connections; letting sessions finish");
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
    println!(
        "  data: {}  certificate: {}",
        config.server.data_dir.display(),
        config.server.data_dir.join("tls/cert.pem").display()
    );
    let _ = std::io::Write::flush(&mut std::io::stdout());
}
