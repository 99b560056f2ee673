//! FETCH (RFC 3501 6.4.5, 7.4.2).
//!
//! Metadata items (FLAGS, UID, INTERNALDATE, RFC822.SIZE) come from the
//! session's view; a message file is read only when an item needs its
//! bytes, one message at a time, and each response is written as soon as
//! it is built.

use std::cell::OnceCell;
use std::io;
use std::num::NonZeroU32;

use imap_codec::encode::Encoder;
use imap_codec::ResponseCodec;
use imap_types::core::{IString, Literal, NString, Vec1};
use imap_types::fetch::{
    Macro, MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName, Section,
};
use imap_types::response::{Data, Response};
use imap_types::sequence::SequenceSet;
use tracing::{debug, warn};

use crate::store::{FlagOp, Flags, StoreError, Uid};

use super::selected::Msg;
use super::session::{Reply, Session};
use super::{mime, wire};

/// The item names a macro stands for (RFC 3501 6.4.5).
pub fn expand(items: MacroOrMessageDataItemNames<'_>) -> Vec<MessageDataItemName<'_>> {
    match items {
        MacroOrMessageDataItemNames::Macro(m) => {
            let mut v = vec![
                MessageDataItemName::Flags,
                MessageDataItemName::InternalDate,
                MessageDataItemName::Rfc822Size,
            ];
            match m {
                Macro::Fast => {}
                Macro::All => v.push(MessageDataItemName::Envelope),
                Macro::Full => {
                    v.push(MessageDataItemName::Envelope);
                    v.push(MessageDataItemName::Body);
                }
                _ => {}
            }
            v
        }
        MacroOrMessageDataItemNames::MessageDataItemNames(v) => v,
    }
}

/// Does this item need the message's bytes?
pub fn needs_file(item: &MessageDataItemName<'_>) -> bool {
    matches!(
        item,
        MessageDataItemName::Body
            | MessageDataItemName::BodyExt { .. }
            | MessageDataItemName::BodyStructure
            | MessageDataItemName::Envelope
            | MessageDataItemName::Rfc822
            | MessageDataItemName::Rfc822Header
            | MessageDataItemName::Rfc822Text
    )
}

/// Does fetching this item set \Seen (RFC 3501 6.4.5)?
pub fn sets_seen(item: &MessageDataItemName<'_>) -> bool {
    matches!(
        item,
        MessageDataItemName::BodyExt { peek: false, .. }
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

/// Builds the data items of one message. `data` holds the message's bytes
/// when any item needs them; `add_flags` appends FLAGS (after an implicit
/// \Seen) when they were not asked for.
pub fn items(
    names: &[MessageDataItemName<'_>],
    msg: &Msg,
    data: Option<&[u8]>,
    add_flags: bool,
) -> Vec<MessageDataItem<'static>> {
    let meta = &msg.meta;
    let bytes = data.unwrap_or_default();
    // Parsed once, on first need, for all the items that need structure.
    let parsed: OnceCell<mime::ParsedMessage<'_>> = OnceCell::new();
    let pm = || parsed.get_or_init(|| mime::ParsedMessage::new(bytes));
    let mut out = Vec::with_capacity(names.len() + 1);
    for name in names {
        let item =
            match name {
                MessageDataItemName::Flags => {
                    MessageDataItem::Flags(wire::flag_fetch(&meta.flags, msg.recent))
                }
                MessageDataItemName::Uid => match NonZeroU32::new(meta.uid) {
                    Some(u) => MessageDataItem::Uid(u),
                    None => continue,
                },
                MessageDataItemName::InternalDate => MessageDataItem::InternalDate(
                    wire::date_time(meta.internal_date, meta.tz_offset_min),
                ),
                MessageDataItemName::Rfc822Size => {
                    MessageDataItem::Rfc822Size(u32::try_from(meta.size).unwrap_or(u32::MAX))
                }
                MessageDataItemName::Envelope => MessageDataItem::Envelope(mime::envelope(bytes)),
                MessageDataItemName::Body => MessageDataItem::Body(pm().body_structure(false)),
                MessageDataItemName::BodyStructure => {
                    MessageDataItem::BodyStructure(pm().body_structure(true))
                }
                MessageDataItemName::Rfc822 => MessageDataItem::Rfc822(nstring(bytes.to_vec())),
                MessageDataItemName::Rfc822Header => MessageDataItem::Rfc822Header(nstring(
                    mime::section(bytes, Some(&Section::Header(None))),
                )),
                MessageDataItemName::Rfc822Text => MessageDataItem::Rfc822Text(nstring(
                    mime::section(bytes, Some(&Section::Text(None))),
                )),
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
                    MessageDataItem::BodyExt {
                        section: section.clone().map(imap_types::IntoStatic::into_static),
                        origin: p.map(|(o, _)| o),
                        data: nstring(body),
                    }
                }
                // Not advertised (BINARY, CONDSTORE): refused before we get here.
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
    out
}

/// One `* n FETCH (...)` response, encoded.
pub fn encode(seq: u32, items: Vec<MessageDataItem<'static>>) -> Option<Vec<u8>> {
    let seq = NonZeroU32::new(seq)?;
    let items = Vec1::try_from(items).ok()?;
    let resp = Response::Data(Data::Fetch { seq, items });
    Some(ResponseCodec::default().encode(&resp).dump())
}

impl Session {
    pub(crate) async fn fetch(
        &mut self,
        set: &SequenceSet,
        requested: MacroOrMessageDataItemNames<'_>,
        uid: bool,
    ) -> io::Result<Reply> {
        let store = self.store().clone();
        let Some(open) = self.sel.as_mut() else {
            return Ok(Reply::bad("No mailbox selected"));
        };
        let idx = match open.view.resolve(set, uid) {
            Ok(i) => i,
            Err(_) => return Ok(Reply::bad("Invalid message sequence number")),
        };
        let mut names = expand(requested);
        if names.iter().any(|n| {
            matches!(
                n,
                MessageDataItemName::Binary { .. }
                    | MessageDataItemName::BinarySize { .. }
                    | MessageDataItemName::ModSeq
            )
        }) {
            return Ok(Reply::bad("FETCH item not supported"));
        }
        // RFC 3501 6.4.8: UID FETCH always reports the UID.
        if uid && !names.contains(&MessageDataItemName::Uid) {
            names.push(MessageDataItemName::Uid);
        }
        let want_file = names.iter().any(needs_file);
        let wants_flags = names.contains(&MessageDataItemName::Flags);
        let id = open.view.id;

        // Implicit \Seen first, in one store call, so the responses carry
        // the new flags.
        let mut flagged_now: Vec<Uid> = Vec::new();
        if !open.view.read_only && names.iter().any(sets_seen) {
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
                        for meta in metas {
                            flagged_now.push(meta.uid);
                            open.view.update_meta(meta);
                        }
                    }
                    Err(e) => warn!(error = %e, "setting \\Seen failed"),
                }
            }
        }

        let mut expunged = false;
        for i in idx {
            let Some(msg) = self.sel.as_ref().and_then(|o| o.view.msgs.get(i).cloned()) else {
                continue;
            };
            let data = if want_file {
                match store.read(id, &msg.meta).await {
                    Ok(d) => Some(d),
                    Err(StoreError::NoSuchMailbox) => {
                        // Expunged by another session since our view was
                        // last updated (RFC 2180 4.1.2).
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
            let add_flags = !wants_flags && flagged_now.binary_search(&msg.meta.uid).is_ok();
            let list = items(&names, &msg, data.as_deref(), add_flags);
            drop(data);
            if let Some(bytes) = encode(i as u32 + 1, list) {
                self.out.extend_from_slice(&bytes);
            }
            self.maybe_flush().await?;
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
        let names = expand(MacroOrMessageDataItemNames::Macro(Macro::Fast));
        assert!(!names.iter().any(needs_file));
        let m = msg(7, &["\\Seen", "$Work"], true);
        let t = text(2, items(&names, &m, None, false));
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
    fn rfc3501_7_4_2_uid_and_flags_added() {
        let m = msg(42, &[], false);
        let t = text(1, items(&[MessageDataItemName::Uid], &m, None, true));
        assert_eq!(t, "* 1 FETCH (UID 42 FLAGS ())\r\n");
    }
}
