//! Email/query filters and sorts (RFC 8621 4.4) over the account's emails.
//!
//! The text conditions (`text`, `from`, `to`, `cc`, `bcc`, `subject`,
//! `body`, `header`) are IMAP SEARCH keys evaluated by the IMAP search code
//! (`imap::search::matches_at`): one engine, the same decoding and the same
//! answers over IMAP and JMAP. Sorting by `sentAt`, `from`, `to` and
//! `subject` uses the IMAP SORT summaries the store caches.
//!
//! Bounded: a filter is at most `MAX_FILTER_DEPTH` levels and
//! `MAX_FILTER_NODES` conditions (more is `unsupportedFilter`), so the
//! recursive evaluation is shallow whatever a client sends; message bytes
//! are read in runs of `READ_BATCH` and dropped after use.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::index::{has_keyword, Entry, Index};
use super::render::Parsed;
use crate::imap::search::{self, Key, MessageView};
use crate::imap::summary::Summary;
use crate::store::{MailboxId, Store};

pub const MAX_FILTER_DEPTH: usize = 16;
pub const MAX_FILTER_NODES: usize = 256;
/// Messages read at once while evaluating conditions on their bytes.
const READ_BATCH: usize = 64;

/// A filter (RFC 8620 5.5 FilterOperator / FilterCondition).
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Vec<Filter>),
    /// A FilterCondition: all of its properties must hold.
    Cond(Vec<Cond>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// None: an id that names no mailbox of the account (matches nothing).
    InMailbox(Option<MailboxId>),
    InMailboxOtherThan(Vec<MailboxId>),
    Before(i64),
    After(i64),
    MinSize(u64),
    MaxSize(u64),
    AllInThreadHaveKeyword(String),
    SomeInThreadHaveKeyword(String),
    NoneInThreadHaveKeyword(String),
    HasKeyword(String),
    NotKeyword(String),
    HasAttachment(bool),
    /// text/from/to/cc/bcc/subject/body/header, as an IMAP SEARCH key.
    Search(Key),
}

/// Why a filter or sort is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    UnsupportedFilter(String),
    UnsupportedSort(String),
    InvalidArguments(String),
}

/// Parses a UTCDate (RFC 8620 1.4) to Unix seconds.
pub fn parse_utc_date(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.timestamp())
}

/// Parses a filter; `mailbox` turns a JMAP mailbox id into the store's.
pub fn parse_filter(
    v: &Value,
    mailbox: &dyn Fn(&str) -> Option<MailboxId>,
) -> Result<Filter, QueryError> {
    let mut nodes = 0;
    parse_node(v, mailbox, 0, &mut nodes)
}

fn parse_node(
    v: &Value,
    mailbox: &dyn Fn(&str) -> Option<MailboxId>,
    depth: usize,
    nodes: &mut usize,
) -> Result<Filter, QueryError> {
    *nodes += 1;
    if depth > MAX_FILTER_DEPTH || *nodes > MAX_FILTER_NODES {
        return Err(QueryError::UnsupportedFilter(
            "filter too deep or too large".into(),
        ));
    }
    let Some(obj) = v.as_object() else {
        return Err(QueryError::InvalidArguments(
            "filter must be an object".into(),
        ));
    };
    if let Some(op) = obj.get("operator") {
        let conds = obj
            .get("conditions")
            .and_then(Value::as_array)
            .ok_or_else(|| QueryError::InvalidArguments("conditions must be an array".into()))?;
        if obj.len() != 2 {
            return Err(QueryError::InvalidArguments(
                "a FilterOperator has operator and conditions only".into(),
            ));
        }
        let list = conds
            .iter()
            .map(|c| parse_node(c, mailbox, depth + 1, nodes))
            .collect::<Result<Vec<_>, _>>()?;
        return match op.as_str() {
            Some("AND") => Ok(Filter::And(list)),
            Some("OR") => Ok(Filter::Or(list)),
            Some("NOT") => Ok(Filter::Not(list)),
            _ => Err(QueryError::UnsupportedFilter(format!("operator {op}"))),
        };
    }
    let mut out = Vec::new();
    for (k, v) in obj {
        out.push(parse_cond(k, v, mailbox)?);
    }
    Ok(Filter::Cond(out))
}

fn parse_cond(
    k: &str,
    v: &Value,
    mailbox: &dyn Fn(&str) -> Option<MailboxId>,
) -> Result<Cond, QueryError> {
    let bad = || QueryError::InvalidArguments(format!("bad value for filter {k}"));
    let s = || v.as_str().ok_or_else(bad);
    let n = || v.as_u64().ok_or_else(bad);
    let kw = || -> Result<String, QueryError> {
        let s = v.as_str().ok_or_else(bad)?;
        if !super::index::valid_keyword(s) {
            return Err(bad());
        }
        Ok(s.to_ascii_lowercase())
    };
    let text = |field: Option<&[u8]>| -> Result<Cond, QueryError> {
        let t = s()?.as_bytes().to_vec();
        Ok(Cond::Search(match field {
            Some(f) => Key::Header(f.to_vec(), t),
            None if k == "body" => Key::Body(t),
            None => Key::Text(t),
        }))
    };
    Ok(match k {
        "inMailbox" => Cond::InMailbox(mailbox(s()?)),
        "inMailboxOtherThan" => {
            let ids = v.as_array().ok_or_else(bad)?;
            let mut out = Vec::new();
            for id in ids {
                if let Some(m) = mailbox(id.as_str().ok_or_else(bad)?) {
                    out.push(m);
                }
            }
            Cond::InMailboxOtherThan(out)
        }
        "before" => Cond::Before(parse_utc_date(s()?).ok_or_else(bad)?),
        "after" => Cond::After(parse_utc_date(s()?).ok_or_else(bad)?),
        "minSize" => Cond::MinSize(n()?),
        "maxSize" => Cond::MaxSize(n()?),
        "allInThreadHaveKeyword" => Cond::AllInThreadHaveKeyword(kw()?),
        "someInThreadHaveKeyword" => Cond::SomeInThreadHaveKeyword(kw()?),
        "noneInThreadHaveKeyword" => Cond::NoneInThreadHaveKeyword(kw()?),
        "hasKeyword" => Cond::HasKeyword(kw()?),
        "notKeyword" => Cond::NotKeyword(kw()?),
        "hasAttachment" => Cond::HasAttachment(v.as_bool().ok_or_else(bad)?),
        "text" | "body" => text(None)?,
        "from" => text(Some(b"From"))?,
        "to" => text(Some(b"To"))?,
        "cc" => text(Some(b"Cc"))?,
        "bcc" => text(Some(b"Bcc"))?,
        "subject" => text(Some(b"Subject"))?,
        "header" => {
            let a = v.as_array().ok_or_else(bad)?;
            let name = a.first().and_then(Value::as_str).ok_or_else(bad)?;
            if a.len() > 2
                || name.is_empty()
                || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
            {
                return Err(bad());
            }
            let value = match a.get(1) {
                Some(v) => v.as_str().ok_or_else(bad)?,
                None => "",
            };
            Cond::Search(Key::Header(
                name.as_bytes().to_vec(),
                value.as_bytes().to_vec(),
            ))
        }
        other => return Err(QueryError::UnsupportedFilter(other.to_string())),
    })
}

impl Filter {
    /// Does evaluating the filter need the message bytes?
    pub fn needs_bytes(&self) -> bool {
        match self {
            Filter::And(l) | Filter::Or(l) | Filter::Not(l) => l.iter().any(Filter::needs_bytes),
            Filter::Cond(c) => c
                .iter()
                .any(|c| matches!(c, Cond::Search(_) | Cond::HasAttachment(_))),
        }
    }

    /// Does the result of an email depend on other emails (its thread)?
    pub fn uses_threads(&self) -> bool {
        match self {
            Filter::And(l) | Filter::Or(l) | Filter::Not(l) => l.iter().any(Filter::uses_threads),
            Filter::Cond(c) => c.iter().any(|c| {
                matches!(
                    c,
                    Cond::AllInThreadHaveKeyword(_)
                        | Cond::SomeInThreadHaveKeyword(_)
                        | Cond::NoneInThreadHaveKeyword(_)
                )
            }),
        }
    }

    /// The search text of the filter's text conditions (for snippets).
    pub fn search_terms(&self, out: &mut Vec<(String, String)>) {
        match self {
            Filter::And(l) | Filter::Or(l) => l.iter().for_each(|f| f.search_terms(out)),
            Filter::Not(_) => {}
            Filter::Cond(c) => {
                for c in c {
                    if let Cond::Search(k) = c {
                        let (field, t) = match k {
                            Key::Text(t) => ("text", t),
                            Key::Body(t) => ("body", t),
                            Key::Header(f, t) if f.eq_ignore_ascii_case(b"Subject") => {
                                ("subject", t)
                            }
                            _ => continue,
                        };
                        out.push((field.into(), String::from_utf8_lossy(t).into_owned()));
                    }
                }
            }
        }
    }
}

/// What evaluation needs besides the email itself.
pub struct EvalCtx<'a> {
    pub index: &'a Index,
    pub threads: &'a HashMap<u64, Vec<u64>>,
    pub now: i64,
}

impl EvalCtx<'_> {
    fn thread_keyword(&self, e: &Entry, k: &str) -> (usize, usize) {
        let t = self.index.thread_of(e);
        let members = self.threads.get(&t).map(Vec::as_slice).unwrap_or_default();
        let with = members
            .iter()
            .filter(|id| self.index.emails.get(id).is_some_and(|m| m.has_keyword(k)))
            .count();
        (with, members.len())
    }
}

/// Does `e` match `f`? `bytes` is the message (None if unreadable or not
/// loaded: byte conditions then do not match).
pub fn matches(f: &Filter, e: &Entry, ctx: &EvalCtx<'_>, bytes: Option<&Arc<Vec<u8>>>) -> bool {
    match f {
        Filter::And(l) => l.iter().all(|f| matches(f, e, ctx, bytes)),
        Filter::Or(l) => l.iter().any(|f| matches(f, e, ctx, bytes)),
        Filter::Not(l) => !l.iter().any(|f| matches(f, e, ctx, bytes)),
        Filter::Cond(c) => c.iter().all(|c| cond(c, e, ctx, bytes)),
    }
}

fn cond(c: &Cond, e: &Entry, ctx: &EvalCtx<'_>, bytes: Option<&Arc<Vec<u8>>>) -> bool {
    match c {
        Cond::InMailbox(m) => m.is_some_and(|m| e.in_mailbox(m)),
        Cond::InMailboxOtherThan(l) => e.locs.iter().any(|loc| !l.contains(&loc.mailbox)),
        Cond::Before(t) => e.received_at() < *t,
        Cond::After(t) => e.received_at() >= *t,
        Cond::MinSize(n) => e.size() >= *n,
        Cond::MaxSize(n) => e.size() < *n,
        Cond::HasKeyword(k) => e.has_keyword(k),
        Cond::NotKeyword(k) => !e.has_keyword(k),
        Cond::AllInThreadHaveKeyword(k) => {
            let (with, all) = ctx.thread_keyword(e, k);
            with == all
        }
        Cond::SomeInThreadHaveKeyword(k) => ctx.thread_keyword(e, k).0 > 0,
        Cond::NoneInThreadHaveKeyword(k) => ctx.thread_keyword(e, k).0 == 0,
        Cond::HasAttachment(want) => match bytes {
            Some(b) => Parsed::new(b).has_attachment() == *want,
            None => false,
        },
        Cond::Search(key) => {
            let loc = e.first();
            let flags = e.flags();
            let view = MessageView {
                seq: 1,
                uid: loc.meta.uid,
                flags: &flags,
                recent: false,
                internal_date: loc.meta.internal_date,
                tz_offset_min: loc.meta.tz_offset_min,
                size: loc.meta.size,
                modseq: loc.meta.modseq,
                save_date: loc.meta.save_date,
                email_id: "",
                thread_id: None,
            };
            let mut load = || bytes.cloned();
            search::matches_at(key, &view, 1, loc.meta.uid, ctx.now, &mut load)
        }
    }
}

/// The emails of `index` that match `filter` (None: all), in id order.
pub async fn filter_emails<'i>(
    store: &Store,
    index: &'i Index,
    filter: Option<&Filter>,
) -> Vec<&'i Entry> {
    let Some(f) = filter else {
        return index.emails.values().collect();
    };
    let threads = if f.uses_threads() {
        index.threads()
    } else {
        HashMap::new()
    };
    let ctx = EvalCtx {
        index,
        threads: &threads,
        now: chrono::Utc::now().timestamp(),
    };
    let all: Vec<&Entry> = index.emails.values().collect();
    if !f.needs_bytes() {
        return all
            .into_iter()
            .filter(|e| matches(f, e, &ctx, None))
            .collect();
    }
    let mut out = Vec::new();
    for chunk in all.chunks(READ_BATCH) {
        let mut loaded = Vec::with_capacity(chunk.len());
        for e in chunk {
            let loc = e.first();
            loaded.push(store.read(loc.mailbox, &loc.meta).await.ok().map(Arc::new));
        }
        for (e, b) in chunk.iter().zip(&loaded) {
            let hit = crate::imap::mime::contained("jmap query", e.first().meta.uid, || {
                matches(f, e, &ctx, b.as_ref())
            });
            if hit == Some(true) {
                out.push(*e);
            }
        }
    }
    out
}

/// One sort comparator (RFC 8621 4.4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparator {
    pub property: SortBy,
    pub ascending: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SortBy {
    ReceivedAt,
    SentAt,
    Size,
    From,
    To,
    Subject,
    HasKeyword(String),
    AllInThreadHaveKeyword(String),
    SomeInThreadHaveKeyword(String),
}

impl SortBy {
    fn needs_summary(&self) -> bool {
        matches!(
            self,
            SortBy::SentAt | SortBy::From | SortBy::To | SortBy::Subject
        )
    }
}

pub fn parse_sort(v: &Value) -> Result<Vec<Comparator>, QueryError> {
    let Some(list) = v.as_array() else {
        return Err(QueryError::InvalidArguments("sort must be an array".into()));
    };
    if list.len() > 16 {
        return Err(QueryError::UnsupportedSort("too many comparators".into()));
    }
    let mut out = Vec::new();
    for c in list {
        let o: &Map<String, Value> = c
            .as_object()
            .ok_or_else(|| QueryError::InvalidArguments("comparator must be an object".into()))?;
        let prop = o
            .get("property")
            .and_then(Value::as_str)
            .ok_or_else(|| QueryError::InvalidArguments("comparator needs a property".into()))?;
        let ascending = match o.get("isAscending") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            _ => return Err(QueryError::InvalidArguments("isAscending".into())),
        };
        if let Some(c) = o.get("collation").and_then(Value::as_str) {
            if !matches!(
                c,
                "i;ascii-casemap" | "i;unicode-casemap" | "i;ascii-numeric" | "i;octet"
            ) {
                return Err(QueryError::UnsupportedSort(format!("collation {c}")));
            }
        }
        let kw = || -> Result<String, QueryError> {
            o.get("keyword")
                .and_then(Value::as_str)
                .filter(|k| super::index::valid_keyword(k))
                .map(str::to_ascii_lowercase)
                .ok_or_else(|| QueryError::InvalidArguments("keyword".into()))
        };
        let property = match prop {
            "receivedAt" => SortBy::ReceivedAt,
            "sentAt" => SortBy::SentAt,
            "size" => SortBy::Size,
            "from" => SortBy::From,
            "to" => SortBy::To,
            "subject" => SortBy::Subject,
            "hasKeyword" => SortBy::HasKeyword(kw()?),
            "allInThreadHaveKeyword" => SortBy::AllInThreadHaveKeyword(kw()?),
            "someInThreadHaveKeyword" => SortBy::SomeInThreadHaveKeyword(kw()?),
            other => return Err(QueryError::UnsupportedSort(other.to_string())),
        };
        out.push(Comparator {
            property,
            ascending,
        });
    }
    Ok(out)
}

/// Sort keys of one email.
#[derive(Debug, Clone, Default)]
struct Keys {
    sent: i64,
    from: String,
    to: String,
    subject: String,
}

/// Summaries (sort keys) of the first copy of each email: cached by the
/// store, else computed and cached (as IMAP SORT does).
async fn sort_keys(store: &Store, emails: &[&Entry]) -> HashMap<u64, Keys> {
    let mut by_mailbox: HashMap<MailboxId, Vec<&Entry>> = HashMap::new();
    for e in emails {
        by_mailbox.entry(e.first().mailbox).or_default().push(e);
    }
    let mut out = HashMap::new();
    for (mb, mut list) in by_mailbox {
        list.sort_by_key(|e| e.first().meta.uid);
        for chunk in list.chunks(256) {
            let uids = chunk.iter().map(|e| e.first().meta.uid).collect();
            let cached = store
                .summaries(mb, uids)
                .await
                .unwrap_or_else(|_| vec![None; chunk.len()]);
            let mut fresh = Vec::new();
            for (e, c) in chunk.iter().zip(cached) {
                let s = match c.as_deref().and_then(Summary::keys_from_bytes) {
                    Some(s) => Some(s),
                    None => match store.read(mb, &e.first().meta).await {
                        Ok(bytes) => {
                            let s =
                                crate::imap::mime::contained("summary", e.first().meta.uid, || {
                                    Summary::compute(&bytes)
                                });
                            if let Some(s) = &s {
                                fresh.push((e.first().meta.uid, s.to_bytes()));
                            }
                            s
                        }
                        Err(_) => None,
                    },
                };
                let k = s
                    .map(|s| Keys {
                        sent: s.sent.unwrap_or(e.received_at()),
                        from: s.display_from.to_lowercase(),
                        to: s.display_to.to_lowercase(),
                        subject: s.subject.to_lowercase(),
                    })
                    .unwrap_or_default();
                out.insert(e.id, k);
            }
            if !fresh.is_empty() {
                let _ = store.put_summaries(mb, fresh).await;
            }
        }
    }
    out
}

/// Sorts `emails` by `sort` (empty: receivedAt descending); ties by id.
pub async fn sort_emails(store: &Store, index: &Index, emails: &mut [&Entry], sort: &[Comparator]) {
    let default = [Comparator {
        property: SortBy::ReceivedAt,
        ascending: false,
    }];
    let sort = if sort.is_empty() { &default[..] } else { sort };
    let keys = if sort.iter().any(|c| c.property.needs_summary()) {
        sort_keys(store, emails).await
    } else {
        HashMap::new()
    };
    let threads = if sort.iter().any(|c| {
        matches!(
            c.property,
            SortBy::AllInThreadHaveKeyword(_) | SortBy::SomeInThreadHaveKeyword(_)
        )
    }) {
        index.threads()
    } else {
        HashMap::new()
    };
    let ctx = EvalCtx {
        index,
        threads: &threads,
        now: 0,
    };
    let empty = Keys::default();
    let cmp_one = |c: &Comparator, a: &Entry, b: &Entry| -> Ordering {
        let ka = keys.get(&a.id).unwrap_or(&empty);
        let kb = keys.get(&b.id).unwrap_or(&empty);
        let o = match &c.property {
            SortBy::ReceivedAt => a.received_at().cmp(&b.received_at()),
            SortBy::SentAt => ka.sent.cmp(&kb.sent),
            SortBy::Size => a.size().cmp(&b.size()),
            SortBy::From => ka.from.cmp(&kb.from),
            SortBy::To => ka.to.cmp(&kb.to),
            SortBy::Subject => ka.subject.cmp(&kb.subject),
            SortBy::HasKeyword(k) => has_keyword(&a.flags(), k).cmp(&has_keyword(&b.flags(), k)),
            SortBy::AllInThreadHaveKeyword(k) => {
                let all = |e: &Entry| {
                    let (w, n) = ctx.thread_keyword(e, k);
                    w == n
                };
                all(a).cmp(&all(b))
            }
            SortBy::SomeInThreadHaveKeyword(k) => {
                let some = |e: &Entry| ctx.thread_keyword(e, k).0 > 0;
                some(a).cmp(&some(b))
            }
        };
        if c.ascending {
            o
        } else {
            o.reverse()
        }
    };
    emails.sort_by(|a, b| {
        for c in sort {
            let o = cmp_one(c, a, b);
            if o != Ordering::Equal {
                return o;
            }
        }
        a.id.cmp(&b.id)
    });
}

/// Keeps the first email of each thread (collapseThreads).
pub fn collapse_threads<'i>(index: &Index, emails: Vec<&'i Entry>) -> Vec<&'i Entry> {
    let mut seen = std::collections::HashSet::new();
    emails
        .into_iter()
        .filter(|e| seen.insert(index.thread_of(e)))
        .collect()
}

/// The window of a query result (RFC 8620 5.5): (start, end) into a list
/// of `total`, from position or anchor; `Err` when the anchor is not there.
#[allow(clippy::result_unit_err)]
pub fn window(
    ids: &[u64],
    position: i64,
    anchor: Option<u64>,
    anchor_offset: i64,
    limit: Option<usize>,
) -> Result<(usize, usize), ()> {
    let total = ids.len() as i64;
    let start = match anchor {
        Some(a) => {
            let i = ids.iter().position(|&x| x == a).ok_or(())? as i64;
            (i + anchor_offset).max(0)
        }
        None if position < 0 => (total + position).max(0),
        None => position,
    };
    let start = start.min(total) as usize;
    let end = match limit {
        Some(l) => (start + l).min(ids.len()),
        None => ids.len(),
    };
    Ok((start, end))
}

#[cfg(test)]
mod tests;

// ---------------------------------------------------------------------------
// The methods
// ---------------------------------------------------------------------------

use crate::jmap::ids::{email_id, parse_email_id, parse_mailbox_id};
use crate::jmap::methods::{parse_state, state_string};
use crate::jmap::{Ctx, MethodError};
use crate::store::JmapKind;

/// Most ids one Email/query answers (advertised as the `limit` it used
/// when the client asked for more or for none).
pub const MAX_QUERY_LIMIT: usize = 1000;

impl From<QueryError> for MethodError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::UnsupportedFilter(d) => MethodError::UnsupportedFilter(d),
            QueryError::UnsupportedSort(d) => MethodError::UnsupportedSort(d),
            QueryError::InvalidArguments(d) => MethodError::InvalidArguments(d),
        }
    }
}

/// filter, sort and collapseThreads of Email/query and queryChanges.
struct Spec {
    filter: Option<Filter>,
    sort: Vec<Comparator>,
    collapse: bool,
}

impl Spec {
    fn parse(args: &Map<String, Value>) -> Result<Spec, MethodError> {
        let filter = match args.get("filter") {
            None | Some(Value::Null) => None,
            Some(f) => Some(parse_filter(f, &parse_mailbox_id)?),
        };
        let sort = match args.get("sort") {
            None | Some(Value::Null) => Vec::new(),
            Some(s) => parse_sort(s)?,
        };
        let collapse = match args.get("collapseThreads") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            _ => return Err(MethodError::invalid("collapseThreads must be a boolean")),
        };
        Ok(Spec {
            filter,
            sort,
            collapse,
        })
    }

    /// Can a later queryChanges be computed from the journal? Not when an
    /// email's place depends on other emails (threads).
    fn can_calculate_changes(&self) -> bool {
        !self.collapse
            && !self.filter.as_ref().is_some_and(Filter::uses_threads)
            && !self.sort.iter().any(|c| {
                matches!(
                    c.property,
                    SortBy::AllInThreadHaveKeyword(_) | SortBy::SomeInThreadHaveKeyword(_)
                )
            })
    }

    /// The full result, in order.
    async fn run(&self, ctx: &Ctx) -> Result<Vec<u64>, MethodError> {
        let index = Index::load(ctx.store(), &ctx.user).await?;
        let mut hits = filter_emails(ctx.store(), &index, self.filter.as_ref()).await;
        sort_emails(ctx.store(), &index, &mut hits, &self.sort).await;
        if self.collapse {
            hits = collapse_threads(&index, hits);
        }
        Ok(hits.iter().map(|e| e.id).collect())
    }
}

fn int_arg(args: &Map<String, Value>, k: &str) -> Result<Option<i64>, MethodError> {
    match args.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| MethodError::invalid(format!("{k} must be an integer"))),
    }
}

/// Email/query (RFC 8621 4.4, RFC 8620 5.5).
pub async fn query(ctx: &mut Ctx, args: Map<String, Value>) -> Result<Value, MethodError> {
    let spec = Spec::parse(&args)?;
    let position = int_arg(&args, "position")?.unwrap_or(0);
    let anchor_offset = int_arg(&args, "anchorOffset")?.unwrap_or(0);
    let limit = match int_arg(&args, "limit")? {
        Some(l) if l < 0 => return Err(MethodError::invalid("limit must not be negative")),
        Some(l) => Some(l as u64),
        None => None,
    };
    let anchor = match args.get("anchor") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(parse_email_id(s).ok_or(MethodError::AnchorNotFound)?),
        Some(_) => return Err(MethodError::invalid("anchor must be an id")),
    };
    let total_wanted = matches!(args.get("calculateTotal"), Some(Value::Bool(true)));
    let state = ctx.store().jmap_state(&ctx.user, JmapKind::Email).await?;
    let ids = spec.run(ctx).await?;
    let capped = limit.is_none_or(|l| l > MAX_QUERY_LIMIT as u64);
    let effective = limit.map_or(MAX_QUERY_LIMIT, |l| (l as usize).min(MAX_QUERY_LIMIT));
    let (start, end) = window(&ids, position, anchor, anchor_offset, Some(effective))
        .map_err(|_| MethodError::AnchorNotFound)?;
    let mut out = Map::new();
    out.insert("accountId".into(), json!(ctx.account_id));
    out.insert("queryState".into(), json!(state_string(state)));
    out.insert(
        "canCalculateChanges".into(),
        json!(spec.can_calculate_changes()),
    );
    out.insert("position".into(), json!(start));
    out.insert(
        "ids".into(),
        Value::Array(
            ids[start..end]
                .iter()
                .map(|&i| json!(email_id(i)))
                .collect(),
        ),
    );
    if total_wanted {
        out.insert("total".into(), json!(ids.len()));
    }
    if capped && ids.len() - start > MAX_QUERY_LIMIT {
        out.insert("limit".into(), json!(MAX_QUERY_LIMIT));
    }
    Ok(Value::Object(out))
}

/// Email/queryChanges (RFC 8620 5.6): every email changed since the old
/// state is reported removed, and added again at its index if it is in
/// the results now; unchanged emails keep their relative order, so the
/// client's splice gives the new results. Queries whose results depend
/// on threads answer `cannotCalculateChanges`.
pub async fn query_changes(ctx: &mut Ctx, args: Map<String, Value>) -> Result<Value, MethodError> {
    let spec = Spec::parse(&args)?;
    let since = args
        .get("sinceQueryState")
        .and_then(Value::as_str)
        .ok_or_else(|| MethodError::invalid("sinceQueryState is required"))?;
    let max_changes = match int_arg(&args, "maxChanges")? {
        Some(n) if n <= 0 => return Err(MethodError::invalid("maxChanges must be positive")),
        n => n.map(|n| n as usize),
    };
    let total_wanted = matches!(args.get("calculateTotal"), Some(Value::Bool(true)));
    if !spec.can_calculate_changes() {
        return Err(MethodError::CannotCalculateChanges);
    }
    let since = parse_state(since).ok_or(MethodError::CannotCalculateChanges)?;
    let c = super::super::methods::query_changes_since(ctx, JmapKind::Email, since).await?;
    let ids = spec.run(ctx).await?;
    let (removed, added) = super::super::methods::splice(&c, &ids, email_id, max_changes)?;
    let mut out = Map::new();
    out.insert("accountId".into(), json!(ctx.account_id));
    out.insert("oldQueryState".into(), json!(state_string(c.old_state)));
    out.insert("newQueryState".into(), json!(state_string(c.new_state)));
    out.insert("removed".into(), Value::Array(removed));
    out.insert("added".into(), Value::Array(added));
    if total_wanted {
        out.insert("total".into(), json!(ids.len()));
    }
    Ok(Value::Object(out))
}
