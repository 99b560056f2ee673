//! IMAP4rev2 (RFC 9051) and IMAP4rev1 (RFC 3501) server of the store role.
//!
//! Layers: `framer` (bytes -> command frames: lines and literals, with
//! limits; the one IMAP framer, also used by the mmp and the stress client
//! to frame responses) -> `command` (msgd's parser for the extended commands) or
//! imap-codec's `CommandCodec` (the rest) -> `session` (the async driver:
//! directory, store, I/O; commands in `mailboxes`, `messages`, `fetch`,
//! `metadata`, `append` (MULTIAPPEND, REPLACE, UNAUTHENTICATE), `catenate`
//! (APPEND CATENATE), `urlauth` (GENURLAUTH, RESETKEY, URLFETCH, and the
//! data an IMAP URL names), `esearch` (ESEARCH results, ESORT, search
//! contexts and PARTIAL), `notify` (NOTIFY)).
//! The pure pieces (`selected`: the selected mailbox view and its change
//! announcements, `list`: LIST matching, `search`: SEARCH keys, `thread`:
//! SORT/THREAD, `summary`: cached ENVELOPE/BODYSTRUCTURE and sort keys,
//! `acl`: rights, `preview`: PREVIEW text, `url`: IMAP URLs (RFC 5092), `utf7`: mailbox name encoding,
//! `wire`: response text,
//! `compress`: DEFLATE streams) are unit-tested without sockets.
//!
//! Extensions: see docs/imap.md for the table of capabilities, RFCs and
//! the tests that check them.

mod acl;
mod append;
mod catenate;
pub(crate) mod command;
mod compress;
mod driver;
mod esearch;
mod fetch;
pub(crate) mod framer;
mod list;
mod mailboxes;
mod messages;
mod metadata;
pub mod mime;
mod notify;
pub(crate) mod preview;
mod request;
pub mod search;
mod selected;
mod session;
pub(crate) mod summary;
pub(crate) mod thread;
pub(crate) mod url;
mod urlauth;
pub(crate) mod utf7;
pub(crate) mod wire;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_append;
#[cfg(test)]
mod tests_core;
#[cfg(test)]
mod tests_ext;
#[cfg(test)]
mod tests_fix;
#[cfg(test)]
mod tests_meta;
#[cfg(test)]
mod tests_notify;
#[cfg(test)]
mod tests_search;
#[cfg(test)]
mod tests_url;

use crate::net::{Conn, ConnInfo};
use crate::services::Services;

/// Serves one IMAP connection (`Protocol::Imap` with STARTTLS when the
/// listener says so, or `Protocol::Imaps` already under TLS) to its end.
pub async fn serve(conn: Conn, info: ConnInfo, services: Services) {
    driver::serve(conn, info, services).await
}
