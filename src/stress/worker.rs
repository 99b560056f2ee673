//! One stress client: a loop of random commands on its user's shared
//! mailboxes, every response checked against its model and the shared
//! ledger (see `model`). A violation ends the client and the run.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::conn::{quote, Conn, Target};
use super::message;
use super::model::{Keywords, MailboxModel};
use super::wire::{seq_set, FetchData, Kind, Resp, RespCode, StatusLine};
use super::{Shared, Violation, Workload};

/// Per-command latencies in microseconds.
pub type Latencies = HashMap<&'static str, Vec<u32>>;

/// How a worker stopped: Err is a violation (already recorded).
pub type Outcome = Result<(), ()>;

/// What the command in flight allows and what its responses should show.
#[derive(Default)]
struct Ctx {
    /// FETCH, STORE or SEARCH by sequence number: RFC 3501 7.4.1 forbids
    /// EXPUNGE responses while they run.
    no_expunge: bool,
    /// Compare the next SEARCH result with the model's UIDs.
    search_uid_all: bool,
    /// Compare the next SEARCH result with 1..=EXISTS.
    search_seq_all: bool,
    search: Option<Vec<u32>>,
    /// FETCH responses with the UID they were about (when known).
    fetched: Vec<(Option<u32>, FetchData)>,
    copyuid: Option<(u32, Vec<u32>, Vec<u32>)>,
    /// UIDs whose EXPUNGE arrived during this command.
    expunged: Vec<u32>,
    logout: bool,
}

struct Selected {
    mailbox: String,
    model: MailboxModel,
}

pub struct Worker {
    id: usize,
    user: usize,
    rng: StdRng,
    shared: Arc<Shared>,
    target: Target,
    conn: Option<Conn>,
    sel: Option<Selected>,
    pub lat: Latencies,
    appended: u64,
    /// UIDs a command asked about that got no answer (concurrently
    /// expunged, RFC 2180 4): after the next NOOP they must be gone.
    /// Groups of UIDs of which at least one must be gone (a NO only says
    /// that some of the messages were expunged).
    should_be_gone: Vec<Vec<u32>>,
    /// A keyword only this client sets or clears: STORE must report it.
    keyword: String,
    /// The run clock's tick when this session's last NOOP or SELECT was
    /// sent: changes acknowledged before it must show in what it reports.
    synced: u64,
}

type Step = Result<(), String>;

impl Worker {
    pub fn new(id: usize, shared: Arc<Shared>, target: Target, seed: u64) -> Worker {
        let user = id % shared.users.len();
        Worker {
            id,
            user,
            rng: StdRng::seed_from_u64(seed ^ (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            shared,
            target,
            conn: None,
            sel: None,
            lat: Latencies::new(),
            appended: 0,
            should_be_gone: Vec::new(),
            keyword: format!("$StressK{id}"),
            synced: 0,
        }
    }

    /// Runs until the deadline or a violation anywhere.
    pub async fn run(mut self) -> (Latencies, Outcome) {
        let r = match self.shared.workload {
            Workload::Stress => self.stress_loop().await,
            Workload::Sessions => self.session_loop().await,
        };
        let outcome = match r {
            Ok(()) => Ok(()),
            Err(text) => {
                self.violation(text);
                Err(())
            }
        };
        (self.lat, outcome)
    }

    fn violation(&mut self, text: String) {
        let transcript = self
            .conn
            .as_ref()
            .map(|c| c.transcript())
            .unwrap_or_default();
        let v = Violation {
            client: self.id,
            user: self.shared.users[self.user].0.clone(),
            mailbox: self.sel.as_ref().map(|s| s.mailbox.clone()),
            text,
            transcript,
        };
        self.shared.violation(v);
    }

    fn suspect(&self, mailbox: &str, uid: u32, text: String) {
        let v = Violation {
            client: self.id,
            user: self.shared.users[self.user].0.clone(),
            mailbox: Some(mailbox.to_string()),
            text,
            transcript: self
                .conn
                .as_ref()
                .map(|c| c.transcript())
                .unwrap_or_default(),
        };
        self.shared.suspect(self.user, mailbox, uid, v);
    }

    fn stopping(&self) -> bool {
        self.shared.stop.load(Ordering::Relaxed) || Instant::now() >= self.shared.deadline
    }

    fn mailbox(&self) -> &str {
        self.sel
            .as_ref()
            .map(|s| s.mailbox.as_str())
            .unwrap_or("INBOX")
    }

    fn model(&self) -> Option<&MailboxModel> {
        self.sel.as_ref().map(|s| &s.model)
    }

    // ------------------------------------------------------------------
    // connection and commands

    async fn connect_login(&mut self) -> Step {
        let t0 = Instant::now();
        let conn = Conn::connect(&self.target)
            .await
            .map_err(|e| format!("connect: {e:#}"))?;
        self.record("CONNECT", t0);
        self.conn = Some(conn);
        self.sel = None;
        let (user, pass) = self.shared.users[self.user].clone();
        let st = self
            .cmd(
                "LOGIN",
                format!("LOGIN {} {}", quote(&user), quote(&pass)),
                &mut Ctx::default(),
            )
            .await?;
        if st.kind != Kind::Ok {
            return Err(format!("LOGIN {user} failed: {:?} {}", st.kind, st.text));
        }
        // The CAPABILITY after login may differ (RFC 3501 6.2.3).
        if let Some(RespCode::Capability(c)) = st.code {
            if let Some(conn) = self.conn.as_mut() {
                conn.caps = c;
            }
        }
        Ok(())
    }

    fn has_cap(&self, cap: &str) -> bool {
        self.conn.as_ref().is_some_and(|c| c.has_cap(cap))
    }

    fn record(&mut self, name: &'static str, since: Instant) {
        let us = since.elapsed().as_micros().min(u32::MAX as u128) as u32;
        self.lat.entry(name).or_default().push(us);
    }

    /// Sends one command; checks every response on the way; BAD is a
    /// violation (the stress client only sends valid commands).
    async fn cmd(
        &mut self,
        name: &'static str,
        text: String,
        ctx: &mut Ctx,
    ) -> Result<StatusLine, String> {
        let conn = self.conn.as_mut().ok_or("not connected")?;
        let t0 = Instant::now();
        let done = conn
            .command(&text)
            .await
            .map_err(|e| format!("{name}: {e:#}"))?;
        self.record(name, t0);
        self.finish(name, done.untagged, done.status, ctx)
    }

    fn finish(
        &mut self,
        name: &str,
        untagged: Vec<Resp>,
        status: StatusLine,
        ctx: &mut Ctx,
    ) -> Result<StatusLine, String> {
        for r in untagged {
            self.process(r, ctx)?;
        }
        if status.kind == Kind::Bad {
            return Err(format!("{name} got BAD: {}", status.text));
        }
        Ok(status)
    }

    /// Applies one untagged response to the model and the ledger.
    fn process(&mut self, r: Resp, ctx: &mut Ctx) -> Step {
        let shared = self.shared.clone();
        let user = self.user;
        match r {
            Resp::Exists(n) => {
                if let Some(s) = self.sel.as_mut() {
                    s.model.exists(n)?;
                }
            }
            Resp::Expunge(n) => {
                if ctx.no_expunge {
                    return Err(format!(
                        "* {n} EXPUNGE sent during FETCH/STORE/SEARCH by sequence number (RFC 3501 7.4.1)"
                    ));
                }
                let Some(s) = self.sel.as_mut() else {
                    return Err(format!("* {n} EXPUNGE with no mailbox selected"));
                };
                if let Some(uid) = s.model.expunge(n)? {
                    shared
                        .counters
                        .expunges_seen
                        .fetch_add(1, Ordering::Relaxed);
                    ctx.expunged.push(uid);
                    let mailbox = s.mailbox.clone();
                    let unexplained = {
                        let mut l = shared.ledger.lock().unwrap_or_else(|e| e.into_inner());
                        l.mailbox(user, &mailbox).expunged(uid).err()
                    };
                    if let Some(text) = unexplained {
                        // A copy of a \Deleted message is \Deleted too, but
                        // the copier may learn its UID (COPYUID) after this:
                        // judged at the end of the run.
                        self.suspect(&mailbox, uid, text);
                    }
                }
            }
            Resp::Fetch(f) => {
                let Some(s) = self.sel.as_mut() else {
                    return Err("FETCH response with no mailbox selected".into());
                };
                let uid = match f.uid {
                    Some(u) => {
                        s.model.fetch_uid(f.seq, u)?;
                        Some(u)
                    }
                    None => {
                        if f.seq == 0 || f.seq > s.model.len() {
                            return Err(format!(
                                "* {} FETCH, but the mailbox has {} messages",
                                f.seq,
                                s.model.len()
                            ));
                        }
                        s.model.uid(f.seq)
                    }
                };
                if let Some(flags) = &f.flags {
                    s.model.keywords.check_fetch(flags)?;
                }
                if let Some(uid) = uid {
                    check_fetch(&shared, user, &s.mailbox, uid, &f, self.synced)?;
                }
                ctx.fetched.push((uid, f));
            }
            Resp::Search(v) => {
                if ctx.search_uid_all {
                    if let Some(s) = self.sel.as_mut() {
                        s.model.check_uid_list(&v)?;
                    }
                }
                if ctx.search_seq_all {
                    let len = self.model().map(|m| m.len()).unwrap_or(0);
                    let want: Vec<u32> = (1..=len).collect();
                    if v != want {
                        return Err(format!(
                            "SEARCH ALL returned {v:?}, but the mailbox has {len} messages"
                        ));
                    }
                }
                if !ctx.search_uid_all {
                    let len = self.model().map(|m| m.len()).unwrap_or(0);
                    if ctx.no_expunge && v.iter().any(|&n| n == 0 || n > len) {
                        return Err(format!("SEARCH returned {v:?}, beyond {len} messages"));
                    }
                }
                ctx.search = Some(v);
            }
            Resp::Untagged(st) => {
                if st.kind == Kind::Bad {
                    return Err(format!("untagged BAD: {}", st.text));
                }
                match st.code {
                    Some(RespCode::UidValidity(v)) => {
                        if let Some(s) = self.sel.as_ref() {
                            let mut l = shared.ledger.lock().unwrap_or_else(|e| e.into_inner());
                            l.mailbox(user, &s.mailbox)
                                .check_uidvalidity(v, "untagged OK")?;
                        }
                    }
                    Some(RespCode::CopyUid { validity, src, dst }) => {
                        ctx.copyuid = Some((validity, src, dst))
                    }
                    Some(RespCode::Other(code)) => {
                        if let Some(s) = self.sel.as_mut() {
                            s.model.keywords.response_code(&code)?;
                        }
                    }
                    _ => {}
                }
            }
            Resp::Bye(text) => {
                if !ctx.logout {
                    return Err(format!("unexpected * BYE {text}"));
                }
            }
            Resp::Continue => return Err("unexpected continuation request".into()),
            Resp::Tagged { tag, .. } => return Err(format!("stray completion for tag {tag}")),
            Resp::Other("FLAGS") => {
                if let Some(s) = self.sel.as_mut() {
                    s.model.keywords.flags_response();
                }
            }
            Resp::Recent(_) | Resp::Capability(_) | Resp::Other(_) => {}
        }
        Ok(())
    }

    // ------------------------------------------------------------------
    // workloads

    async fn stress_loop(&mut self) -> Step {
        self.connect_login().await?;
        let first = self.pick_mailbox();
        self.select(&first).await?;
        while !self.stopping() {
            self.one_op().await?;
            self.fill_uids().await?;
            self.shared.counters.ops.fetch_add(1, Ordering::Relaxed);
        }
        self.verify().await?;
        self.logout().await
    }

    /// The benchmark's session: login, select, fetch headers, fetch
    /// bodies, store flags, append, expunge, logout.
    async fn session_loop(&mut self) -> Step {
        while !self.stopping() {
            self.connect_login().await?;
            let mb = self.pick_mailbox();
            self.select(&mb).await?;
            let len = self.model().map(|m| m.len()).unwrap_or(0);
            if len > 0 {
                let lo = len.saturating_sub(19).max(1);
                self.fetch_items(
                    &(lo..=len).collect::<Vec<_>>(),
                    false,
                    "UID FLAGS RFC822.SIZE BODY.PEEK[HEADER]",
                    "FETCH",
                )
                .await?;
                let picks = self.pick_seqs(3);
                self.fetch_items(&picks, false, "UID RFC822.SIZE BODY.PEEK[]", "FETCH")
                    .await?;
                let picks = self.pick_seqs(5);
                self.store(&picks, false, "+FLAGS", "(\\Seen)", Expect::Report(None))
                    .await?;
            }
            self.append().await?;
            self.fill_uids().await?;
            // Keep the mailbox from growing: delete the oldest few.
            let len = self.model().map(|m| m.len()).unwrap_or(0);
            if len > 40 {
                let seqs: Vec<u32> = (1..=2).collect();
                self.store(&seqs, false, "+FLAGS", "(\\Deleted)", Expect::Deleted)
                    .await?;
                self.expunge(None).await?;
            }
            self.logout().await?;
            self.shared.counters.ops.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn pick_mailbox(&mut self) -> String {
        self.shared
            .mailboxes
            .choose(&mut self.rng)
            .cloned()
            .unwrap_or_else(|| "INBOX".into())
    }

    /// Up to `n` distinct random sequence numbers of known messages.
    fn pick_seqs(&mut self, n: usize) -> Vec<u32> {
        if self.model().is_none_or(|m| m.is_empty()) {
            return vec![];
        }
        let len = self.model().map(|m| m.len()).unwrap_or(0);
        let k = self.rng.gen_range(1..=n.max(1)).min(len as usize);
        let mut all: Vec<u32> = (1..=len).collect();
        all.shuffle(&mut self.rng);
        all.truncate(k);
        all.sort_unstable();
        all
    }

    async fn one_op(&mut self) -> Step {
        let len = self.model().map(|m| m.len()).unwrap_or(0);
        // Keep the shared mailboxes around 40-80 messages.
        let del = if len > 80 {
            30
        } else if len > 40 {
            12
        } else {
            3
        };
        let append = if len < 20 { 30 } else { 14 };
        let weights: [(u32, u32); 12] = [
            (0, append),      // APPEND
            (1, 10),          // FETCH flags
            (2, 8),           // FETCH headers
            (3, 6),           // FETCH bodies
            (4, 12),          // STORE
            (5, del),         // STORE \Deleted
            (6, del / 2 + 2), // EXPUNGE / UID EXPUNGE
            (7, 5),           // COPY
            (8, 4),           // MOVE
            (9, 3),           // IDLE
            (10, 8),          // NOOP + verify, SEARCH
            (11, 2),          // switch mailbox
        ];
        let total: u32 = weights.iter().map(|w| w.1).sum();
        let mut x = self.rng.gen_range(0..total);
        let mut op = 0;
        for (k, w) in weights {
            if x < w {
                op = k;
                break;
            }
            x -= w;
        }
        if len == 0 && (1..=8).contains(&op) {
            op = 0;
        }
        let by_uid = self.rng.gen_bool(0.4);
        match op {
            0 => self.append().await,
            1 => {
                let len = len.max(1);
                let a = self.rng.gen_range(1..=len);
                let b = (a + self.rng.gen_range(0..20)).min(len);
                let seqs: Vec<u32> = (a..=b).collect();
                self.fetch_items(&seqs, by_uid, "UID FLAGS", "FETCH").await
            }
            2 => {
                let seqs = self.pick_seqs(5);
                self.fetch_items(
                    &seqs,
                    by_uid,
                    "UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID SUBJECT)]",
                    "FETCH",
                )
                .await
            }
            3 => {
                let seqs = self.pick_seqs(2);
                let items = if self.rng.gen_bool(0.7) {
                    "UID RFC822.SIZE BODY.PEEK[]"
                } else {
                    "UID FLAGS RFC822.SIZE BODY[]"
                };
                self.fetch_items(&seqs, by_uid, items, "FETCH").await
            }
            4 => {
                let seqs = self.pick_seqs(5);
                let kw = format!("({})", self.keyword);
                let (op, flags, expect) = match self.rng.gen_range(0..6) {
                    0 | 1 => (
                        "+FLAGS",
                        kw.clone(),
                        Expect::Report(Some((self.keyword.clone(), true))),
                    ),
                    2 => (
                        "-FLAGS",
                        kw.clone(),
                        Expect::Report(Some((self.keyword.clone(), false))),
                    ),
                    3 => ("+FLAGS", "(\\Seen)".to_string(), Expect::Report(None)),
                    4 => ("-FLAGS", "(\\Seen)".to_string(), Expect::Report(None)),
                    _ => ("+FLAGS.SILENT", "(\\Flagged)".to_string(), Expect::Silent),
                };
                self.store(&seqs, by_uid, op, &flags, expect).await
            }
            5 => {
                let seqs = self.pick_seqs(3);
                match self.rng.gen_range(0..3) {
                    0 => {
                        self.store(&seqs, by_uid, "+FLAGS", "(\\Deleted)", Expect::Deleted)
                            .await
                    }
                    1 => {
                        self.store(
                            &seqs,
                            by_uid,
                            "+FLAGS.SILENT",
                            "(\\Deleted)",
                            Expect::DeletedSilent,
                        )
                        .await
                    }
                    // FLAGS replacement keeps \Deleted: nobody clears it.
                    _ => {
                        self.store(
                            &seqs,
                            by_uid,
                            "FLAGS",
                            "(\\Deleted \\Seen)",
                            Expect::Deleted,
                        )
                        .await
                    }
                }
            }
            6 => {
                if self.rng.gen_bool(0.3) && self.has_cap("UIDPLUS") {
                    let seqs = self.pick_seqs(6);
                    self.expunge(Some(&seqs)).await
                } else {
                    self.expunge(None).await
                }
            }
            7 => self.copy_move(false, by_uid).await,
            8 => {
                if self.has_cap("MOVE") {
                    self.copy_move(true, by_uid).await
                } else {
                    self.copy_move(false, by_uid).await
                }
            }
            9 => {
                if self.has_cap("IDLE") {
                    self.idle().await
                } else {
                    self.verify().await
                }
            }
            10 => match self.rng.gen_range(0..4) {
                0 | 1 => self.verify().await,
                2 => self.search_seq().await,
                _ => self.search_uid().await,
            },
            _ => {
                let mb = self.pick_mailbox();
                match self.rng.gen_range(0..3) {
                    0 => self.close_reselect().await,
                    1 => {
                        if self.has_cap("UNSELECT") {
                            self.cmd("UNSELECT", "UNSELECT".into(), &mut Ctx::default())
                                .await?;
                            self.sel = None;
                        }
                        self.select(&mb).await
                    }
                    _ => self.select(&mb).await,
                }
            }
        }
    }

    // ------------------------------------------------------------------
    // operations

    async fn select(&mut self, mailbox: &str) -> Step {
        let (floor, modseq_floor) = {
            let mut l = self.shared.ledger.lock().unwrap_or_else(|e| e.into_inner());
            let b = l.mailbox(self.user, mailbox);
            (b.max_acked, b.max_modseq)
        };
        self.should_be_gone.clear();
        // Until the new selection is known, responses must not touch a model.
        self.sel = None;
        let tick = self.shared.tick();
        let conn = self.conn.as_mut().ok_or("not connected")?;
        let t0 = Instant::now();
        let done = conn
            .command(&format!("SELECT {}", quote(mailbox)))
            .await
            .map_err(|e| format!("SELECT: {e:#}"))?;
        self.record("SELECT", t0);
        if done.status.kind != Kind::Ok {
            return Err(format!(
                "SELECT {mailbox} failed: {:?} {}",
                done.status.kind, done.status.text
            ));
        }
        // The first EXISTS is the mailbox as selected (UIDNEXT bounds its
        // UIDs); what follows it in the same reply (EXISTS, EXPUNGE, FETCH
        // of changes made meanwhile) applies to that model in order.
        let (mut validity, mut uidnext, mut modseq) = (None, None, None);
        let mut pristine = false;
        let mut ctx = Ctx::default();
        // FLAGS (and maybe PERMANENTFLAGS) come before the first EXISTS
        // creates the model: what they announce is kept here till then.
        let mut keywords = Keywords::default();
        for r in done.untagged {
            match r {
                Resp::Exists(n) if self.sel.is_none() => {
                    let mut model = MailboxModel::selected(n, None);
                    model.keywords = keywords.clone();
                    self.sel = Some(Selected {
                        mailbox: mailbox.to_string(),
                        model,
                    });
                    pristine = true;
                }
                Resp::Other("FLAGS") if self.sel.is_none() => keywords.flags_response(),
                Resp::Untagged(StatusLine {
                    code: Some(RespCode::Other(ref code)),
                    ..
                }) if self.sel.is_none() => keywords.response_code(code)?,
                Resp::Untagged(ref st)
                    if matches!(
                        st.code,
                        Some(RespCode::UidValidity(_))
                            | Some(RespCode::UidNext(_))
                            | Some(RespCode::HighestModSeq(_))
                    ) =>
                {
                    match st.code {
                        Some(RespCode::HighestModSeq(v)) => modseq = Some(v),
                        Some(RespCode::UidValidity(v)) => validity = Some(v),
                        Some(RespCode::UidNext(v)) => {
                            uidnext = Some(v);
                            if let (true, Some(s)) = (pristine, self.sel.as_mut()) {
                                s.model.set_ceil(v);
                            }
                        }
                        _ => {}
                    }
                }
                r => {
                    if self.sel.is_none() && matches!(r, Resp::Expunge(_) | Resp::Fetch(_)) {
                        return Err(format!("{r:?} during SELECT before * n EXISTS"));
                    }
                    if matches!(r, Resp::Exists(_) | Resp::Expunge(_)) {
                        pristine = false;
                    }
                    self.process(r, &mut ctx)?;
                }
            }
        }
        if self.sel.is_none() {
            return Err("SELECT without * n EXISTS (RFC 3501 6.3.1)".into());
        }
        let validity = validity.ok_or("SELECT without [UIDVALIDITY] (RFC 3501 6.3.1)")?;
        {
            let mut l = self.shared.ledger.lock().unwrap_or_else(|e| e.into_inner());
            l.mailbox(self.user, mailbox)
                .check_uidvalidity(validity, "SELECT")?;
        }
        if let Some(next) = uidnext {
            if next <= floor {
                return Err(format!(
                    "SELECT {mailbox}: UIDNEXT {next}, but UID {floor} was acknowledged before SELECT was sent"
                ));
            }
        }
        if let Some(m) = modseq {
            if m < modseq_floor {
                return Err(format!(
                    "SELECT {mailbox}: HIGHESTMODSEQ {m}, but a SELECT completed before this one was sent reported {modseq_floor} (RFC 7162 3.1.2.1)"
                ));
            }
            let mut l = self.shared.ledger.lock().unwrap_or_else(|e| e.into_inner());
            let b = l.mailbox(self.user, mailbox);
            b.max_modseq = b.max_modseq.max(m);
        }
        self.synced = tick;
        self.fill_uids().await
    }

    /// Learns the UIDs of messages announced by EXISTS.
    async fn fill_uids(&mut self) -> Step {
        for _ in 0..5 {
            let unknown = match self.model() {
                Some(m) => m.unknown(),
                None => return Ok(()),
            };
            if unknown.is_empty() {
                return Ok(());
            }
            let mut ctx = Ctx {
                no_expunge: true,
                ..Ctx::default()
            };
            let set = seq_set(&unknown);
            let st = self
                .cmd("FETCH", format!("FETCH {set} (UID FLAGS)"), &mut ctx)
                .await?;
            if st.kind != Kind::Ok {
                return Err(format!(
                    "FETCH {set} (UID FLAGS) failed: {:?} {}",
                    st.kind, st.text
                ));
            }
            if let Some(m) = self.model() {
                let still: Vec<u32> = m.unknown();
                let asked: BTreeSet<u32> = unknown.iter().copied().collect();
                if let Some(s) = still.iter().find(|s| asked.contains(s)) {
                    return Err(format!(
                        "FETCH {set} (UID FLAGS) gave no UID for message {s} (RFC 3501 6.4.5)"
                    ));
                }
            }
        }
        Ok(())
    }

    /// NOOP, then the model must equal a fresh UID SEARCH ALL and
    /// FETCH 1:* (UID); UIDs that earlier commands found missing must be gone.
    async fn verify(&mut self) -> Step {
        if self.sel.is_none() {
            return Ok(());
        }
        let tick = self.shared.tick();
        let st = self.cmd("NOOP", "NOOP".into(), &mut Ctx::default()).await?;
        if st.kind != Kind::Ok {
            return Err(format!("NOOP failed: {}", st.text));
        }
        self.synced = tick;
        self.fill_uids().await?;
        let mut ctx = Ctx {
            search_uid_all: true,
            ..Ctx::default()
        };
        let st = self
            .cmd("UID SEARCH", "UID SEARCH ALL".into(), &mut ctx)
            .await?;
        if st.kind != Kind::Ok || ctx.search.is_none() {
            return Err(format!(
                "UID SEARCH ALL: {:?} {} without a SEARCH response",
                st.kind, st.text
            ));
        }
        self.fill_uids().await?;
        let before = self.model().map(|m| m.len()).unwrap_or(0);
        if before > 0 {
            let mut ctx = Ctx {
                no_expunge: true,
                ..Ctx::default()
            };
            let st = self
                .cmd("FETCH", "FETCH 1:* (UID)".into(), &mut ctx)
                .await?;
            if st.kind != Kind::Ok {
                return Err(format!("FETCH 1:* (UID) failed: {}", st.text));
            }
            // "1:*" means the messages there when the command started; an
            // EXISTS during it may add more (answered or not).
            let seen: BTreeSet<u32> = ctx.fetched.iter().map(|(_, f)| f.seq).collect();
            if let Some(missing) = (1..=before).find(|n| !seen.contains(n)) {
                return Err(format!(
                    "FETCH 1:* (UID) gave nothing for message {missing} of {before}"
                ));
            }
        }
        let gone = std::mem::take(&mut self.should_be_gone);
        if let Some(m) = self.model() {
            for group in gone {
                if !group.is_empty() && group.iter().all(|&u| m.seq_of(u).is_some()) {
                    return Err(format!(
                        "an earlier command got no data or NO for UID(s) {group:?} (as if expunged), yet after NOOP all are still in the mailbox"
                    ));
                }
            }
        }
        self.shared
            .counters
            .verifies
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn append(&mut self) -> Step {
        let mailbox = if self.rng.gen_bool(0.6) {
            self.mailbox().to_string()
        } else {
            self.pick_mailbox()
        };
        self.appended += 1;
        let token = message::token(&self.shared.run_id, self.id, self.appended);
        let msg = message::build(&token);
        let flags = if self.rng.gen_bool(0.2) { "\\Seen" } else { "" };
        let floor = {
            let mut l = self.shared.ledger.lock().unwrap_or_else(|e| e.into_inner());
            l.mailbox(self.user, &mailbox).max_acked
        };
        let nonsync = self.has_cap("LITERAL+") && self.rng.gen_bool(0.5);
        let conn = self.conn.as_mut().ok_or("not connected")?;
        let t0 = Instant::now();
        let done = conn
            .append(&mailbox, flags, &msg, nonsync)
            .await
            .map_err(|e| format!("APPEND: {e:#}"))?;
        self.record("APPEND", t0);
        let mut ctx = Ctx::default();
        let st = self.finish("APPEND", done.untagged, done.status, &mut ctx)?;
        if st.kind != Kind::Ok {
            return Err(format!(
                "APPEND to {mailbox} refused: {:?} {}",
                st.kind, st.text
            ));
        }
        match st.code {
            Some(RespCode::AppendUid { validity, uid }) => {
                let mut l = self.shared.ledger.lock().unwrap_or_else(|e| e.into_inner());
                let b = l.mailbox(self.user, &mailbox);
                b.check_uidvalidity(validity, "APPENDUID")?;
                b.ack_new(uid, Some(&token), floor, "APPENDUID")?;
            }
            _ if self.has_cap("UIDPLUS") => {
                return Err(
                    "APPEND OK without [APPENDUID] although UIDPLUS is advertised (RFC 4315 3)"
                        .into(),
                )
            }
            _ => {}
        }
        self.shared
            .counters
            .appended
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The UIDs (known) of sequence numbers.
    fn uids_of(&self, seqs: &[u32]) -> Vec<u32> {
        self.model()
            .map(|m| seqs.iter().filter_map(|&s| m.uid(s)).collect())
            .unwrap_or_default()
    }

    async fn fetch_items(&mut self, seqs: &[u32], by_uid: bool, items: &str, _what: &str) -> Step {
        let uids = self.uids_of(seqs);
        if seqs.is_empty() || uids.is_empty() {
            return Ok(());
        }
        let (name, text) = if by_uid {
            (
                "UID FETCH",
                format!("UID FETCH {} ({items})", seq_set(&uids)),
            )
        } else {
            ("FETCH", format!("FETCH {} ({items})", seq_set(seqs)))
        };
        let mut ctx = Ctx {
            no_expunge: !by_uid,
            ..Ctx::default()
        };
        let st = self.cmd(name, text, &mut ctx).await?;
        let wants_body = items.contains("BODY[]") || items.contains("BODY.PEEK[]");
        let wants_header = items.contains("HEADER");
        let answered: BTreeSet<u32> = {
            let l = self.shared.ledger.lock().unwrap_or_else(|e| e.into_inner());
            let b = l.get(self.user, self.mailbox());
            ctx.fetched
                .iter()
                .filter_map(|(u, f)| u.map(|u| (u, f)))
                .filter(|(u, f)| {
                    let ours = b.is_some_and(|b| b.token(*u).is_some());
                    (!wants_body || f.body.as_ref().is_some_and(|b| !b.is_empty()))
                        && (!wants_header
                            || f.header
                                .as_ref()
                                .is_some_and(|h| !ours || !h.iter().all(u8::is_ascii_whitespace)))
                })
                .map(|(u, _)| u)
                .collect()
        };
        let missing: Vec<u32> = uids
            .iter()
            .copied()
            .filter(|u| !answered.contains(u))
            .collect();
        if st.kind == Kind::Ok && !missing.is_empty() && !by_uid {
            // RFC 2180 4.1.1 lets a server answer OK with the data of an
            // expunged message, or NO; OK with nothing is suspicious but
            // judged after the next NOOP.
            self.shared
                .counters
                .missing_answers
                .fetch_add(1, Ordering::Relaxed);
        }
        if st.kind == Kind::No {
            self.shared
                .counters
                .fetch_no
                .fetch_add(1, Ordering::Relaxed);
        }
        self.should_be_gone
            .extend(missing.into_iter().map(|u| vec![u]));
        Ok(())
    }

    async fn store(
        &mut self,
        seqs: &[u32],
        by_uid: bool,
        op: &str,
        flags: &str,
        expect: Expect,
    ) -> Step {
        let uids = self.uids_of(seqs);
        if seqs.is_empty() || uids.is_empty() {
            return Ok(());
        }
        if matches!(expect, Expect::Deleted | Expect::DeletedSilent) {
            let mut l = self.shared.ledger.lock().unwrap_or_else(|e| e.into_inner());
            let b = l.mailbox(self.user, self.mailbox());
            for &u in &uids {
                b.request_flag_deleted(u);
            }
        }
        let (name, text) = if by_uid {
            (
                "UID STORE",
                format!("UID STORE {} {op} {flags}", seq_set(&uids)),
            )
        } else {
            ("STORE", format!("STORE {} {op} {flags}", seq_set(seqs)))
        };
        let mut ctx = Ctx {
            no_expunge: !by_uid,
            ..Ctx::default()
        };
        let st = self.cmd(name, text.clone(), &mut ctx).await?;
        if st.kind != Kind::Ok {
            // RFC 2180 4.2.1 allows NO when some of the messages were expunged.
            self.should_be_gone.push(uids.clone());
            self.shared
                .counters
                .store_no
                .fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let mut reported: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for (u, f) in &ctx.fetched {
            if let (Some(u), Some(fl)) = (u, &f.flags) {
                reported.insert(*u, fl.clone());
            }
        }
        let mailbox = self.mailbox().to_string();
        let silent = matches!(expect, Expect::Silent | Expect::DeletedSilent);
        let unreported: Vec<u32> = uids
            .iter()
            .copied()
            .filter(|u| !reported.contains_key(u))
            .collect();
        let mut late: BTreeSet<u32> = BTreeSet::new();
        if !silent && !unreported.is_empty() {
            // Some servers (Dovecot) report only flags that changed: ask.
            self.shared
                .counters
                .store_unreported
                .fetch_add(1, Ordering::Relaxed);
            let mut ctx = Ctx::default();
            self.cmd(
                "UID FETCH",
                format!("UID FETCH {} (FLAGS)", seq_set(&unreported)),
                &mut ctx,
            )
            .await?;
            for (u, f) in ctx.fetched {
                if let (Some(u), Some(fl)) = (u, f.flags) {
                    if unreported.contains(&u) && !ctx.expunged.contains(&u) {
                        late.insert(u);
                        reported.insert(u, fl);
                    }
                }
            }
        }
        // A STORE that reported nothing for a message, which still shows
        // the old flags afterwards, found it expunged: it must go (its
        // EXPUNGE may only come with a later command).
        // (A keyword we added may have been replaced away by another
        // client's FLAGS since: only removals and \Deleted are sure.)
        let applied = |fl: &Vec<String>| match &expect {
            Expect::Report(Some((kw, false))) => !fl.iter().any(|f| f.eq_ignore_ascii_case(kw)),
            Expect::Deleted => fl.iter().any(|f| f.eq_ignore_ascii_case("\\Deleted")),
            _ => true,
        };
        let mut unapplied = Vec::new();
        for &u in &late {
            if reported.get(&u).is_some_and(|fl| !applied(fl)) {
                unapplied.push(u);
            }
        }
        for u in unapplied {
            reported.remove(&u);
            late.remove(&u);
        }
        for &u in &uids {
            match (&expect, reported.get(&u)) {
                (Expect::Silent | Expect::DeletedSilent, _) => {}
                // Asked for after the STORE: another client's FLAGS
                // replacement may have removed our keyword meanwhile.
                (Expect::Report(Some((_, true))), Some(_)) if late.contains(&u) => {}
                (_, None) => {
                    self.should_be_gone.push(vec![u]);
                }
                (Expect::Report(Some((kw, set))), Some(fl)) => {
                    let has = fl.iter().any(|f| f.eq_ignore_ascii_case(kw));
                    // Some servers (Dovecot) report the flags as they are
                    // when the report is written: another client's
                    // FLAGS (\Deleted \Seen), the only command that
                    // removes our keyword, may have come after ours.
                    let replaced = fl
                        .iter()
                        .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
                        .all(|f| {
                            f.eq_ignore_ascii_case("\\Deleted") || f.eq_ignore_ascii_case("\\Seen")
                        });
                    if has != *set && !(*set && replaced) {
                        return Err(format!(
                            "{text}: UID {u} reported FLAGS {fl:?}, {} {kw} (RFC 3501 6.4.6)",
                            if *set { "without" } else { "still with" }
                        ));
                    }
                }
                (Expect::Deleted, Some(fl)) => {
                    if !fl.iter().any(|f| f.eq_ignore_ascii_case("\\Deleted")) {
                        return Err(format!(
                            "{text}: UID {u} reported FLAGS {fl:?} without \\Deleted"
                        ));
                    }
                }
                (Expect::Report(None), Some(_)) => {}
            }
        }
        if matches!(expect, Expect::Deleted | Expect::DeletedSilent) {
            let tick = self.shared.tick();
            let mut l = self.shared.ledger.lock().unwrap_or_else(|e| e.into_inner());
            let b = l.mailbox(self.user, &mailbox);
            for &u in &uids {
                if expect == Expect::DeletedSilent || reported.contains_key(&u) {
                    b.ack_deleted(u, tick);
                }
            }
        }
        Ok(())
    }

    /// EXPUNGE (all \Deleted) or UID EXPUNGE of the given messages. Every
    /// message whose \Deleted was acknowledged before must be gone after.
    async fn expunge(&mut self, seqs: Option<&[u32]>) -> Step {
        let mailbox = self.mailbox().to_string();
        let scope: Vec<u32> = match seqs {
            Some(s) => self.uids_of(s),
            None => self
                .model()
                .map(|m| m.uids().into_iter().flatten().collect())
                .unwrap_or_default(),
        };
        if seqs.is_some() && scope.is_empty() {
            return Ok(());
        }
        // Only \Deleted stored before this session's last NOOP/SELECT: a
        // session may act on its own view of the flags (Dovecot does).
        let synced = self.synced;
        let must_go: Vec<u32> = {
            let l = self.shared.ledger.lock().unwrap_or_else(|e| e.into_inner());
            let b = l.get(self.user, &mailbox);
            scope
                .iter()
                .copied()
                .filter(|u| {
                    b.and_then(|b| b.msgs.get(u))
                        .is_some_and(|e| e.deleted_acked.is_some_and(|t| t < synced))
                })
                .collect()
        };
        let (name, text) = match seqs {
            Some(_) => ("UID EXPUNGE", format!("UID EXPUNGE {}", seq_set(&scope))),
            None => ("EXPUNGE", "EXPUNGE".to_string()),
        };
        let mut ctx = Ctx::default();
        let st = self.cmd(name, text.clone(), &mut ctx).await?;
        if st.kind != Kind::Ok {
            return Err(format!("{text} failed: {:?} {}", st.kind, st.text));
        }
        if let Some(m) = self.model() {
            for u in must_go {
                if let Some(seq) = m.seq_of(u) {
                    return Err(format!(
                        "{text} completed, but UID {u} (message {seq}), whose \\Deleted was stored before, is still there (RFC 3501 6.4.3)"
                    ));
                }
            }
        }
        Ok(())
    }

    async fn copy_move(&mut self, is_move: bool, by_uid: bool) -> Step {
        let seqs = self.pick_seqs(4);
        if seqs.is_empty() {
            return Ok(());
        }
        let src_box = self.mailbox().to_string();
        let others: Vec<String> = self
            .shared
            .mailboxes
            .iter()
            .filter(|m| !is_move || **m != src_box)
            .cloned()
            .collect();
        let Some(dest) = others.choose(&mut self.rng).cloned() else {
            return Ok(());
        };
        let uids = self.uids_of(&seqs);
        let floor = {
            let mut l = self.shared.ledger.lock().unwrap_or_else(|e| e.into_inner());
            if is_move {
                let b = l.mailbox(self.user, &src_box);
                for &u in &uids {
                    b.request_delete(u);
                }
            }
            l.mailbox(self.user, &dest).max_acked
        };
        let verb = if is_move { "MOVE" } else { "COPY" };
        let (name, text) = match (by_uid, is_move) {
            (true, true) => (
                "UID MOVE",
                format!("UID MOVE {} {}", seq_set(&uids), quote(&dest)),
            ),
            (true, false) => (
                "UID COPY",
                format!("UID COPY {} {}", seq_set(&uids), quote(&dest)),
            ),
            (false, true) => ("MOVE", format!("MOVE {} {}", seq_set(&seqs), quote(&dest))),
            (false, false) => ("COPY", format!("COPY {} {}", seq_set(&seqs), quote(&dest))),
        };
        let mut ctx = Ctx::default();
        let st = self.cmd(name, text.clone(), &mut ctx).await?;
        if st.kind != Kind::Ok {
            // RFC 2180 4.4.1: NO when a source message was expunged.
            self.should_be_gone.push(uids.clone());
            self.shared.counters.copy_no.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let code = match st.code {
            Some(RespCode::CopyUid { validity, src, dst }) => Some((validity, src, dst)),
            _ => ctx.copyuid.take(),
        };
        let Some((validity, src, dst)) = code else {
            if self.has_cap("UIDPLUS") && (!is_move || !ctx.expunged.is_empty()) {
                // Nothing copied is possible only if all sources vanished.
                self.should_be_gone.extend(uids.iter().map(|&u| vec![u]));
                self.shared
                    .counters
                    .missing_answers
                    .fetch_add(1, Ordering::Relaxed);
            }
            return Ok(());
        };
        if src.len() != dst.len() {
            return Err(format!(
                "{text}: COPYUID source {src:?} and destination {dst:?} differ in length"
            ));
        }
        {
            let mut l = self.shared.ledger.lock().unwrap_or_else(|e| e.into_inner());
            // Flags travel with the copy (RFC 3501 6.4.7), \Deleted too:
            // the copy records its source (`Ledger::may_be_gone`).
            let tokens: Vec<Option<String>> = {
                let b = l.mailbox(self.user, &src_box);
                src.iter()
                    .map(|&u| b.msgs.get(&u).and_then(|e| e.token.clone()))
                    .collect()
            };
            let b = l.mailbox(self.user, &dest);
            b.check_uidvalidity(validity, "COPYUID")?;
            for ((s, d), tok) in src.iter().zip(&dst).zip(&tokens) {
                if !uids.contains(s) {
                    return Err(format!(
                        "{text}: COPYUID names source UID {s}, which was not asked for"
                    ));
                }
                b.ack_new(*d, tok.as_deref(), floor, "COPYUID")?;
                if let Some(e) = b.msgs.get_mut(d) {
                    e.copied_from = Some((src_box.clone(), *s));
                }
            }
        }
        let copied: BTreeSet<u32> = src.iter().copied().collect();
        for &u in &uids {
            if !copied.contains(&u) {
                self.should_be_gone.push(vec![u]);
            }
        }
        if is_move {
            if let Some(m) = self.model() {
                for &u in &src {
                    if let Some(seq) = m.seq_of(u) {
                        return Err(format!(
                            "{verb} completed with COPYUID for UID {u}, but no EXPUNGE removed it (still message {seq}; RFC 6851 3.3)"
                        ));
                    }
                }
            }
            self.shared
                .counters
                .moved
                .fetch_add(src.len() as u64, Ordering::Relaxed);
        } else {
            self.shared
                .counters
                .copied
                .fetch_add(src.len() as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn idle(&mut self) -> Step {
        let conn = self.conn.as_mut().ok_or("not connected")?;
        let (tag, early) = conn
            .idle_start()
            .await
            .map_err(|e| format!("IDLE: {e:#}"))?;
        let mut ctx = Ctx::default();
        for r in early {
            self.process(r, &mut ctx)?;
        }
        let wait = Duration::from_millis(self.rng.gen_range(50..600));
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let conn = self.conn.as_mut().ok_or("not connected")?;
            match conn
                .read_for(left)
                .await
                .map_err(|e| format!("IDLE: {e:#}"))?
            {
                None => break,
                Some(Resp::Tagged { tag: t, status }) => {
                    return Err(format!(
                        "IDLE {t} ended by the server: {:?} {}",
                        status.kind, status.text
                    ))
                }
                Some(r) => {
                    self.shared
                        .counters
                        .idle_updates
                        .fetch_add(1, Ordering::Relaxed);
                    self.process(r, &mut ctx)?;
                }
            }
        }
        let conn = self.conn.as_mut().ok_or("not connected")?;
        let t0 = Instant::now();
        conn.send(b"DONE\r\n", "DONE")
            .await
            .map_err(|e| format!("DONE: {e:#}"))?;
        let done = conn
            .finish(&tag, Vec::new())
            .await
            .map_err(|e| format!("IDLE: {e:#}"))?;
        self.record("IDLE DONE", t0);
        let st = self.finish("IDLE", done.untagged, done.status, &mut ctx)?;
        if st.kind != Kind::Ok {
            return Err(format!("IDLE ended with {:?} {}", st.kind, st.text));
        }
        Ok(())
    }

    async fn search_seq(&mut self) -> Step {
        let mut ctx = Ctx {
            no_expunge: true,
            search_seq_all: true,
            ..Ctx::default()
        };
        let st = self.cmd("SEARCH", "SEARCH ALL".into(), &mut ctx).await?;
        if st.kind != Kind::Ok || ctx.search.is_none() {
            return Err(format!(
                "SEARCH ALL: {:?} {} without a SEARCH response",
                st.kind, st.text
            ));
        }
        let mut ctx = Ctx {
            no_expunge: true,
            ..Ctx::default()
        };
        let kw = self.keyword.clone();
        self.cmd("SEARCH", format!("SEARCH KEYWORD {kw} UNDELETED"), &mut ctx)
            .await?;
        Ok(())
    }

    async fn search_uid(&mut self) -> Step {
        let mut ctx = Ctx::default();
        let st = self
            .cmd("UID SEARCH", "UID SEARCH UNDELETED".into(), &mut ctx)
            .await?;
        let Some(found) = ctx.search.take() else {
            return Err(format!(
                "UID SEARCH: {:?} {} without a SEARCH response",
                st.kind, st.text
            ));
        };
        // The result describes the mailbox before any EXPUNGE that follows
        // it in the same reply; those UIDs are in ctx.expunged.
        if let Some(m) = self.model() {
            let known: BTreeSet<u32> = m
                .uids()
                .into_iter()
                .flatten()
                .chain(ctx.expunged.iter().copied())
                .collect();
            if let Some(u) = found.iter().find(|u| !known.contains(u)) {
                let max_known = known.iter().max().copied().unwrap_or(0);
                // A UID above what we know may be a message whose EXISTS
                // comes after the SEARCH response.
                if *u <= max_known {
                    return Err(format!(
                        "UID SEARCH UNDELETED returned UID {u}, which is not in the mailbox"
                    ));
                }
            }
        }
        Ok(())
    }

    /// CLOSE (silently expunges \Deleted messages, RFC 3501 6.4.2), then
    /// SELECT the same mailbox: acknowledged-\Deleted messages must be gone.
    async fn close_reselect(&mut self) -> Step {
        let mailbox = self.mailbox().to_string();
        // Only \Deleted stored before this session's last NOOP/SELECT: a
        // session may act on its own view of the flags (Dovecot does).
        let synced = self.synced;
        let must_go: Vec<u32> = {
            let l = self.shared.ledger.lock().unwrap_or_else(|e| e.into_inner());
            let b = l.get(self.user, &mailbox);
            self.model()
                .map(|m| m.uids().into_iter().flatten().collect::<Vec<_>>())
                .unwrap_or_default()
                .into_iter()
                .filter(|u| {
                    b.and_then(|b| b.msgs.get(u))
                        .is_some_and(|e| e.deleted_acked.is_some_and(|t| t < synced))
                })
                .collect()
        };
        let st = self
            .cmd("CLOSE", "CLOSE".into(), &mut Ctx::default())
            .await?;
        if st.kind != Kind::Ok {
            return Err(format!("CLOSE failed: {}", st.text));
        }
        {
            // CLOSE expunges without EXPUNGE responses: record them here.
            let mut l = self.shared.ledger.lock().unwrap_or_else(|e| e.into_inner());
            let b = l.mailbox(self.user, &mailbox);
            for &u in &must_go {
                b.expunged(u)?;
            }
        }
        self.sel = None;
        self.select(&mailbox).await?;
        if let Some(m) = self.model() {
            for u in must_go {
                if let Some(seq) = m.seq_of(u) {
                    return Err(format!(
                        "CLOSE completed, but UID {u}, whose \\Deleted was stored before, is still message {seq} after SELECT (RFC 3501 6.4.2)"
                    ));
                }
            }
        }
        Ok(())
    }

    async fn logout(&mut self) -> Step {
        let mut ctx = Ctx {
            logout: true,
            ..Ctx::default()
        };
        let st = self.cmd("LOGOUT", "LOGOUT".into(), &mut ctx).await?;
        if st.kind != Kind::Ok {
            return Err(format!("LOGOUT: {:?} {}", st.kind, st.text));
        }
        self.conn = None;
        self.sel = None;
        Ok(())
    }
}

/// What a STORE's untagged FETCH responses must show.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    /// A FLAGS report for every message still there; with Some((kw, set)),
    /// the report must (not) contain kw.
    Report(Option<(String, bool)>),
    /// Reports must include \Deleted.
    Deleted,
    /// .SILENT: nothing expected.
    Silent,
    DeletedSilent,
}

/// Checks the content of one FETCH response against the ledger.
fn check_fetch(
    shared: &Shared,
    user: usize,
    mailbox: &str,
    uid: u32,
    f: &FetchData,
    synced: u64,
) -> Step {
    // RFC 2180 4.1.3 lets a server answer NIL or empty data for a message
    // another session expunged: that is no answer (judged after NOOP).
    // (A blank header of a message that is not ours is just that.)
    let ours = shared
        .ledger
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(user, mailbox)
        .is_some_and(|b| b.token(uid).is_some());
    let mut f = f.clone();
    if ours
        && f.header
            .as_ref()
            .is_some_and(|h| h.iter().all(u8::is_ascii_whitespace))
    {
        f.header = None;
    }
    if f.body.as_ref().is_some_and(|b| b.is_empty()) {
        f.body = None;
        f.size = None;
    }
    let f = &f;
    let mut token = None;
    if let Some(h) = &f.header {
        token = message::token_of(h);
    }
    if let Some(body) = &f.body {
        let t = message::token_of(body);
        if let Some(size) = f.size {
            if size as usize != body.len() {
                return Err(format!(
                    "UID {uid}: RFC822.SIZE {size}, but BODY[] has {} octets (RFC 3501 7.4.2)",
                    body.len()
                ));
            }
        }
        if let Some(tok) = &t {
            let want = message::build(tok);
            if *body != want {
                return Err(format!(
                    "UID {uid}: BODY[] of message {tok} differs from what was appended ({} octets, want {}): {}",
                    body.len(),
                    want.len(),
                    first_diff(body, &want)
                ));
            }
        }
        if token.is_some() && t != token {
            return Err(format!("UID {uid}: header says {token:?}, body says {t:?}"));
        }
        token = t;
    }
    let mut l = shared.ledger.lock().unwrap_or_else(|e| e.into_inner());
    let b = l.mailbox(user, mailbox);
    if f.header.is_some() || f.body.is_some() {
        if let (Some(known), None) = (b.token(uid), &token) {
            return Err(format!(
                "UID {uid} held message {known}, but its Message-ID is now gone"
            ));
        }
    }
    b.observe(uid, token.as_deref())?;
    if let Some(fl) = &f.flags {
        b.check_flags(uid, fl, synced)?;
    }
    Ok(())
}

fn first_diff(a: &[u8], b: &[u8]) -> String {
    let i = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let lo = i.saturating_sub(20);
    format!(
        "first difference at octet {i}: got {:?}, want {:?}",
        String::from_utf8_lossy(a.get(lo..(i + 20).min(a.len())).unwrap_or_default()),
        String::from_utf8_lossy(b.get(lo..(i + 20).min(b.len())).unwrap_or_default())
    )
}
