//! `msgd stress`: a consistency stress tester for IMAP servers (msgd's own,
//! or any other on loopback, e.g. Dovecot for comparison).
//!
//! N concurrent clients share a few mailboxes per user and send random
//! APPEND, FETCH, STORE, COPY, MOVE, EXPUNGE, CLOSE, IDLE, SEARCH and NOOP
//! commands. Each keeps a model of its selected mailbox from the server's
//! untagged responses; all share a ledger of every message identity (a
//! token in Message-ID and Subject; the body follows from the token). The
//! run fails on any violation of:
//! - UIDs strictly ascending, never reused; UIDVALIDITY stable;
//! - EXISTS/EXPUNGE bookkeeping: after NOOP, the model equals a fresh
//!   `UID SEARCH ALL` and `FETCH 1:* (UID)`;
//! - no EXPUNGE response during FETCH/STORE/SEARCH by sequence number;
//! - STORE reports the flags it set (asked with UID FETCH when a server
//!   reports only changed flags); \Deleted, once stored, stays;
//! - EXPUNGE/CLOSE remove every message whose \Deleted was stored before;
//!   MOVE expunges what COPYUID says it moved;
//! - nothing is expunged that no client asked to delete (directly, or on
//!   the source of a copy: flags travel with COPY);
//! - a command that got no data or NO for a message (RFC 2180: expunged
//!   by another session) is followed, after the next NOOP, by its EXPUNGE;
//! - fetched bodies equal what was appended, RFC822.SIZE matches;
//!   UIDNEXT and HIGHESTMODSEQ never go back;
//! - at the end, every acknowledged message (APPENDUID, COPYUID) is present
//!   unless some client asked for its deletion, and no expunged one is back.
//!
//! A session may act on its own view of the mailbox until it syncs: checks
//! about other sessions' changes apply to what was acknowledged before this
//! session's last NOOP or SELECT was sent (a run clock orders the two).
//!
//! It prints commands per second and p50/p99 latency per command, and with
//! `--idle-conns N` holds N logged-in idle connections (for memory
//! measurements). Loopback targets only; every run is bounded in time.

mod conn;
mod message;
mod model;
pub(crate) mod wire;
mod worker;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use rand::Rng;

use conn::{Conn, Target, TlsMode};
use model::Ledger;
use wire::{Kind, Resp, RespCode};

/// Exit status: a violation was found (or the run could not be checked).
pub const EXIT_VIOLATION: i32 = 1;

#[derive(Args, Debug, Clone)]
pub struct StressArgs {
    /// Server address (must be a loopback address).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// IMAP port (IMAPS with --tls).
    #[arg(long)]
    port: u16,
    /// Accounts as USER:PASSWORD, comma-separated; clients are spread over
    /// them, several per account.
    #[arg(long, value_delimiter = ',', required = true)]
    users: Vec<String>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Seconds to run (then every client finishes its command, verifies
    /// and logs out, and the final check runs).
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Implicit TLS (IMAPS).
    #[arg(long, conflicts_with = "starttls")]
    tls: bool,
    /// STARTTLS on a plain IMAP port.
    #[arg(long)]
    starttls: bool,
    /// PEM certificate(s) to trust for TLS (msgd: <data_dir>/tls/cert.pem);
    /// without it any certificate is accepted.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Shared mailboxes per user: INBOX plus stress-1... (at least 2).
    #[arg(long, default_value_t = 3)]
    mailboxes: usize,
    /// `stress`: random commands on shared mailboxes; `sessions`: the
    /// benchmark's login, select, fetch headers, fetch bodies, store,
    /// append, expunge, logout.
    #[arg(long, value_enum, default_value_t = Workload::Stress)]
    workload: Workload,
    /// Instead of a workload: open this many connections, LOGIN + SELECT
    /// INBOX on each, hold them idle for --duration seconds, log out.
    #[arg(long)]
    idle_conns: Option<usize>,
    /// Seconds to wait for any one response.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Random seed (printed; the same seed replays the same choices).
    #[arg(long)]
    seed: Option<u64>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    Stress,
    Sessions,
}

/// A broken rule, with the client's last exchanges.
pub struct Violation {
    pub client: usize,
    pub user: String,
    pub mailbox: Option<String>,
    pub text: String,
    pub transcript: Vec<String>,
}

#[derive(Default)]
pub struct Counters {
    pub ops: AtomicU64,
    pub appended: AtomicU64,
    pub copied: AtomicU64,
    pub moved: AtomicU64,
    pub expunges_seen: AtomicU64,
    pub verifies: AtomicU64,
    pub idle_updates: AtomicU64,
    pub fetch_no: AtomicU64,
    pub store_no: AtomicU64,
    pub store_unreported: AtomicU64,
    pub copy_no: AtomicU64,
    pub missing_answers: AtomicU64,
}

/// What every client shares.
pub struct Shared {
    pub run_id: String,
    pub users: Vec<(String, String)>,
    pub mailboxes: Vec<String>,
    pub workload: Workload,
    pub ledger: Mutex<Ledger>,
    pub stop: AtomicBool,
    pub deadline: Instant,
    /// Orders acknowledgements against later syncs (see `model::Entry`).
    clock: AtomicU64,
    violations: Mutex<Vec<Violation>>,
    /// Expunges nobody asked for, as far as the ledger knew then: judged
    /// again at the end, when every COPYUID has been recorded.
    suspects: Mutex<Vec<(usize, String, u32, Violation)>>,
    pub counters: Counters,
}

impl Shared {
    pub fn violation(&self, v: Violation) {
        self.stop.store(true, Ordering::Relaxed);
        self.violations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(v);
    }

    pub fn suspect(&self, user: usize, mailbox: &str, uid: u32, v: Violation) {
        self.suspects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((user, mailbox.to_string(), uid, v));
    }

    /// Turns the suspects that are still unexplained into violations.
    fn judge_suspects(&self) {
        let suspects =
            std::mem::take(&mut *self.suspects.lock().unwrap_or_else(|e| e.into_inner()));
        for (user, mailbox, uid, v) in suspects {
            let explained = self
                .ledger
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .may_be_gone(user, &mailbox, uid);
            if !explained {
                self.violation(v);
            }
        }
    }

    pub fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// `msgd stress ...`: returns the exit status.
pub fn main(args: StressArgs) -> i32 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("msgd stress: {e}");
            return EXIT_VIOLATION;
        }
    };
    rt.block_on(run(args))
}

fn usage(msg: &str) -> i32 {
    eprintln!("msgd stress: {msg}");
    crate::cli::EXIT_USAGE
}

async fn run(args: StressArgs) -> i32 {
    let addr: SocketAddr = match (args.host.as_str(), args.port).to_socket_addrs() {
        Ok(mut a) => match a.next() {
            Some(a) => a,
            None => return usage(&format!("{} does not resolve", args.host)),
        },
        Err(e) => return usage(&format!("{}: {e}", args.host)),
    };
    if !addr.ip().is_loopback() {
        return usage(&format!(
            "{} is not a loopback address: the stress tester only targets this machine",
            addr.ip()
        ));
    }
    let mut users = Vec::new();
    for u in &args.users {
        match u.split_once(':') {
            Some((n, p)) if !n.is_empty() && !p.is_empty() => {
                users.push((n.to_string(), p.to_string()))
            }
            _ => return usage(&format!("--users takes USER:PASSWORD, got '{u}'")),
        }
    }
    if args.clients == 0 || args.mailboxes < 2 || args.duration == 0 {
        return usage("--clients and --duration must be positive, --mailboxes at least 2");
    }
    let tls_mode = match (args.tls, args.starttls) {
        (true, _) => TlsMode::Implicit,
        (_, true) => TlsMode::StartTls,
        _ => TlsMode::Plain,
    };
    let tls_config = if tls_mode == TlsMode::Plain {
        None
    } else {
        match conn::tls_config(args.ca.as_deref()) {
            Ok(c) => Some(c),
            Err(e) => return usage(&format!("{e:#}")),
        }
    };
    let target = Target {
        addr,
        tls: tls_mode,
        tls_config,
        timeout: Duration::from_secs(args.timeout.max(1)),
    };
    if let Some(n) = args.idle_conns {
        return idle_connections(&target, &users, n, args.duration).await;
    }
    let seed = args.seed.unwrap_or_else(|| rand::thread_rng().gen());
    // A run id in tokens: distinct per run, alphanumeric.
    let run_id = format!("r{:x}", seed & 0xffff_ffff);
    let mut mailboxes = vec!["INBOX".to_string()];
    for i in 1..args.mailboxes {
        mailboxes.push(format!("stress-{i}"));
    }
    println!(
        "msgd stress: {} clients on {} account(s), {} mailboxes each, {} s, {} ({:?}), workload {:?}, seed {seed}",
        args.clients,
        users.len(),
        mailboxes.len(),
        args.duration,
        addr,
        tls_mode,
        args.workload
    );
    let shared = Arc::new(Shared {
        run_id,
        users: users.clone(),
        mailboxes,
        workload: args.workload,
        ledger: Mutex::new(Ledger::default()),
        stop: AtomicBool::new(false),
        deadline: Instant::now() + Duration::from_secs(args.duration),
        clock: AtomicU64::new(0),
        violations: Mutex::new(Vec::new()),
        suspects: Mutex::new(Vec::new()),
        counters: Counters::default(),
    });
    // Set up mailboxes and record what is already there.
    for (u, (name, _)) in users.iter().enumerate() {
        if let Err(e) = snapshot(&target, &shared, u, false).await {
            eprintln!("msgd stress: setup for {name} failed: {e}");
            return EXIT_VIOLATION;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    // The ledger's deadline counts from now, after setup.
    let shared = Arc::new(Shared {
        deadline,
        ..Arc::try_unwrap(shared).unwrap_or_else(|_| unreachable!("no clients yet"))
    });
    let started = Instant::now();
    let mut tasks = Vec::new();
    for id in 0..args.clients {
        let w = worker::Worker::new(id, shared.clone(), target.clone(), seed);
        tasks.push(tokio::spawn(w.run()));
    }
    // Progress once a second on stderr, so a long run shows life.
    let progress = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let ops = shared.counters.ops.load(Ordering::Relaxed);
                eprintln!("msgd stress: {} operations ({}/s)", ops, (ops - last) / 5);
                last = ops;
            }
        })
    };
    let mut lat: HashMap<&'static str, Vec<u32>> = HashMap::new();
    let mut crashed = 0;
    for t in tasks {
        match t.await {
            Ok((l, _)) => {
                for (k, mut v) in l {
                    lat.entry(k).or_default().append(&mut v);
                }
            }
            Err(e) => {
                crashed += 1;
                eprintln!("msgd stress: a client task failed: {e}");
            }
        }
    }
    progress.abort();
    let elapsed = started.elapsed();
    shared.judge_suspects();
    // The final check: every acknowledged message is accounted for.
    let mut final_msgs = 0;
    if shared
        .violations
        .lock()
        .map(|v| v.is_empty())
        .unwrap_or(false)
    {
        for (u, (name, _)) in users.iter().enumerate() {
            match snapshot(&target, &shared, u, true).await {
                Ok(n) => final_msgs += n,
                Err(e) => shared.violation(Violation {
                    client: usize::MAX,
                    user: name.clone(),
                    mailbox: None,
                    text: format!("final check: {e}"),
                    transcript: vec![],
                }),
            }
        }
    }
    report(&shared, &lat, elapsed, final_msgs);
    let violations = shared.violations.lock().map(|v| v.len()).unwrap_or(1);
    if violations > 0 || crashed > 0 {
        println!(
            "stress: result FAILED: {} violation(s)",
            violations + crashed
        );
        EXIT_VIOLATION
    } else {
        println!("stress: result OK: no violations");
        0
    }
}

/// Before the run (`final_check` false): creates the stress mailboxes and
/// records every message already there. After it: checks that every
/// acknowledged message is present unless deletion was requested, that no
/// observed expunge is undone, and that each UID still holds its message.
/// Returns the number of messages found.
async fn snapshot(
    target: &Target,
    shared: &Shared,
    user: usize,
    final_check: bool,
) -> Result<usize, String> {
    let (name, pass) = &shared.users[user];
    let mut c = Conn::connect(target).await.map_err(|e| format!("{e:#}"))?;
    let done = c
        .command(&format!(
            "LOGIN {} {}",
            conn::quote(name),
            conn::quote(pass)
        ))
        .await
        .map_err(|e| format!("{e:#}"))?;
    if done.status.kind != Kind::Ok {
        return Err(format!("LOGIN {name}: {}", done.status.text));
    }
    let mut total = 0;
    for mb in &shared.mailboxes {
        if !final_check && mb != "INBOX" {
            // Already there from an earlier run is fine.
            c.command(&format!("CREATE {}", conn::quote(mb)))
                .await
                .map_err(|e| format!("{e:#}"))?;
        }
        let done = c
            .command(&format!("SELECT {}", conn::quote(mb)))
            .await
            .map_err(|e| format!("{e:#}"))?;
        if done.status.kind != Kind::Ok {
            return Err(format!("SELECT {mb}: {}", done.status.text));
        }
        let (mut exists, mut validity, mut uidnext) = (0, None, None);
        for r in &done.untagged {
            match r {
                Resp::Exists(n) => exists = *n,
                Resp::Untagged(st) => match st.code {
                    Some(RespCode::UidValidity(v)) => validity = Some(v),
                    Some(RespCode::UidNext(v)) => uidnext = Some(v),
                    _ => {}
                },
                _ => {}
            }
        }
        let validity = validity.ok_or_else(|| format!("SELECT {mb}: no UIDVALIDITY"))?;
        let mut present: BTreeMap<u32, (Option<String>, Vec<String>)> = BTreeMap::new();
        if exists > 0 {
            let done = c
                .command("FETCH 1:* (UID FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
                .await
                .map_err(|e| format!("{e:#}"))?;
            if done.status.kind != Kind::Ok {
                return Err(format!("FETCH in {mb}: {}", done.status.text));
            }
            for r in done.untagged {
                if let Resp::Fetch(f) = r {
                    let uid = f.uid.ok_or_else(|| format!("{mb}: FETCH without UID"))?;
                    let tok = f.header.as_deref().and_then(message::token_of);
                    present.insert(uid, (tok, f.flags.unwrap_or_default()));
                }
            }
            if present.len() as u32 != exists {
                return Err(format!(
                    "{mb}: {exists} messages exist but FETCH 1:* answered for {}",
                    present.len()
                ));
            }
        }
        total += present.len();
        let mut l = shared.ledger.lock().unwrap_or_else(|e| e.into_inner());
        let b = l.mailbox(user, mb);
        b.check_uidvalidity(validity, "final SELECT")?;
        if !final_check {
            for (uid, (tok, flags)) in &present {
                let e = b.msgs.entry(*uid).or_default();
                e.acked = true;
                e.token = tok.clone();
                if flags.iter().any(|f| f.eq_ignore_ascii_case("\\Deleted")) {
                    e.delete_requested = true;
                    e.flag_deleted = true;
                    e.deleted_acked = Some(0);
                }
            }
            b.max_acked = uidnext
                .map(|n| n.saturating_sub(1))
                .unwrap_or_else(|| present.keys().max().copied().unwrap_or(0));
            continue;
        }
        if let Some(next) = uidnext {
            if next <= b.max_acked {
                return Err(format!(
                    "{mb}: UIDNEXT {next} at the end, but UID {} was acknowledged",
                    b.max_acked
                ));
            }
        }
        let entries: Vec<(u32, model::Entry)> =
            b.msgs.iter().map(|(k, v)| (*k, v.clone())).collect();
        let mut problems = Vec::new();
        for (uid, e) in &entries {
            let here = present.get(uid);
            match here {
                None if e.acked && !l.may_be_gone(user, mb, *uid) => problems.push(format!(
                    "UID {uid} (message {}) was acknowledged and never deleted, but is gone",
                    e.token.as_deref().unwrap_or("?")
                )),
                Some(_) if e.expunged => problems.push(format!(
                    "UID {uid} (message {}) was seen expunged, but is back",
                    e.token.as_deref().unwrap_or("?")
                )),
                Some((tok, flags)) => {
                    if e.token.is_some() && *tok != e.token {
                        problems.push(format!("UID {uid} holds {tok:?}, but it was {:?}", e.token));
                    }
                    if e.deleted_acked.is_some()
                        && !flags.iter().any(|f| f.eq_ignore_ascii_case("\\Deleted"))
                    {
                        problems.push(format!("UID {uid} lost its \\Deleted flag: {flags:?}"));
                    }
                }
                None => {}
            }
        }
        let known: std::collections::BTreeSet<u32> = entries.iter().map(|(u, _)| *u).collect();
        for (uid, (tok, _)) in &present {
            if !known.contains(uid) {
                if let Some(t) = tok
                    .as_deref()
                    .filter(|t| message::run_of(t) == shared.run_id)
                {
                    problems.push(format!(
                        "UID {uid} holds message {t} that no APPEND or COPY acknowledged"
                    ));
                }
            }
        }
        if !problems.is_empty() {
            let n = problems.len();
            problems.truncate(10);
            return Err(format!(
                "{mb} of {name}: {n} problem(s) at the end:\n    {}",
                problems.join("\n    ")
            ));
        }
    }
    let _ = c.command("LOGOUT").await;
    Ok(total)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i.min(sorted.len() - 1)]) / 1000.0
}

fn report(
    shared: &Shared,
    lat: &HashMap<&'static str, Vec<u32>>,
    elapsed: Duration,
    final_msgs: usize,
) {
    let secs = elapsed.as_secs_f64().max(0.001);
    println!(
        "{:<12} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "command", "count", "per s", "p50 ms", "p99 ms", "max ms"
    );
    let mut names: Vec<&&str> = lat.keys().collect();
    names.sort();
    let mut total = 0usize;
    for name in names {
        let mut v = lat[*name].clone();
        v.sort_unstable();
        if *name != "CONNECT" {
            total += v.len();
        }
        println!(
            "{:<12} {:>8} {:>9.1} {:>9.2} {:>9.2} {:>9.2}",
            name,
            v.len(),
            v.len() as f64 / secs,
            percentile(&v, 0.50),
            percentile(&v, 0.99),
            percentile(&v, 1.0)
        );
    }
    let c = &shared.counters;
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "stress: {total} commands in {secs:.1} s = {:.0} commands/s; {} operations",
        total as f64 / secs,
        g(&c.ops)
    );
    println!(
        "stress: appended {}, copied {}, moved {}, expunges seen {}, verifications {}, IDLE updates {}, FETCH NO {}, STORE NO {}, STORE unreported {}, COPY/MOVE NO {}, unanswered {}; {} messages at the end",
        g(&c.appended),
        g(&c.copied),
        g(&c.moved),
        g(&c.expunges_seen),
        g(&c.verifies),
        g(&c.idle_updates),
        g(&c.fetch_no),
        g(&c.store_no),
        g(&c.store_unreported),
        g(&c.copy_no),
        g(&c.missing_answers),
        final_msgs
    );
    let v = shared.violations.lock().unwrap_or_else(|e| e.into_inner());
    for (i, v) in v.iter().take(10).enumerate() {
        let who = if v.client == usize::MAX {
            "final check".to_string()
        } else {
            format!("client {}", v.client)
        };
        println!(
            "VIOLATION {}: {who} ({}, mailbox {}): {}",
            i + 1,
            v.user,
            v.mailbox.as_deref().unwrap_or("-"),
            v.text
        );
        if !v.transcript.is_empty() {
            println!("  last exchanges of {who}:");
            for line in &v.transcript {
                println!("    {line}");
            }
        }
    }
}

/// Opens `n` connections (LOGIN + SELECT INBOX each), prints when they are
/// all up, holds them `hold` seconds, then logs them out.
async fn idle_connections(target: &Target, users: &[(String, String)], n: usize, hold: u64) -> i32 {
    raise_nofile_limit();
    let started = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = Vec::new();
    for i in 0..n {
        let (user, pass) = users[i % users.len()].clone();
        let target = target.clone();
        let sem = sem.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            let mut c = Conn::connect(&target).await.map_err(|e| format!("{e:#}"))?;
            let d = c
                .command(&format!(
                    "LOGIN {} {}",
                    conn::quote(&user),
                    conn::quote(&pass)
                ))
                .await
                .map_err(|e| format!("{e:#}"))?;
            if d.status.kind != Kind::Ok {
                return Err(format!("LOGIN {user}: {}", d.status.text));
            }
            let d = c
                .command("SELECT INBOX")
                .await
                .map_err(|e| format!("{e:#}"))?;
            if d.status.kind != Kind::Ok {
                return Err(format!("SELECT: {}", d.status.text));
            }
            // Then IDLE (RFC 2177): the state a mail client waits in.
            let (tag, _) = c.idle_start().await.map_err(|e| format!("IDLE: {e:#}"))?;
            Ok::<(Conn, String), String>((c, tag))
        }));
    }
    let mut conns = Vec::new();
    let mut failed = 0;
    for t in tasks {
        match t.await {
            Ok(Ok(c)) => conns.push(c),
            Ok(Err(e)) => {
                failed += 1;
                if failed <= 5 {
                    eprintln!("msgd stress: idle connection failed: {e}");
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("msgd stress: {e}");
            }
        }
    }
    println!(
        "idle: {} connections logged in, selected and in IDLE in {:.1} s ({failed} failed); holding {hold} s",
        conns.len(),
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(hold)).await;
    let mut closed = 0;
    for (mut c, tag) in conns {
        let done = async {
            c.send(b"DONE\r\n", "DONE").await?;
            c.finish(&tag, Vec::new()).await?;
            c.command("LOGOUT").await
        };
        if done.await.is_ok() {
            closed += 1;
        }
    }
    println!("idle: {closed} connections logged out");
    if failed > 0 {
        EXIT_VIOLATION
    } else {
        0
    }
}

/// Many idle connections need many descriptors: raise the soft limit to
/// the hard one.
fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
