//! JMAP Mail's Email methods (RFC 8621 4, 5): Email/get, changes, query,
//! queryChanges, set, import, copy, parse, and SearchSnippet/get.
//!
//! - `index`: the account's emails (EMAILID -> copies) from the store.
//! - `render`: an Email's properties from its bytes (pure).
//! - `query`: filters and sorts (IMAP SEARCH keys for the text conditions).
//! - `get`: Email/get, Email/changes.

pub mod build;
pub mod get;
pub mod import;
pub mod index;
pub mod query;
pub mod render;
pub mod set;
pub mod snippet;
