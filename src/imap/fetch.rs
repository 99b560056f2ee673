//! FETCH (RFC 9051 6.4.5, 7.5.2) with BINARY (RFC 3516), MODSEQ and
//! CHANGEDSINCE/VANISHED (RFC 7162), EMAILID/THREADID (RFC 8474; THREADID
//! from the store's thread index), SAVEDATE (RFC 8514) and PREVIEW (RFC
//! 8970; text from `preview`, cached in the store like the summaries).
//!
//! Metadata items (FLAGS, UID, INTERNALDATE, RFC822.SIZE, MODSEQ) come from
//! the session's view; ENVELOPE, BODY and BODYSTRUCTURE from the store's
//! summary cache (computed on first need); a message file is read only when
//! an item needs its bytes, one message at a time, and each response is
//! written as soon as it is built.
//!
//! Content goes out as a literal, `{0}` for an empty part; content with NUL
//! bytes (BINARY, or BODY of a part appended with a literal8) as a literal8
//! `~{n}` (RFC 3516 4.2, 4.3), as Dovecot and Cyrus send it.

use std::cell::OnceCell;
use std::io;
use std::num::NonZeroU32;

use imap_codec::encode::Encoder;
use imap_codec::ResponseCodec;
use imap_types::core::{IString, Literal, NString, Vec1};
use imap_types::fetch::{MessageDataItem, MessageDataItemName, Section};
use imap_types::response::{Data, Response};
use tracing::{debug, warn};

use crate::store::{FlagOp, Flags, MessageMeta, StoreError, Uid};

use super::messages::{ReadAhead, FETCH_READ_BYTES};

use super::command::{FetchExtra, SeqSet};
use super::selected::Msg;
use super::session::{Reply, Session};
use super::summary::Summary;
use super::{mime, preview, wire};

/// Does this item need the message's bytes?
/// (ENVELOPE, BODY and BODYSTRUCTURE come from the summary cache.)
pub fn needs_file(item: &MessageDataItemName<'_>) -> bool {
    matches!(
        item,
        MessageDataItemName::BodyExt { .. }
            | MessageDataItemName::Rfc822
            | MessageDataItemName::Rfc822Header
            | MessageDataItemName::Rfc822Text
            | MessageDataItemName::Binary { .. }
            | MessageDataItemName::BinarySize { .. }
    )
}

/// Does fetching this item set \Seen (RFC 3501 6.4.5)?
pub fn sets_seen(item: &MessageDataItemName<'_>) -> bool {
    matches!(
        item,
        MessageDataItemName::BodyExt { peek: false, .. }
            | MessageDataItemName::Binary { peek: false, .. }
            | MessageDataItemName::Rfc822
            | MessageDataItemName::Rfc822Text
    )
}

fn nstring(data: Vec<u8>) -> NString<'static> {
    NString(Some(IString::Literal(Literal::unvalidated(data))))
}

/// Bytes `origin .. origin+len` of `data` (RFC 3501 6.4.5 partial fetch).
fn partial(data: Vec<u8>, p: Option<(u32, NonZeroU32)>) -> Vec<u8> {
    match p {
        None => data,
        Some((origin, len)) => {
            let start = (origin as usize).min(data.len());
            let end = start.saturating_add(len.get() as usize).min(data.len());
            data.get(start..end).map(<[u8]>::to_vec).unwrap_or_default()
        }
    }
}

/// A content item (BODY[...], RFC822...) holding `data`. A literal cannot
/// carry NUL (RFC 9051 4.3): such content, e.g. a part appended with a
/// literal8 (RFC 3516 4.3), goes to `raw` as the item's name and a literal8
/// `~{n}`, the form Dovecot and Cyrus send; `None` then.
fn content_item(
    make: impl Fn(NString<'static>) -> MessageDataItem<'static>,
    data: Vec<u8>,
    raw: &mut Vec<Vec<u8>>,
) -> Option<MessageDataItem<'static>> {
    if !data.contains(&0) {
        return Some(make(nstring(data)));
    }
    // The item's name as imap-codec writes it (section, origin).
    let named = encode(1, vec![make(NString(None))])?;
    let name = named
        .strip_prefix(b"* 1 FETCH (")?
        .strip_suffix(b" NIL)\r\n")?;
    let mut r = name.to_vec();
    r.push(b' ');
    r.extend(literal8(&data));
    raw.push(r);
    None
}

/// Builds the data items of one message. `data` holds the message's bytes
/// when any item needs them; `add_flags` appends FLAGS (after an implicit
/// \Seen) when they were not asked for. Content with NUL bytes comes back
/// in the second list, as raw items (`content_item`).
pub fn items(
    names: &[MessageDataItemName<'_>],
    msg: &Msg,
    data: Option<&[u8]>,
    add_flags: bool,
) -> (Vec<MessageDataItem<'static>>, Vec<Vec<u8>>) {
    let mut raw = Vec::new();
    let meta = &msg.meta;
    let bytes = data.unwrap_or_default();
    // Parsed once, on first need, for all the items that need structure.
    let parsed: OnceCell<mime::ParsedMessage<'_>> = OnceCell::new();
    let pm = || parsed.get_or_init(|| mime::ParsedMessage::new(bytes));
    let mut out = Vec::with_capacity(names.len() + 1);
    for name in names {
        let item = match name {
            MessageDataItemName::Flags => {
                MessageDataItem::Flags(wire::flag_fetch(&meta.flags, msg.recent))
            }
            MessageDataItemName::Uid => match NonZeroU32::new(meta.uid) {
                Some(u) => MessageDataItem::Uid(u),
                None => continue,
            },
            MessageDataItemName::InternalDate => MessageDataItem::InternalDate(wire::date_time(
                meta.internal_date,
                meta.tz_offset_min,
            )),
            MessageDataItemName::Rfc822Size => {
                MessageDataItem::Rfc822Size(u32::try_from(meta.size).unwrap_or(u32::MAX))
            }
            MessageDataItemName::Envelope => MessageDataItem::Envelope(mime::envelope(bytes)),
            MessageDataItemName::Body => MessageDataItem::Body(pm().body_structure(false)),
            MessageDataItemName::BodyStructure => {
                MessageDataItem::BodyStructure(pm().body_structure(true))
            }
            MessageDataItemName::Rfc822 => {
                match content_item(MessageDataItem::Rfc822, bytes.to_vec(), &mut raw) {
                    Some(i) => i,
                    None => continue,
                }
            }
            MessageDataItemName::Rfc822Header => match content_item(
                MessageDataItem::Rfc822Header,
                mime::section(bytes, Some(&Section::Header(None))),
                &mut raw,
            ) {
                Some(i) => i,
                None => continue,
            },
            MessageDataItemName::Rfc822Text => match content_item(
                MessageDataItem::Rfc822Text,
                mime::section(bytes, Some(&Section::Text(None))),
                &mut raw,
            ) {
                Some(i) => i,
                None => continue,
            },
            MessageDataItemName::BodyExt {
                section,
                partial: p,
                ..
            } => {
                // Top-level header/text sections need no MIME parse.
                let content = match section {
                    None
                    | Some(Section::Header(None))
                    | Some(Section::Text(None))
                    | Some(Section::HeaderFields(None, _))
                    | Some(Section::HeaderFieldsNot(None, _)) => {
                        mime::section(bytes, section.as_ref())
                    }
                    Some(s) => pm().section(Some(s)),
                };
                let body = partial(content, *p);
                let section = section.clone().map(imap_types::IntoStatic::into_static);
                let origin = p.map(|(o, _)| o);
                let make = |data| MessageDataItem::BodyExt {
                    section: section.clone(),
                    origin,
                    data,
                };
                match content_item(make, body, &mut raw) {
                    Some(i) => i,
                    None => continue,
                }
            }
            // Written as raw items by the session.
            MessageDataItemName::Binary { .. }
            | MessageDataItemName::BinarySize { .. }
            | MessageDataItemName::ModSeq => continue,
        };
        out.push(item);
    }
    if add_flags {
        out.push(MessageDataItem::Flags(wire::flag_fetch(
            &meta.flags,
            msg.recent,
        )));
    }
    (out, raw)
}

/// One `* n FETCH (...)` response, encoded.
pub fn encode(seq: u32, items: Vec<MessageDataItem<'static>>) -> Option<Vec<u8>> {
    let seq = NonZeroU32::new(seq)?;
    let items = Vec1::try_from(items).ok()?;
    let resp = Response::Data(Data::Fetch { seq, items });
    Some(ResponseCodec::default().encode(&resp).dump())
}

/// A FETCH response from imap-types items plus items written as raw text
/// (cached ENVELOPE/BODY/BODYSTRUCTURE, BINARY, MODSEQ, EMAILID, ...).
pub fn encode_with(seq: u32, std: Vec<MessageDataItem<'static>>, raw: &[Vec<u8>]) -> Vec<u8> {
    let mut out = if std.is_empty() {
        format!("* {seq} FETCH (").into_bytes()
    } else {
        match encode(seq, std) {
            Some(mut b) => {
                // Drop ")\r\n" to append the raw items.
                b.truncate(b.len().saturating_sub(3));
                if !raw.is_empty() {
                    b.push(b' ');
                }
                b
            }
            None => format!("* {seq} FETCH (").into_bytes(),
        }
    };
    for (i, r) in raw.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(r);
    }
    out.extend_from_slice(b")\r\n");
    out
}

/// `{n}` or, for data with NUL bytes, `~{n}` (RFC 3516 4.2) and the data.
fn literal8(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 16);
    if data.contains(&0) {
        out.push(b'~');
    }
    out.extend_from_slice(format!("{{{}}}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out
}

fn part_spec(section: &[NonZeroU32]) -> String {
    section
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(".")
}

/// THREADIDs (RFC 8474 5.2) of `uids` from the store's thread index
/// (0 where unknown: reported as NIL).
pub(crate) async fn thread_ids(
    store: &crate::store::Store,
    id: crate::store::MailboxId,
    uids: Vec<Uid>,
) -> Vec<u64> {
    match store.thread_ids(id, uids).await {
        Ok(v) => v,
        Err(e) => {
            warn!(error = %e, "reading thread ids failed");
            Vec::new()
        }
    }
}

/// Most previews one `PREVIEW (LAZY)` FETCH computes (RFC 8970 3.2): the
/// others answer NIL until a later FETCH finds them cached.
const LAZY_PREVIEWS: usize = 32;

/// PREVIEW texts (RFC 8970) of `metas`, in order: from the store's cache,
/// else computed from the message file and cached. With `lazy` at most
/// `LAZY_PREVIEWS` are computed per call, the rest are None (NIL).
async fn previews(
    store: &crate::store::Store,
    id: crate::store::MailboxId,
    metas: &[&MessageMeta],
    lazy: bool,
) -> Vec<Option<String>> {
    let uids = metas.iter().map(|m| m.uid).collect();
    let mut out = store.previews(id, uids).await.unwrap_or_default();
    out.resize(metas.len(), None);
    let mut fresh = Vec::new();
    for (slot, meta) in out.iter_mut().zip(metas) {
        if slot.is_some() {
            continue;
        }
        if lazy && fresh.len() >= LAZY_PREVIEWS {
            continue;
        }
        let Ok(data) = store.read(id, meta).await else {
            continue;
        };
        if let Some(p) = mime::contained("preview", meta.uid, || preview::compute(&data)) {
            fresh.push((meta.uid, p.clone()));
            *slot = Some(p);
        }
    }
    if !fresh.is_empty() {
        if let Err(e) = store.put_previews(id, fresh).await {
            debug!(error = %e, "caching previews failed");
        }
    }
    out
}

/// A THREADID as the client sees it (`T` and 16 hex digits, RFC 8474
/// objectid), None for no thread.
pub(crate) fn thread_id_text(id: u64) -> Option<String> {
    (id != 0).then(|| format!("T{id:016x}"))
}

/// The `THREADID (...)` FETCH item, `THREADID NIL` without a thread.
fn thread_id_item(id: Option<u64>) -> Vec<u8> {
    match id.and_then(thread_id_text) {
        Some(t) => format!("THREADID ({t})").into_bytes(),
        None => b"THREADID NIL".to_vec(),
    }
}

/// Items served from the cached summary.
fn from_summary(item: &MessageDataItemName<'_>) -> bool {
    matches!(
        item,
        MessageDataItemName::Envelope
            | MessageDataItemName::Body
            | MessageDataItemName::BodyStructure
    )
}

impl Session {
    pub(crate) async fn fetch(
        &mut self,
        set: &SeqSet,
        mut names: Vec<MessageDataItemName<'static>>,
        extra: FetchExtra,
        uid: bool,
        changed_since: Option<u64>,
        vanished: bool,
    ) -> io::Result<Reply> {
        if vanished && !self.enabled.qresync {
            return Ok(Reply::bad("QRESYNC is not enabled"));
        }
        if changed_since.is_some() || names.contains(&MessageDataItemName::ModSeq) {
            self.enable_condstore();
        }
        let store = self.store().clone();
        let saved = self.saved.clone();
        let Some(open) = self.state.open_mut() else {
            return Ok(Reply::bad("No mailbox selected"));
        };
        let mut idx = match open.view.resolve(set, uid, &saved) {
            Ok(i) => i,
            Err(_) => return Ok(Reply::bad("Invalid message sequence number")),
        };
        let id = open.view.id;
        // RFC 7162 3.2.6: messages expunged since CHANGEDSINCE, first.
        if vanished {
            if let Some(since) = changed_since {
                match store.changes(id, since).await {
                    Ok(c) => {
                        let max = open.view.max_uid().max(open.view.uidnext.saturating_sub(1));
                        let ranges = set.merged(max);
                        let gone: Vec<Uid> = c
                            .expunged
                            .into_iter()
                            .filter(|&u| match set {
                                SeqSet::Saved => saved.contains(&u),
                                _ => SeqSet::merged_contains(&ranges, u),
                            })
                            .collect();
                        if !gone.is_empty() {
                            self.out.extend_from_slice(
                                format!("* VANISHED (EARLIER) {}\r\n", wire::uid_set(&gone))
                                    .as_bytes(),
                            );
                        }
                    }
                    Err(e) => warn!(error = %e, "reading expunged messages failed"),
                }
            }
        }
        let Some(open) = self.state.open_mut() else {
            return Ok(Reply::bad("No mailbox selected"));
        };
        if let Some(since) = changed_since {
            idx.retain(|&i| open.view.msgs.get(i).is_some_and(|m| m.meta.modseq > since));
            if !names.contains(&MessageDataItemName::ModSeq) {
                names.push(MessageDataItemName::ModSeq);
            }
        }
        // RFC 9051 6.4.8: UID FETCH always reports the UID.
        if uid && !names.contains(&MessageDataItemName::Uid) {
            names.push(MessageDataItemName::Uid);
        }
        let want_file = names.iter().any(needs_file);
        let want_summary = names.iter().any(from_summary);
        let wants_flags = names.contains(&MessageDataItemName::Flags);
        let condstore = open.view.condstore;
        let std_names: Vec<MessageDataItemName<'static>> = names
            .iter()
            .filter(|n| {
                !from_summary(n)
                    && !matches!(
                        n,
                        MessageDataItemName::Binary { .. }
                            | MessageDataItemName::BinarySize { .. }
                            | MessageDataItemName::ModSeq
                    )
            })
            .cloned()
            .collect();

        // Implicit \Seen first, in one store call, so the responses carry
        // the new flags.
        let mut flagged_now: Vec<Uid> = Vec::new();
        if !open.view.read_only && open.rights.has('s') && names.iter().any(sets_seen) {
            let unseen: Vec<Uid> = idx
                .iter()
                .filter_map(|&i| open.view.msgs.get(i))
                .filter(|m| !m.meta.flags.has(Flags::SEEN))
                .map(|m| m.meta.uid)
                .collect();
            if !unseen.is_empty() {
                let seen = Flags {
                    bits: Flags::SEEN,
                    keywords: vec![],
                };
                match store.store_flags(id, unseen, FlagOp::Add, seen, None).await {
                    Ok((metas, _)) => {
                        let mut announce = String::new();
                        for meta in metas {
                            flagged_now.push(meta.uid);
                            open.view.update_meta(meta, &mut announce);
                        }
                        // Before any FETCH below shows a new keyword.
                        self.out.extend_from_slice(announce.as_bytes());
                    }
                    Err(e) => warn!(error = %e, "setting \\Seen failed"),
                }
            }
        }
        let email_ids: Vec<u64> = if extra.email_id {
            let uids = idx
                .iter()
                .filter_map(|&i| open.view.msgs.get(i).map(|m| m.meta.uid))
                .collect();
            store.email_ids(id, uids).await.unwrap_or_default()
        } else {
            Vec::new()
        };
        let thread_ids: Vec<u64> = if extra.thread_id {
            let uids = idx
                .iter()
                .filter_map(|&i| open.view.msgs.get(i).map(|m| m.meta.uid))
                .collect();
            thread_ids(&store, id, uids).await
        } else {
            Vec::new()
        };

        let mut expunged = false;
        let mut unknown_cte = false;
        // A message whose parsing panicked (a bug): left out, NO [SERVERBUG].
        let mut server_bug = false;
        for (chunk_no, chunk) in idx.chunks(256).enumerate() {
            let msgs: Vec<(usize, Msg)> = chunk
                .iter()
                .filter_map(|&i| {
                    let o = self.state.open()?;
                    let m = o.view.msgs.get(i)?;
                    let mut m = m.clone();
                    m.recent = o.view.shows_recent(&m);
                    Some((i, m))
                })
                .collect();
            let mut cached: Vec<Option<Summary>> = if want_summary {
                let uids = msgs.iter().map(|(_, m)| m.meta.uid).collect();
                store
                    .summaries(id, uids)
                    .await
                    .unwrap_or_default()
                    .into_iter()
                    .map(|c| c.as_deref().and_then(Summary::from_bytes))
                    .collect()
            } else {
                Vec::new()
            };
            cached.resize(msgs.len(), None);
            let previews: Vec<Option<String>> = if extra.preview {
                let metas: Vec<&MessageMeta> = msgs.iter().map(|(_, m)| &m.meta).collect();
                previews(&store, id, &metas, extra.preview_lazy).await
            } else {
                Vec::new()
            };
            let mut fresh: Vec<(Uid, Vec<u8>)> = Vec::new();
            // Every message's bytes: read ahead a run at a time.
            let metas: Vec<&MessageMeta> = msgs.iter().map(|(_, m)| &m.meta).collect();
            let mut ahead = ReadAhead::new(FETCH_READ_BYTES);
            for (k, (i, msg)) in msgs.iter().enumerate() {
                let mut summary = cached.get_mut(k).and_then(Option::take);
                let need_bytes = want_file || (want_summary && summary.is_none());
                let early = match want_file {
                    true => ahead.take(&store, id, &metas, k).await,
                    false => None,
                };
                let data = if let Some(d) = early {
                    Some(d)
                } else if need_bytes {
                    // Read alone: a summary to compute, or a message the
                    // read-ahead could not read (for its error).
                    match store.read(id, &msg.meta).await {
                        Ok(d) => Some(d),
                        Err(StoreError::NoSuchMailbox) => {
                            // Expunged by another session since our view
                            // was last updated (RFC 2180 4.1.2).
                            debug!(uid = msg.meta.uid, "message expunged meanwhile");
                            expunged = true;
                            continue;
                        }
                        Err(e) => {
                            warn!(uid = msg.meta.uid, error = %e, "message unreadable");
                            expunged = true;
                            continue;
                        }
                    }
                } else {
                    None
                };
                let uid_now = msg.meta.uid;
                if want_summary && summary.is_none() {
                    let bytes = data.as_deref().unwrap_or_default();
                    let Some(s) = mime::contained("summary", uid_now, || Summary::compute(bytes))
                    else {
                        server_bug = true;
                        continue;
                    };
                    fresh.push((msg.meta.uid, s.to_bytes()));
                    summary = Some(s);
                }
                let implicit = flagged_now.binary_search(&msg.meta.uid).is_ok();
                let add_flags = !wants_flags && implicit;
                let Some((list, mut raw)) = mime::contained("fetch", uid_now, || {
                    items(&std_names, msg, data.as_deref(), add_flags)
                }) else {
                    server_bug = true;
                    continue;
                };
                for n in &names {
                    match n {
                        MessageDataItemName::Envelope => {
                            raw.extend(summary.as_ref().map(|s| s.envelope.clone()))
                        }
                        MessageDataItemName::Body => {
                            raw.extend(summary.as_ref().map(|s| s.body.clone()))
                        }
                        MessageDataItemName::BodyStructure => {
                            raw.extend(summary.as_ref().map(|s| s.bodystructure.clone()))
                        }
                        MessageDataItemName::ModSeq => {
                            raw.push(format!("MODSEQ ({})", msg.meta.modseq.max(1)).into_bytes())
                        }
                        MessageDataItemName::Binary {
                            section, partial, ..
                        } => {
                            let bytes = data.as_deref().unwrap_or_default();
                            let Some(decoded) = mime::contained("binary", uid_now, || {
                                mime::binary_section(bytes, section)
                            }) else {
                                server_bug = true;
                                continue;
                            };
                            match decoded {
                                Ok(content) => {
                                    let mut r = format!("BINARY[{}]", part_spec(section));
                                    let body = match partial {
                                        Some((o, l)) => {
                                            r.push_str(&format!("<{o}>"));
                                            mime::partial(&content, *o, l.get()).to_vec()
                                        }
                                        None => content,
                                    };
                                    r.push(' ');
                                    let mut r = r.into_bytes();
                                    r.extend(literal8(&body));
                                    raw.push(r);
                                }
                                Err(mime::BinaryError::UnknownCte) => unknown_cte = true,
                            }
                        }
                        MessageDataItemName::BinarySize { section } => {
                            let bytes = data.as_deref().unwrap_or_default();
                            let Some(decoded) = mime::contained("binary", uid_now, || {
                                mime::binary_section(bytes, section)
                            }) else {
                                server_bug = true;
                                continue;
                            };
                            match decoded {
                                Ok(content) => raw.push(
                                    format!(
                                        "BINARY.SIZE[{}] {}",
                                        part_spec(section),
                                        content.len()
                                    )
                                    .into_bytes(),
                                ),
                                Err(mime::BinaryError::UnknownCte) => unknown_cte = true,
                            }
                        }
                        _ => {}
                    }
                }
                if implicit && condstore && !names.contains(&MessageDataItemName::ModSeq) {
                    raw.push(format!("MODSEQ ({})", msg.meta.modseq.max(1)).into_bytes());
                }
                if extra.email_id {
                    let pos = chunk_no * 256 + k;
                    if let Some(e) = email_ids.get(pos) {
                        raw.push(format!("EMAILID ({})", wire::email_id(*e)).into_bytes());
                    }
                }
                if extra.thread_id {
                    let pos = chunk_no * 256 + k;
                    raw.push(thread_id_item(thread_ids.get(pos).copied()));
                }
                if extra.preview {
                    raw.push(preview::item(previews.get(k).and_then(Option::as_deref)));
                }
                if extra.save_date {
                    raw.push(
                        format!("SAVEDATE {}", wire::save_date(msg.meta.save_date)).into_bytes(),
                    );
                }
                drop(data);
                self.out
                    .extend_from_slice(&encode_with(*i as u32 + 1, list, &raw));
                self.maybe_flush().await?;
            }
            if !fresh.is_empty() {
                if let Err(e) = store.put_summaries(id, fresh).await {
                    debug!(error = %e, "caching summaries failed");
                }
            }
        }
        if server_bug {
            return Ok(Reply::no(
                Some("SERVERBUG"),
                "Some messages could not be parsed; the error is logged",
            ));
        }
        if unknown_cte {
            return Ok(Reply::no(
                Some("UNKNOWN-CTE"),
                "Cannot decode a part's content transfer encoding",
            ));
        }
        if expunged {
            return Ok(Reply::no(
                Some("EXPUNGEISSUED"),
                "Some messages could not be read; they may have been expunged",
            ));
        }
        Ok(Reply::ok("FETCH completed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MessageMeta;

    fn msg(uid: Uid, flags: &[&str], recent: bool) -> Msg {
        Msg {
            meta: MessageMeta {
                uid,
                flags: Flags::from_names(flags),
                internal_date: 1_700_000_000,
                tz_offset_min: -300,
                size: 1234,
                modseq: 3,
                offset: 0,
                save_date: 0,
            },
            recent,
        }
    }

    fn text(seq: u32, list: Vec<MessageDataItem<'static>>) -> String {
        String::from_utf8(encode(seq, list).unwrap()).unwrap()
    }

    #[test]
    fn rfc3501_6_4_5_fast_macro_from_metadata_only() {
        let names = vec![
            MessageDataItemName::Flags,
            MessageDataItemName::InternalDate,
            MessageDataItemName::Rfc822Size,
        ];
        assert!(!names.iter().any(needs_file));
        let m = msg(7, &["\\Seen", "$Work"], true);
        let t = text(2, items(&names, &m, None, false).0);
        assert_eq!(
            t,
            "* 2 FETCH (FLAGS (\\Seen $Work \\Recent) INTERNALDATE \"14-Nov-2023 17:13:20 -0500\" RFC822.SIZE 1234)\r\n"
        );
    }

    #[test]
    fn rfc3501_6_4_5_which_items_set_seen() {
        let peek = MessageDataItemName::BodyExt {
            section: None,
            partial: None,
            peek: true,
        };
        let body = MessageDataItemName::BodyExt {
            section: None,
            partial: None,
            peek: false,
        };
        assert!(!sets_seen(&peek));
        assert!(sets_seen(&body));
        assert!(sets_seen(&MessageDataItemName::Rfc822));
        assert!(sets_seen(&MessageDataItemName::Rfc822Text));
        assert!(!sets_seen(&MessageDataItemName::Rfc822Header));
        assert!(!sets_seen(&MessageDataItemName::Flags));
    }

    #[test]
    fn rfc3501_6_4_5_partial_fetch() {
        let d = b"0123456789".to_vec();
        assert_eq!(partial(d.clone(), None), d);
        assert_eq!(
            partial(d.clone(), Some((2, NonZeroU32::new(3).unwrap()))),
            b"234"
        );
        assert_eq!(
            partial(d.clone(), Some((8, NonZeroU32::new(5).unwrap()))),
            b"89"
        );
        assert_eq!(partial(d, Some((20, NonZeroU32::new(5).unwrap()))), b"");
    }

    #[test]
    fn rfc7162_rfc8474_raw_items_join_the_response() {
        let m = msg(42, &[], false);
        let list = items(&[MessageDataItemName::Uid], &m, None, false).0;
        let out = encode_with(3, list, &[b"MODSEQ (9)".to_vec(), b"EMAILID (M1)".to_vec()]);
        assert_eq!(out, b"* 3 FETCH (UID 42 MODSEQ (9) EMAILID (M1))\r\n");
        let out = encode_with(3, vec![], &[b"SAVEDATE NIL".to_vec()]);
        assert_eq!(out, b"* 3 FETCH (SAVEDATE NIL)\r\n");
        assert_eq!(literal8(b"a\0b"), b"~{3}\r\na\0b");
        assert_eq!(literal8(b"ab"), b"{2}\r\nab");
    }

    #[test]
    fn rfc3501_7_4_2_uid_and_flags_added() {
        let m = msg(42, &[], false);
        let t = text(1, items(&[MessageDataItemName::Uid], &m, None, true).0);
        assert_eq!(t, "* 1 FETCH (UID 42 FLAGS ())\r\n");
    }
}
