//! IMAP4rev1 server (RFC 3501) of the store role, on imap-codec.
//!
//! Layers: `framer` (bytes -> command frames: lines and literals, with
//! limits) -> imap-codec's `CommandCodec` (frames -> commands) -> `session`
//! (the async driver: directory, store, I/O). The pure pieces
//! (`selected`: the selected mailbox view and its change announcements,
//! `list`: LIST/LSUB matching, `utf7`: mailbox name encoding, `fetch`'s
//! item builder, `wire`: response text) are unit-tested without sockets.
//!
//! Extensions: LITERAL+ (RFC 7888), SASL-IR (RFC 4959), IDLE (RFC 2177),
//! UIDPLUS (RFC 4315), UNSELECT (RFC 3691), MOVE (RFC 6851), ID (RFC 2971),
//! NAMESPACE (RFC 2342), CHILDREN (RFC 3348), SPECIAL-USE (RFC 6154).

mod fetch;
mod framer;
mod list;
pub mod mime;
pub mod search;
mod selected;
mod session;
mod utf7;
mod wire;

#[cfg(test)]
mod tests;

use crate::net::{Conn, ConnInfo};
use crate::services::Services;

/// Serves one IMAP connection (`Protocol::Imap` with STARTTLS when the
/// listener says so, or `Protocol::Imaps` already under TLS) to its end.
pub async fn serve(conn: Conn, info: ConnInfo, services: Services) {
    session::Session::new(conn, info, services).run().await
}
