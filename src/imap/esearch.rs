//! ESEARCH results for SEARCH and SORT: ESORT and search contexts (RFC
//! 5267) and PARTIAL (RFC 9394), on top of ESEARCH (RFC 4731) and
//! SEARCHRES (RFC 5182).
//!
//! - `esearch_respond` answers `SEARCH/SORT RETURN (...)` with one
//!   `* ESEARCH` line from the matches in result order (ascending for
//!   SEARCH, sort order for SORT: MIN is then the first sorted, ALL lists
//!   the messages in that order, RFC 5267 3).
//! - `RETURN (UPDATE)` keeps a context: after the selected mailbox changes
//!   (`Session::sync`, i.e. only where EXPUNGE/EXISTS may be sent) its
//!   result is brought up to date and the difference is sent as
//!   `* ESEARCH (TAG ..) [UID] REMOVEFROM (pos set)` then `ADDTO (pos set)`
//!   (RFC 5267 4.3). For SEARCH the position is 0; for SORT it is the
//!   1-based place in the sorted result: REMOVEFROM runs are given highest
//!   first (each position is valid when applied in order), ADDTO runs
//!   lowest first. Members about to be expunged get their REMOVEFROM before
//!   the EXPUNGE/VANISHED responses (RFC 5267 4.3.4, numbered as before the
//!   expunge); ADDTO comes after EXISTS (4.3.3). A tag that names a live
//!   context cannot start another one: BAD (4.3).
//! - Bounds: at most `MAX_CONTEXTS` live contexts per selected mailbox;
//!   a SORT context at most `MAX_SORT_CONTEXT` messages. The update is
//!   incremental: only messages that are new or whose mod-sequence moved
//!   are evaluated again (message contents never change), so the cost of a
//!   change is the changed messages times the contexts, plus a re-sort of
//!   a SORT context's members (their sort keys come from the summary
//!   cache). Sequence sets, `$` and `*` are resolved to UIDs when the
//!   command runs (`freeze`, RFC 5267 4.3). Keys whose answer changes with
//!   time alone (OLDER/YOUNGER) are refused, as is any context beyond the
//!   bounds: `* NO [NOUPDATE "tag"]` (RFC 5267 4.1) before the
//!   tagged OK, and the result is still returned. Contexts end with CANCELUPDATE
//!   or when the mailbox is closed or another one selected (they live in
//!   the `Open` mailbox).
//! - PARTIAL (RFC 9394 3.1): `n:m` counts results from the first, `-n:-m`
//!   from the last (-1 is the last); the window is echoed as the client
//!   wrote it with the messages in it, or NIL. It excludes ALL; with SAVE
//!   (and no ALL/COUNT) the messages in the window are saved, like MIN/MAX
//!   (RFC 5182 2.1); MODSEQ is that of the messages returned. It does not
//!   interact with UPDATE: updates cover every match (RFC 9394 3.1).

use std::collections::HashSet;
use std::ops::Range;

use crate::store::{ModSeq, Uid};

use super::command::{PartialRange, ReturnOpt, SeqSet, SortKey};
use super::messages::modseq_reported_for;
use super::search::Key;
use super::selected::Selected;
use super::session::{Reply, Session};
use super::{thread, wire};

/// Live search contexts per selected mailbox (RFC 5267 4.1 lets a server
/// refuse more with NOUPDATE).
pub const MAX_CONTEXTS: usize = 4;

/// The most messages a SORT context may hold: each update re-sorts them.
pub const MAX_SORT_CONTEXT: usize = 20_000;

/// What a context re-evaluates: the key as the client gave it, and the
/// sort criteria of a SORT context.
#[derive(Debug, Clone)]
pub struct Query {
    pub key: Key,
    pub criteria: Option<Vec<(bool, SortKey)>>,
}

/// One `RETURN (UPDATE)` result kept up to date (RFC 5267 4).
#[derive(Debug)]
struct Context {
    tag: String,
    uid: bool,
    query: Query,
    /// The matching UIDs in result order (ascending for SEARCH).
    members: Vec<Uid>,
    /// The view's mod-sequence and highest UID when `members` was right.
    modseq: ModSeq,
    max_uid: Uid,
}

/// The live contexts of the selected mailbox.
#[derive(Debug, Default)]
pub struct Contexts {
    list: Vec<Context>,
}

impl Contexts {
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Is `tag` a live context (RFC 5267 4.3: reusing it is a BAD)?
    pub fn has(&self, tag: &str) -> bool {
        self.list.iter().any(|c| c.tag == tag)
    }

    /// The REMOVEFROM responses for context members about to be expunged,
    /// numbered as in `view` before the expunge: RFC 5267 4.3.4 wants them
    /// before the EXPUNGE (or VANISHED) responses. The members leave.
    pub fn before_expunge(&mut self, view: &Selected, expunged: &[Uid]) -> String {
        let mut out = String::new();
        if expunged.is_empty() {
            return out;
        }
        let gone: HashSet<Uid> = expunged.iter().copied().collect();
        for ctx in &mut self.list {
            if !ctx.members.iter().any(|u| gone.contains(u)) {
                continue;
            }
            let keep: HashSet<Uid> = ctx
                .members
                .iter()
                .copied()
                .filter(|u| !gone.contains(u))
                .collect();
            let sorted = ctx.query.criteria.is_some();
            let uid = ctx.uid;
            let number = |u: Uid| {
                if uid {
                    u
                } else {
                    view.index_of(u).map(|i| i as u32 + 1).unwrap_or(0)
                }
            };
            let mut runs = removals(&ctx.members, &keep);
            if !sorted {
                runs = vec![(0, runs.into_iter().flat_map(|(_, u)| u).collect())];
            }
            out.push_str(&format!(
                "{} REMOVEFROM {}\r\n",
                ctx.head(),
                runs_text(&runs, sorted, &number)
            ));
            ctx.members.retain(|u| keep.contains(u));
        }
        out
    }
}

impl Context {
    /// `* ESEARCH (TAG "t")` and ` UID` for a UID context.
    fn head(&self) -> String {
        format!(
            "* ESEARCH (TAG {}){}",
            wire::string(&self.tag),
            if self.uid { " UID" } else { "" }
        )
    }
}

/// The indexes of a result of `len` messages that a PARTIAL range names
/// (RFC 9394 3.1); the ends may be given in either order.
pub fn window(len: usize, r: PartialRange) -> Range<usize> {
    let (a, b) = (r.first.unsigned_abs(), r.last.unsigned_abs());
    let (lo, hi) = (a.min(b) as usize, a.max(b) as usize);
    if r.first > 0 {
        let start = (lo - 1).min(len);
        start..hi.min(len)
    } else {
        // -lo is nearer the end than -hi.
        len.saturating_sub(hi)..len.saturating_sub(lo - 1)
    }
}

/// Can a context for `key` (frozen) be updated from the changed messages
/// alone? Not when time alone changes the answer.
fn updatable(key: &Key) -> bool {
    !key.any(&|k| matches!(k, Key::Younger(_) | Key::Older(_)))
}

/// `key` with what names messages by position resolved as the command
/// ran (RFC 5267 4.3): sequence sets and `$` become the UIDs they named,
/// `*` in a UID set the highest UID then. Later renumbering, new
/// messages or a new `$` do not change the context's key. The tree is at
/// most the parser's 64 levels deep.
fn freeze(key: &Key, view: &Selected, saved: &[Uid]) -> Key {
    match key {
        Key::SequenceSet(SeqSet::Saved) | Key::Uid(SeqSet::Saved) => {
            let mut s = saved.to_vec();
            s.sort_unstable();
            s.dedup();
            Key::UidIn(s)
        }
        Key::SequenceSet(set) => {
            let merged = set.merged(view.exists());
            Key::UidIn(
                view.msgs
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| SeqSet::merged_contains(&merged, *i as u32 + 1))
                    .map(|(_, m)| m.meta.uid)
                    .collect(),
            )
        }
        Key::Uid(set) => Key::UidRanges(set.merged(view.max_uid())),
        Key::And(v) => Key::And(v.iter().map(|k| freeze(k, view, saved)).collect()),
        Key::Or(a, b) => Key::Or(
            Box::new(freeze(a, view, saved)),
            Box::new(freeze(b, view, saved)),
        ),
        Key::Not(k) => Key::Not(Box::new(freeze(k, view, saved))),
        other => other.clone(),
    }
}

/// The REMOVEFROM runs that turn `old` into a subsequence of `new`: (1-based
/// position in the list as it is when the run is applied, members), the
/// highest position first.
fn removals(old: &[Uid], new: &HashSet<Uid>) -> Vec<(usize, Vec<Uid>)> {
    let mut runs = runs_outside(old, new);
    runs.reverse();
    runs
}

/// The ADDTO runs that turn `kept` (a subsequence of `new`) into `new`:
/// (1-based position in `new`, members), the lowest position first.
fn additions(kept: &HashSet<Uid>, new: &[Uid]) -> Vec<(usize, Vec<Uid>)> {
    runs_outside(new, kept)
}

/// The runs of `list` whose members are not in `set`: (1-based position of
/// the run's first member in `list`, members), in list order.
fn runs_outside(list: &[Uid], set: &HashSet<Uid>) -> Vec<(usize, Vec<Uid>)> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < list.len() {
        if set.contains(&list[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < list.len() && !set.contains(&list[i]) {
            i += 1;
        }
        runs.push((start + 1, list[start..i].to_vec()));
    }
    runs
}

/// `(pos set pos set ...)`; `number` maps a UID to what the context
/// reports (UID or sequence number).
fn runs_text(runs: &[(usize, Vec<Uid>)], sorted: bool, number: &dyn Fn(Uid) -> u32) -> String {
    let mut parts = Vec::new();
    for (pos, uids) in runs {
        let mut nums: Vec<u32> = uids.iter().map(|&u| number(u)).collect();
        if !sorted {
            nums.sort_unstable();
        }
        let pos = if sorted { *pos } else { 0 };
        parts.push(format!("{pos} {}", wire::num_set(&nums)));
    }
    format!("({})", parts.join(" "))
}

impl Session {
    /// Answers SEARCH/SORT RETURN (...) from `hits` (view indexes in result
    /// order) with an ESEARCH response (RFC 4731, RFC 5267 3, RFC 9394),
    /// saves `$` (RFC 5182) and starts a context for UPDATE (RFC 5267 4).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn esearch_respond(
        &mut self,
        tag: &str,
        verb: &str,
        uid: bool,
        mut ret: Vec<ReturnOpt>,
        hits: Vec<usize>,
        with_modseq: bool,
        query: Query,
    ) -> Reply {
        let Some(open) = self.state.open() else {
            return Reply::bad("No mailbox selected");
        };
        let result_opt = |o: &ReturnOpt| {
            matches!(
                o,
                ReturnOpt::Min
                    | ReturnOpt::Max
                    | ReturnOpt::Count
                    | ReturnOpt::All
                    | ReturnOpt::Partial(_)
            )
        };
        // UPDATE alone still returns the result the updates amend.
        if !ret.iter().any(result_opt) && !ret.contains(&ReturnOpt::Save) {
            ret.push(ReturnOpt::All);
        }
        let has = |o: ReturnOpt| ret.contains(&o);
        let uid_of = |i: usize| open.view.msgs.get(i).map(|m| m.meta.uid).unwrap_or(0);
        let number = |i: usize| if uid { uid_of(i) } else { i as u32 + 1 };
        let mut line = String::new();
        if ret.iter().any(result_opt) {
            line = format!("* ESEARCH (TAG {})", wire::string(tag));
            if uid {
                line.push_str(" UID");
            }
            if has(ReturnOpt::Min) {
                if let Some(&i) = hits.first() {
                    line.push_str(&format!(" MIN {}", number(i)));
                }
            }
            if has(ReturnOpt::Max) {
                if let Some(&i) = hits.last() {
                    line.push_str(&format!(" MAX {}", number(i)));
                }
            }
            if has(ReturnOpt::Count) {
                line.push_str(&format!(" COUNT {}", hits.len()));
            }
            if has(ReturnOpt::All) && !hits.is_empty() {
                let nums: Vec<u32> = hits.iter().map(|&i| number(i)).collect();
                line.push_str(&format!(" ALL {}", wire::num_set(&nums)));
            }
            for o in &ret {
                if let ReturnOpt::Partial(r) = o {
                    let nums: Vec<u32> = hits
                        .get(window(hits.len(), *r))
                        .unwrap_or_default()
                        .iter()
                        .map(|&i| number(i))
                        .collect();
                    let set = if nums.is_empty() {
                        "NIL".to_string()
                    } else {
                        wire::num_set(&nums)
                    };
                    line.push_str(&format!(" PARTIAL ({}:{} {set})", r.first, r.last));
                }
            }
            if with_modseq {
                let m = modseq_reported_for(&ret, &hits)
                    .iter()
                    .filter_map(|&i| open.view.msgs.get(i).map(|m| m.meta.modseq))
                    .max();
                if let Some(m) = m {
                    line.push_str(&format!(" MODSEQ {m}"));
                }
            }
            line.push_str("\r\n");
        }
        let saved = has(ReturnOpt::Save).then(|| {
            let mut s: Vec<Uid> = modseq_reported_for(&ret, &hits)
                .into_iter()
                .map(uid_of)
                .collect();
            s.sort_unstable();
            s.dedup();
            s
        });
        let members: Vec<Uid> = hits.iter().map(|&i| uid_of(i)).collect();
        let query = Query {
            key: freeze(&query.key, &open.view, &self.saved),
            criteria: query.criteria,
        };
        let (modseq, max_uid) = (open.view.modseq, open.view.max_uid());
        self.write(&line);
        if let Some(s) = saved {
            self.saved = s;
        }
        let done = format!("{verb} completed");
        if !has(ReturnOpt::Update) {
            return Reply::ok(&done);
        }
        let Some(open) = self.state.open_mut() else {
            return Reply::ok(&done);
        };
        let contexts = &mut open.contexts.list;
        let too_big = query.criteria.is_some() && members.len() > MAX_SORT_CONTEXT;
        if contexts.len() >= MAX_CONTEXTS || too_big || !updatable(&query.key) {
            // As Dovecot: an untagged NO names the refused context, the
            // command itself succeeded.
            self.write(&format!(
                "* NO [NOUPDATE {}] Result not kept up to date\r\n",
                wire::string(tag)
            ));
            return Reply::ok(&done);
        }
        contexts.push(Context {
            tag: tag.to_string(),
            uid,
            query,
            members,
            modseq,
            max_uid,
        });
        Reply::ok(&done)
    }

    /// RFC 5267 4.3: UPDATE with the tag of a live context is a BAD.
    pub(crate) fn context_tag_in_use(&self, tag: &str, ret: Option<&[ReturnOpt]>) -> Option<Reply> {
        let updating = ret.is_some_and(|r| r.contains(&ReturnOpt::Update));
        let open = self.state.open()?;
        (updating && open.contexts.has(tag)).then(|| Reply::bad("Search context tag in use"))
    }

    /// CANCELUPDATE (RFC 5267 4.2).
    pub(crate) fn cancel_update(&mut self, tags: &[String]) -> Reply {
        let Some(open) = self.state.open_mut() else {
            return Reply::bad("No mailbox selected");
        };
        let contexts = &mut open.contexts.list;
        if let Some(t) = tags.iter().find(|t| !contexts.iter().any(|c| &c.tag == *t)) {
            return Reply::bad(&format!("No search context {}", wire::string(t)));
        }
        contexts.retain(|c| !tags.contains(&c.tag));
        Reply::ok("CANCELUPDATE completed")
    }

    /// Brings every search context up to date with the view (just synced)
    /// and queues the ADDTO / REMOVEFROM responses (RFC 5267 4.3).
    pub(crate) async fn update_contexts(&mut self) {
        let Some(open) = self.state.open_mut() else {
            return;
        };
        if open.contexts.is_empty() {
            return;
        }
        let mut list = std::mem::take(&mut open.contexts.list);
        let mut out = String::new();
        for ctx in &mut list {
            self.update_context(ctx, &mut out).await;
        }
        if let Some(open) = self.state.open_mut() {
            // The driver is one command at a time: nothing was added meanwhile.
            open.contexts.list = list;
        }
        self.write(&out);
    }

    async fn update_context(&mut self, ctx: &mut Context, out: &mut String) {
        let Some(open) = self.state.open() else {
            return;
        };
        let view = &open.view;
        let changed: Vec<usize> = view
            .msgs
            .iter()
            .enumerate()
            .filter(|(_, m)| m.meta.modseq > ctx.modseq || m.meta.uid > ctx.max_uid)
            .map(|(i, _)| i)
            .collect();
        let changed_uids: HashSet<Uid> = changed
            .iter()
            .filter_map(|&i| view.msgs.get(i).map(|m| m.meta.uid))
            .collect();
        let present: HashSet<Uid> = view.msgs.iter().map(|m| m.meta.uid).collect();
        let (new_modseq, new_max) = (view.modseq, view.max_uid());
        let mut key = ctx.query.key.clone();
        let hits = if changed.is_empty() {
            Vec::new()
        } else {
            self.evaluate_in(&mut key, Some(&changed)).await
        };
        let Some(open) = self.state.open() else {
            return;
        };
        let view = &open.view;
        let matched: HashSet<Uid> = hits
            .iter()
            .filter_map(|&i| view.msgs.get(i).map(|m| m.meta.uid))
            .collect();
        // Expunged members already left (`before_expunge`).
        let old: Vec<Uid> = ctx
            .members
            .iter()
            .copied()
            .filter(|u| present.contains(u))
            .collect();
        let old_set: HashSet<Uid> = old.iter().copied().collect();
        let mut new_idx: Vec<usize> = old
            .iter()
            .filter(|u| present.contains(u) && !changed_uids.contains(u))
            .chain(matched.iter())
            .filter_map(|&u| view.index_of(u))
            .collect();
        new_idx.sort_unstable();
        new_idx.dedup();
        let new: Vec<Uid> = match &ctx.query.criteria {
            None => new_idx
                .iter()
                .filter_map(|&i| view.msgs.get(i).map(|m| m.meta.uid))
                .collect(),
            Some(criteria) => {
                let criteria = criteria.clone();
                self.sorted_uids(&new_idx, &criteria).await
            }
        };
        let Some(open) = self.state.open() else {
            return;
        };
        let view = &open.view;
        let new_set: HashSet<Uid> = new.iter().copied().collect();
        let sorted = ctx.query.criteria.is_some();
        let uid = ctx.uid;
        let number = |u: Uid| {
            if uid {
                u
            } else {
                view.index_of(u).map(|i| i as u32 + 1).unwrap_or(0)
            }
        };
        let head = ctx.head();
        let gone = removals(&old, &new_set);
        if !gone.is_empty() {
            let runs = if sorted {
                gone
            } else {
                vec![(0, gone.into_iter().flat_map(|(_, u)| u).collect())]
            };
            out.push_str(&format!(
                "{head} REMOVEFROM {}\r\n",
                runs_text(&runs, sorted, &number)
            ));
        }
        let kept: HashSet<Uid> = old_set.intersection(&new_set).copied().collect();
        let added = additions(&kept, &new);
        if !added.is_empty() {
            let runs = if sorted {
                added
            } else {
                vec![(0, added.into_iter().flat_map(|(_, u)| u).collect())]
            };
            out.push_str(&format!(
                "{head} ADDTO {}\r\n",
                runs_text(&runs, sorted, &number)
            ));
        }
        ctx.members = new;
        ctx.modseq = new_modseq;
        ctx.max_uid = new_max;
    }

    /// The UIDs of the view messages `idxs` in the order of `criteria`.
    async fn sorted_uids(&mut self, idxs: &[usize], criteria: &[(bool, SortKey)]) -> Vec<Uid> {
        let Some(open) = self.state.open() else {
            return Vec::new();
        };
        let id = open.view.id;
        let metas: Vec<(usize, crate::store::MessageMeta)> = idxs
            .iter()
            .filter_map(|&i| open.view.msgs.get(i).map(|m| (i, m.meta.clone())))
            .collect();
        let only: Vec<_> = metas.iter().map(|(_, m)| m.clone()).collect();
        let sums = self.summaries(id, &only).await;
        let rows: Vec<_> = metas
            .into_iter()
            .zip(sums)
            .filter_map(|((i, m), s)| s.map(|s| (i, m, s)))
            .collect();
        let mut items: Vec<thread::Item<'_>> = rows
            .iter()
            .map(|(i, m, s)| thread::Item {
                seq: *i as u32 + 1,
                out: m.uid,
                internal_date: m.internal_date,
                size: m.size,
                summary: s,
            })
            .collect();
        thread::sort(&mut items, criteria)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(first: i64, last: i64) -> PartialRange {
        PartialRange { first, last }
    }

    #[test]
    fn rfc9394_3_1_partial_window_from_first_and_from_last() {
        assert_eq!(window(10, r(1, 3)), 0..3);
        assert_eq!(window(10, r(3, 1)), 0..3);
        assert_eq!(window(10, r(8, 20)), 7..10);
        assert_eq!(window(10, r(11, 20)), 10..10);
        assert_eq!(window(10, r(-1, -3)), 7..10);
        assert_eq!(window(10, r(-3, -1)), 7..10);
        assert_eq!(window(10, r(-2, -2)), 8..9);
        assert_eq!(window(10, r(-5, -100)), 0..6);
        assert_eq!(window(10, r(-11, -20)), 0..0);
        assert_eq!(window(0, r(1, 100)), 0..0);
        assert_eq!(window(0, r(-1, -100)), 0..0);
        let max = i64::from(u32::MAX);
        assert_eq!(window(3, r(-1, -max)), 0..3);
        assert_eq!(window(3, r(max, max)), 3..3);
    }

    #[test]
    fn rfc5267_4_3_sort_context_removals_then_additions_rebuild_the_order() {
        let old = vec![5, 1, 9, 7, 3];
        let new = vec![8, 5, 9, 2, 3, 6];
        let new_set: HashSet<Uid> = new.iter().copied().collect();
        let gone = removals(&old, &new_set);
        assert_eq!(gone, vec![(4, vec![7]), (2, vec![1])]);
        let mut list = old.clone();
        for (pos, uids) in &gone {
            for _ in uids {
                list.remove(pos - 1);
            }
        }
        let kept: HashSet<Uid> = list.iter().copied().collect();
        let added = additions(&kept, &new);
        assert_eq!(added, vec![(1, vec![8]), (4, vec![2]), (6, vec![6])]);
        for (pos, uids) in &added {
            for (k, u) in uids.iter().enumerate() {
                list.insert(pos - 1 + k, *u);
            }
        }
        assert_eq!(list, new);
        let text = runs_text(&added, true, &|u| u);
        assert_eq!(text, "(1 8 4 2 6 6)");
        assert_eq!(runs_text(&[(0, vec![9, 3, 4])], false, &|u| u), "(0 3:4,9)");
    }

    #[test]
    fn rfc5267_4_1_keys_that_change_without_the_message_are_not_updatable() {
        assert!(updatable(&Key::And(vec![Key::Unseen, Key::Larger(5)])));
        assert!(!updatable(&Key::Not(Box::new(Key::Younger(60)))));
        assert!(updatable(&Key::SequenceSet(SeqSet::Saved)));
    }
}
