//! POP3 server (RFC 1939) with CAPA (RFC 2449), STLS (RFC 2595), AUTH PLAIN
//! (RFC 5034) and response codes (RFC 3206, AUTH-RESP-CODE), serving the
//! store's INBOX.
//!
//! Layers: `codec` (lines in with a length cap, dot-stuffed bodies out) ->
//! `session` (synchronous state machine, no I/O; its AUTHORIZATION state is
//! `auth`, shared with the mmp's POP3 front) -> `driver` (async: reads,
//! writes, directory, store, TLS).
//!
//! Invariants:
//! - The maildrop is the INBOX snapshot taken at login; message numbers are
//!   its messages in UID order and never change during the session.
//! - DELE only marks; the store changes only at QUIT (UPDATE), and then
//!   only the UIDs this session marked. A dropped connection, an idle
//!   timeout or a shutdown deletes nothing.
//! - Several sessions on one maildrop are allowed (no exclusive lock, so no
//!   `[IN-USE]`): a message expunged by another session meanwhile answers
//!   `-ERR message was deleted`.
//! - Passwords and SASL data are never logged.

pub(crate) mod auth;
pub(crate) mod codec;
mod driver;
pub(crate) mod session;

#[cfg(test)]
mod tests;

pub use driver::serve;
