//! Commands on the messages of the selected mailbox (except FETCH):
//! EXPUNGE / UID EXPUNGE (RFC 4315), STORE with UNCHANGEDSINCE (RFC 7162),
//! COPY / MOVE (RFC 6851), SEARCH with ESEARCH and SEARCHRES (RFC 4731,
//! RFC 5182), SORT and THREAD (RFC 5256).

use std::io;
use std::sync::Arc;

use tracing::{debug, warn};

use crate::store::{FlagOp, Flags, MailboxId, MessageMeta, ModSeq, Quota, Uid};

use super::command::{ReturnOpt, SeqSet, SortKey, ThreadAlgo};
use super::search::{self, Key};
use super::session::{copyuid, resolve_uids, Reply, Session};
use super::summary::Summary;
use super::thread;
use super::{mime, wire};

/// Summaries are read and written in batches of this many messages.
const SUMMARY_BATCH: usize = 512;

/// Most messages SEARCH and FETCH read in one blocking task when they need
/// their bytes, and most bytes (a larger message is read alone). SEARCH's
/// bytes are dropped once evaluated; FETCH's wait beside its output, so
/// its runs are no larger than the output a session holds before it
/// flushes (`FLUSH_AT`): a FETCH holds at most twice what it did when it
/// read one message at a time.
const READ_BATCH: usize = 128;
pub(crate) const SEARCH_READ_BYTES: u64 = 4 << 20;
pub(crate) const FETCH_READ_BYTES: u64 = 256 << 10;

/// Message bytes read ahead a run at a time (at most `READ_BATCH` messages
/// and `max_bytes` bytes, at least one message) in one blocking-pool task,
/// handed out in order: one thread hop per run instead of one per message.
pub(crate) struct ReadAhead {
    max_bytes: u64,
    batch: std::collections::VecDeque<Option<Vec<u8>>>,
    end: usize,
}

impl ReadAhead {
    pub(crate) fn new(max_bytes: u64) -> ReadAhead {
        ReadAhead {
            max_bytes,
            batch: Default::default(),
            end: 0,
        }
    }

    /// The bytes of `metas[k]`, asked for in turn (k = 0, 1, 2, ...); None
    /// if it cannot be read (gone, or shorter than its entry).
    pub(crate) async fn take(
        &mut self,
        store: &crate::store::Store,
        id: MailboxId,
        metas: &[&MessageMeta],
        k: usize,
    ) -> Option<Vec<u8>> {
        if k >= self.end {
            let mut bytes = 0u64;
            let mut end = k;
            while let Some(next) = metas.get(end) {
                if end > k && (end - k >= READ_BATCH || bytes + next.size > self.max_bytes) {
                    break;
                }
                bytes += next.size;
                end += 1;
            }
            let run = metas.get(k..end).unwrap_or_default();
            self.batch = match store.read_many(id, run.iter().copied()).await {
                Ok(v) => v.into(),
                Err(e) => {
                    debug!(error = %e, "reading messages failed");
                    vec![None; run.len()].into()
                }
            };
            self.end = end;
        }
        self.batch.pop_front().flatten()
    }
}

impl Session {
    pub(crate) async fn expunge(&mut self, set: Option<&SeqSet>) -> io::Result<Reply> {
        let Some(open) = self.state.open() else {
            return Ok(Reply::bad("No mailbox selected"));
        };
        if open.view.read_only {
            return Ok(Reply::no(Some("READ-ONLY"), "Mailbox is read-only"));
        }
        if !open.rights.has('e') {
            return Ok(Reply::no_perm());
        }
        let uids = match set {
            None => None,
            Some(s) => match resolve_uids(open, s, true, &self.saved) {
                Ok(u) => Some(u),
                Err(r) => return Ok(r),
            },
        };
        let id = open.view.id;
        if let Err(e) = self.store().expunge(id, uids).await {
            return Ok(self.store_error(e, "NONEXISTENT"));
        }
        self.sync(true).await;
        Ok(Reply::ok("EXPUNGE completed"))
    }

    /// STORE (RFC 9051 6.4.6) with UNCHANGEDSINCE (RFC 7162 3.1.3).
    pub(crate) async fn store_cmd(
        &mut self,
        set: &SeqSet,
        op: FlagOp,
        flags: &[String],
        silent: bool,
        uid: bool,
        unchanged_since: Option<ModSeq>,
    ) -> io::Result<Reply> {
        if unchanged_since.is_some() {
            self.enable_condstore();
        }
        let store = self.store().clone();
        let saved = self.saved.clone();
        let Some(open) = self.state.open_mut() else {
            return Ok(Reply::bad("No mailbox selected"));
        };
        if open.view.read_only {
            return Ok(Reply::no(Some("READ-ONLY"), "Mailbox is read-only"));
        }
        let uids = match resolve_uids(open, set, uid, &saved) {
            Ok(u) => u,
            Err(r) => return Ok(r),
        };
        if uids.is_empty() {
            return Ok(Reply::ok("STORE completed"));
        }
        let flags = Self::permitted_flags(Flags::from_names(flags), open.rights);
        let before: Vec<(Uid, ModSeq)> = uids
            .iter()
            .filter_map(|&u| open.view.index_of(u))
            .filter_map(|i| open.view.msgs.get(i).map(|m| (m.meta.uid, m.meta.modseq)))
            .collect();
        let (metas, failed) = match store
            .store_flags(open.view.id, uids, op, flags, unchanged_since)
            .await
        {
            Ok(r) => r,
            Err(e) => return Ok(self.store_error(e, "NONEXISTENT")),
        };
        let mut out = String::new();
        for meta in metas {
            // `before` is in ascending UID order (as resolved): bisect, so
            // a STORE over the whole mailbox is not quadratic in it.
            let old = before
                .binary_search_by_key(&meta.uid, |(u, _)| *u)
                .ok()
                .and_then(|k| before.get(k))
                .map(|(_, m)| *m);
            let changed = old != Some(meta.modseq);
            if let Some(i) = open.view.update_meta(meta, &mut out) {
                if !silent {
                    out.push_str(&open.view.flags_fetch(i, uid));
                } else if open.view.condstore && changed {
                    // RFC 7162 3.1.3: .SILENT still reports the new MODSEQ.
                    if let Some(m) = open.view.msgs.get(i) {
                        out.push_str(&format!(
                            "* {} FETCH (UID {} MODSEQ ({}))\r\n",
                            i + 1,
                            m.meta.uid,
                            m.meta.modseq
                        ));
                    }
                }
            }
        }
        let modified = if failed.is_empty() {
            None
        } else if uid {
            Some(wire::uid_set(&failed))
        } else {
            let mut seqs: Vec<u32> = failed
                .iter()
                .filter_map(|&u| open.view.index_of(u).map(|i| i as u32 + 1))
                .collect();
            seqs.sort_unstable();
            Some(wire::num_set(&seqs))
        };
        self.write(&out);
        Ok(match modified {
            Some(m) => Reply::ok_code(format!("MODIFIED {m}"), "Conditional STORE failed"),
            None => Reply::ok("STORE completed"),
        })
    }

    /// COPY and MOVE (RFC 9051 6.4.7, RFC 6851), with COPYUID (RFC 4315).
    pub(crate) async fn copy(
        &mut self,
        set: &SeqSet,
        mailbox: &[u8],
        uid: bool,
        moving: bool,
    ) -> io::Result<Reply> {
        let dest = match self.target(mailbox).await {
            Ok(t) => t,
            Err(mut r) => {
                if r.code.as_deref() == Some("NONEXISTENT") {
                    r.code = Some("TRYCREATE".into());
                }
                return Ok(r);
            }
        };
        if !dest.rights.has('i') {
            return Ok(Reply::no_perm());
        }
        let quota = match self.quota_for(&dest.owner).await {
            Ok(q) => q,
            Err(r) => return Ok(r),
        };
        let store = self.store().clone();
        let Some(open) = self.state.open() else {
            return Ok(Reply::bad("No mailbox selected"));
        };
        if moving && open.view.read_only {
            return Ok(Reply::no(Some("READ-ONLY"), "Mailbox is read-only"));
        }
        if moving && !(open.rights.has('t') && open.rights.has('e')) {
            return Ok(Reply::no_perm());
        }
        let uids = match resolve_uids(open, set, uid, &self.saved) {
            Ok(u) => u,
            Err(r) => return Ok(r),
        };
        let verb = if moving { "MOVE" } else { "COPY" };
        if uids.is_empty() {
            // Still check the destination exists.
            return Ok(match store.status(&dest.owner, &dest.name).await {
                Ok(_) => Reply::ok(&format!("{verb} completed")),
                Err(e) => self.store_error(e, "TRYCREATE"),
            });
        }
        // RFC 6851 3.1 allows MOVE to the selected mailbox itself: COPY,
        // then flag the sources \Deleted and expunge just them (the store
        // moves only between two mailboxes). Usage ends where it started,
        // so the copy is not held to the quota.
        let to_self = moving && open.owner == dest.owner && open.view.name == dest.name;
        let id = open.view.id;
        let (quota, remove_source) = if to_self {
            (Quota::default(), false)
        } else {
            (quota, moving)
        };
        let (uidvalidity, mut pairs) = match store
            .copy(id, uids, &dest.owner, &dest.name, remove_source, quota)
            .await
        {
            Ok(r) => r,
            Err(e) => return Ok(self.store_error(e, "TRYCREATE")),
        };
        if to_self && !pairs.is_empty() {
            let sources: Vec<Uid> = pairs.iter().map(|(from, _)| *from).collect();
            let deleted = Flags {
                bits: Flags::DELETED,
                keywords: vec![],
            };
            let expunged = match store
                .store_flags(id, sources.clone(), FlagOp::Add, deleted, None)
                .await
            {
                Ok(_) => store.expunge(id, Some(sources)).await,
                Err(e) => Err(e),
            };
            if let Err(e) = expunged {
                return Ok(self.store_error(e, "NONEXISTENT"));
            }
        }
        pairs.sort_unstable();
        let code = copyuid(uidvalidity, &pairs);
        if moving {
            // RFC 6851 4.3: COPYUID in an untagged OK before the expunges.
            if let Some(code) = &code {
                self.write(&format!("* OK [{code}] Moved\r\n"));
            }
            self.sync(true).await;
            return Ok(Reply::ok("MOVE completed"));
        }
        Ok(match code {
            Some(c) => Reply::ok_code(c, "COPY completed"),
            None => Reply::ok("COPY completed"),
        })
    }

    fn check_charset(charset: Option<&str>) -> Result<(), Reply> {
        match charset {
            Some(cs)
                if !cs.eq_ignore_ascii_case("UTF-8") && !cs.eq_ignore_ascii_case("US-ASCII") =>
            {
                Err(Reply::no(
                    Some("BADCHARSET (UTF-8 US-ASCII)"),
                    "Charset not supported",
                ))
            }
            _ => Ok(()),
        }
    }

    /// The view indexes of the messages matching `key`.
    async fn evaluate(&mut self, key: &mut Key) -> Vec<usize> {
        self.evaluate_in(key, None).await
    }

    /// The view indexes of the messages matching `key`, among `only` (view
    /// indexes, ascending) or all of them.
    pub(crate) async fn evaluate_in(
        &mut self,
        key: &mut Key,
        only: Option<&[usize]>,
    ) -> Vec<usize> {
        if key.uses_saved() {
            let mut saved = self.saved.clone();
            saved.sort_unstable();
            key.resolve_saved(&saved);
        }
        if key.uses_modseq() {
            self.enable_condstore();
        }
        let store = self.store().clone();
        let Some(open) = self.state.open() else {
            return Vec::new();
        };
        let needs_body = search::needs_body(key);
        let max_seq = open.view.exists();
        let max_uid = open.view.max_uid();
        key.resolve_sets(max_seq, max_uid);
        let id = open.view.id;
        let idxs: Vec<usize> = match only {
            Some(o) => o.to_vec(),
            None => (0..open.view.msgs.len()).collect(),
        };
        let msgs: Vec<_> = idxs
            .iter()
            .filter_map(|&i| open.view.msgs.get(i).cloned())
            .collect();
        let rev2 = open.view.rev2;
        let email_ids: Vec<String> = if key.any(&|k| matches!(k, Key::EmailId(_))) {
            let uids = msgs.iter().map(|m| m.meta.uid).collect();
            match store.email_ids(id, uids).await {
                Ok(v) => v.into_iter().map(wire::email_id).collect(),
                Err(e) => {
                    warn!(error = %e, "reading email ids failed");
                    Vec::new()
                }
            }
        } else {
            Vec::new()
        };
        let thread_ids: Vec<Option<String>> = if key.any(&|k| matches!(k, Key::ThreadId(_))) {
            let uids = msgs.iter().map(|m| m.meta.uid).collect();
            super::fetch::thread_ids(&store, id, uids)
                .await
                .into_iter()
                .map(super::fetch::thread_id_text)
                .collect()
        } else {
            Vec::new()
        };
        let now = chrono::Utc::now().timestamp();
        let mut hits = Vec::new();
        // When a key needs headers or body, the messages are read ahead a
        // run at a time and dropped once evaluated.
        let metas: Vec<&MessageMeta> = msgs.iter().map(|m| &m.meta).collect();
        let mut ahead = ReadAhead::new(SEARCH_READ_BYTES);
        for (k, (&i, m)) in idxs.iter().zip(msgs.iter()).enumerate() {
            let mut data: Option<Arc<Vec<u8>>> = if needs_body {
                ahead.take(&store, id, &metas, k).await.map(Arc::new)
            } else {
                None
            };
            let view = search::MessageView {
                seq: i as u32 + 1,
                uid: m.meta.uid,
                flags: &m.meta.flags,
                recent: m.recent && !rev2,
                internal_date: m.meta.internal_date,
                tz_offset_min: m.meta.tz_offset_min,
                size: m.meta.size,
                modseq: m.meta.modseq,
                save_date: m.meta.save_date,
                email_id: email_ids.get(k).map(String::as_str).unwrap_or_default(),
                thread_id: thread_ids.get(k).and_then(Option::as_deref),
            };
            let mut loader = || data.take();
            // A panic while decoding the message (a bug) is logged and the
            // message does not match.
            let hit = mime::contained("search", m.meta.uid, || {
                search::matches_at(key, &view, max_seq, max_uid, now, &mut loader)
            });
            if hit == Some(true) {
                hits.push(i);
            }
        }
        hits
    }

    /// SEARCH (RFC 9051 6.4.4) with ESEARCH (RFC 4731), SEARCHRES (RFC
    /// 5182) and CONDSTORE's MODSEQ (RFC 7162 3.1.5).
    pub(crate) async fn search(
        &mut self,
        tag: &str,
        charset: Option<&str>,
        mut key: Key,
        uid: bool,
        ret: Option<Vec<ReturnOpt>>,
    ) -> io::Result<Reply> {
        let saving = ret.as_ref().is_some_and(|r| r.contains(&ReturnOpt::Save));
        if let Some(r) = self.context_tag_in_use(tag, ret.as_deref()) {
            return Ok(r);
        }
        if let Err(r) = Self::check_charset(charset) {
            if saving {
                self.saved.clear();
            }
            return Ok(r);
        }
        let context = key.clone();
        let hits = self.evaluate(&mut key).await;
        let Some(open) = self.state.open() else {
            return Ok(Reply::bad("No mailbox selected"));
        };
        let number = |i: usize| -> u32 {
            if uid {
                open.view.msgs.get(i).map(|m| m.meta.uid).unwrap_or(0)
            } else {
                i as u32 + 1
            }
        };
        let modseq_of = |idx: &[usize]| -> Option<ModSeq> {
            idx.iter()
                .filter_map(|&i| open.view.msgs.get(i).map(|m| m.meta.modseq))
                .max()
        };
        let with_modseq = key.uses_modseq();
        let ret = match ret {
            None if !self.enabled.rev2 => {
                let mut line = String::from("* SEARCH");
                for &h in &hits {
                    line.push_str(&format!(" {}", number(h)));
                }
                if with_modseq {
                    if let Some(m) = modseq_of(&hits) {
                        line.push_str(&format!(" (MODSEQ {m})"));
                    }
                }
                line.push_str("\r\n");
                self.write(&line);
                return Ok(Reply::ok("SEARCH completed"));
            }
            None => vec![ReturnOpt::All],
            Some(r) if r.is_empty() => vec![ReturnOpt::All],
            Some(r) => r,
        };
        Ok(self.esearch_respond(
            tag,
            "SEARCH",
            uid,
            ret,
            hits,
            with_modseq,
            super::esearch::Query {
                key: context,
                criteria: None,
            },
        ))
    }

    /// Summaries of messages for SORT and THREAD: from the store's cache
    /// (keys only, `Summary::keys_from_bytes`: no FETCH items), computed
    /// (and cached) for the rest. `None` for a message that cannot be read.
    pub(crate) async fn summaries(
        &mut self,
        mailbox: MailboxId,
        metas: &[MessageMeta],
    ) -> Vec<Option<Summary>> {
        let store = self.store().clone();
        let mut out = Vec::with_capacity(metas.len());
        for chunk in metas.chunks(SUMMARY_BATCH) {
            let uids = chunk.iter().map(|m| m.uid).collect();
            let cached = store
                .summaries(mailbox, uids)
                .await
                .unwrap_or_else(|_| vec![None; chunk.len()]);
            let mut fresh = Vec::new();
            for (meta, c) in chunk.iter().zip(cached) {
                if let Some(s) = c.as_deref().and_then(Summary::keys_from_bytes) {
                    out.push(Some(s));
                    continue;
                }
                match store.read(mailbox, meta).await {
                    Ok(bytes) => {
                        // A panic (a bug) leaves the message out, as if
                        // unreadable; it is logged.
                        let s = mime::contained("summary", meta.uid, || Summary::compute(&bytes));
                        if let Some(s) = &s {
                            fresh.push((meta.uid, s.to_bytes()));
                        }
                        out.push(s);
                    }
                    Err(e) => {
                        debug!(uid = meta.uid, error = %e, "message unreadable for summary");
                        out.push(None);
                    }
                }
            }
            if !fresh.is_empty() {
                if let Err(e) = store.put_summaries(mailbox, fresh).await {
                    debug!(error = %e, "caching summaries failed");
                }
            }
        }
        out
    }

    /// The matching messages with their summaries (SORT, THREAD).
    async fn sortable(&mut self, key: &mut Key) -> Vec<(usize, MessageMeta, Summary)> {
        let hits = self.evaluate(key).await;
        let Some(open) = self.state.open() else {
            return Vec::new();
        };
        let id = open.view.id;
        let (idx, metas): (Vec<usize>, Vec<MessageMeta>) = hits
            .iter()
            .filter_map(|&i| open.view.msgs.get(i).map(|m| (i, m.meta.clone())))
            .unzip();
        let sums = self.summaries(id, &metas).await;
        idx.into_iter()
            .zip(metas)
            .zip(sums)
            .filter_map(|((i, m), s)| s.map(|s| (i, m, s)))
            .collect()
    }

    /// SORT (RFC 5256 3), with RETURN (ESORT, RFC 5267 3).
    pub(crate) async fn sort(
        &mut self,
        tag: &str,
        charset: &str,
        mut key: Key,
        criteria: &[(bool, SortKey)],
        uid: bool,
        ret: Option<Vec<ReturnOpt>>,
    ) -> io::Result<Reply> {
        if let Some(r) = self.context_tag_in_use(tag, ret.as_deref()) {
            return Ok(r);
        }
        if let Err(r) = Self::check_charset(Some(charset)) {
            if ret.as_ref().is_some_and(|r| r.contains(&ReturnOpt::Save)) {
                self.saved.clear();
            }
            return Ok(r);
        }
        let context = key.clone();
        let rows = self.sortable(&mut key).await;
        if let Some(ret) = ret {
            let mut items: Vec<thread::Item<'_>> = rows
                .iter()
                .map(|(i, m, s)| thread::Item {
                    seq: *i as u32 + 1,
                    out: *i as u32,
                    internal_date: m.internal_date,
                    size: m.size,
                    summary: s,
                })
                .collect();
            let order: Vec<usize> = thread::sort(&mut items, criteria)
                .into_iter()
                .map(|i| i as usize)
                .collect();
            let with_modseq = context.uses_modseq();
            let ret = if ret.is_empty() {
                vec![ReturnOpt::All]
            } else {
                ret
            };
            return Ok(self.esearch_respond(
                tag,
                "SORT",
                uid,
                ret,
                order,
                with_modseq,
                super::esearch::Query {
                    key: context,
                    criteria: Some(criteria.to_vec()),
                },
            ));
        }
        let mut items: Vec<thread::Item<'_>> = rows
            .iter()
            .map(|(i, m, s)| thread::Item {
                seq: *i as u32 + 1,
                out: if uid { m.uid } else { *i as u32 + 1 },
                internal_date: m.internal_date,
                size: m.size,
                summary: s,
            })
            .collect();
        let order = thread::sort(&mut items, criteria);
        let mut line = String::from("* SORT");
        for n in order {
            line.push_str(&format!(" {n}"));
        }
        line.push_str("\r\n");
        self.write(&line);
        Ok(Reply::ok("SORT completed"))
    }

    /// THREAD (RFC 5256 4).
    pub(crate) async fn thread(
        &mut self,
        charset: &str,
        mut key: Key,
        algo: ThreadAlgo,
        uid: bool,
    ) -> io::Result<Reply> {
        if let Err(r) = Self::check_charset(Some(charset)) {
            return Ok(r);
        }
        let rows = self.sortable(&mut key).await;
        let items: Vec<thread::Item<'_>> = rows
            .iter()
            .map(|(i, m, s)| thread::Item {
                seq: *i as u32 + 1,
                out: if uid { m.uid } else { *i as u32 + 1 },
                internal_date: m.internal_date,
                size: m.size,
                summary: s,
            })
            .collect();
        let text = thread::thread(&items, algo);
        let line = if text.is_empty() {
            "* THREAD\r\n".to_string()
        } else {
            format!("* THREAD {text}\r\n")
        };
        self.write(&line);
        Ok(Reply::ok("THREAD completed"))
    }
}

/// The matches whose highest mod-sequence the ESEARCH MODSEQ item reports
/// (RFC 7162 3.1.5 with RFC 4731): with ALL or COUNT every match; else only
/// the messages returned, MIN and/or MAX and/or those of PARTIAL (RFC 9394
/// 3.1). The same choice makes what SAVE saves (RFC 5182 2.1).
pub(super) fn modseq_reported_for(ret: &[ReturnOpt], hits: &[usize]) -> Vec<usize> {
    let returned =
        |o: &ReturnOpt| matches!(o, ReturnOpt::Min | ReturnOpt::Max | ReturnOpt::Partial(_));
    if ret.contains(&ReturnOpt::All) || ret.contains(&ReturnOpt::Count) || !ret.iter().any(returned)
    {
        return hits.to_vec();
    }
    let mut out = Vec::new();
    for o in ret {
        if let ReturnOpt::Partial(r) = o {
            out.extend(
                hits.get(super::esearch::window(hits.len(), *r))
                    .unwrap_or_default(),
            );
        }
    }
    if ret.contains(&ReturnOpt::Min) {
        out.extend(hits.first().copied());
    }
    if ret.contains(&ReturnOpt::Max) {
        out.extend(hits.last().copied());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7162_3_1_5_search_return_min_modseq_is_the_min_message() {
        let hits = [2, 5, 9];
        assert_eq!(modseq_reported_for(&[ReturnOpt::Min], &hits), vec![2]);
        assert_eq!(modseq_reported_for(&[ReturnOpt::Max], &hits), vec![9]);
        assert_eq!(
            modseq_reported_for(&[ReturnOpt::Min, ReturnOpt::Max], &hits),
            vec![2, 9]
        );
        assert_eq!(
            modseq_reported_for(&[ReturnOpt::Min, ReturnOpt::Count], &hits),
            vec![2, 5, 9]
        );
        assert_eq!(modseq_reported_for(&[ReturnOpt::All], &hits), vec![2, 5, 9]);
        assert!(modseq_reported_for(&[ReturnOpt::Min], &[]).is_empty());
    }
}
