//! The personal address book (PAB): each user's contacts, kept in the
//! directory as in the original design (docs/pab.md).
//!
//! - LDAP (`directory.ldap.pab_base`): one subtree per user,
//!   `ou=<address>,<pab_base>`, one `inetOrgPerson` + `msgdContact` entry per
//!   contact (`ldap/pab.rs`), written with the service account.
//! - Embedded directory: one JSON file per user beside the directory file
//!   (`pab/<address>.json`), edited under an exclusive lock and replaced
//!   atomically, as the directory file itself.
//!
//! Invariants:
//! - Every contact passes `Contact::check` before it is stored: bounded
//!   sizes and counts (`MAX_*`), no control characters, so what a client
//!   sends never grows a book without limit.
//! - A book holds at most `MAX_CONTACTS` contacts.
//! - The user key is the account's canonical address (from the login,
//!   never from the client); a contact id only names a contact inside that
//!   user's book.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use fs2::FileExt;
use serde::{Deserialize, Serialize};

/// Contacts in one book.
pub const MAX_CONTACTS: usize = 5000;
/// Emails, phones and organizations of one contact, each.
pub const MAX_VALUES: usize = 20;
/// Length of a name, an address, a phone number or an organization.
pub const MAX_FIELD: usize = 256;
/// Length of a contact's notes.
pub const MAX_NOTES: usize = 4096;
/// Destroyed contacts remembered for `changes` (embedded).
const MAX_TOMBSTONES: usize = 1000;

/// One contact (the JSContact subset msgd keeps: `jmap::contacts` maps it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// Server-assigned: `[a-z0-9]`, see `new_id`.
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub full_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub given_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub surname: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phones: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub organizations: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub notes: String,
}

impl Contact {
    /// Refuses what the book does not keep: too long, too many, control
    /// characters (newlines allowed in notes only), a malformed email.
    pub fn check(&self) -> Result<(), PabError> {
        let bad = |why: String| Err(PabError::Invalid(why));
        if !valid_id(&self.id) {
            return bad("invalid id".into());
        }
        for (name, v) in [
            ("fullName", &self.full_name),
            ("givenName", &self.given_name),
            ("surname", &self.surname),
        ] {
            if v.len() > MAX_FIELD || v.chars().any(char::is_control) {
                return bad(format!("{name}: too long or control characters"));
            }
        }
        for (name, list) in [
            ("emails", &self.emails),
            ("phones", &self.phones),
            ("organizations", &self.organizations),
        ] {
            if list.len() > MAX_VALUES {
                return bad(format!("{name}: more than {MAX_VALUES}"));
            }
            for v in list {
                if v.trim().is_empty() || v.len() > MAX_FIELD || v.chars().any(char::is_control) {
                    return bad(format!("{name}: empty, too long or control characters"));
                }
            }
        }
        for e in &self.emails {
            let ok = e.rsplit_once('@').is_some_and(|(l, d)| {
                !l.is_empty()
                    && !d.is_empty()
                    && !e.chars().any(|c| c.is_whitespace() || c == '<' || c == '>')
            });
            if !ok {
                return bad("emails: not an address".into());
            }
        }
        if self.notes.len() > MAX_NOTES
            || self
                .notes
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
        {
            return bad("notes: too long or control characters".into());
        }
        Ok(())
    }

    /// The name shown for the contact: the full name, else given and
    /// surname, else the first email.
    pub fn display_name(&self) -> String {
        if !self.full_name.is_empty() {
            return self.full_name.clone();
        }
        let joined = [self.given_name.as_str(), self.surname.as_str()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        if !joined.is_empty() {
            return joined;
        }
        self.emails.first().cloned().unwrap_or_default()
    }
}

/// A new contact id: `c` and 20 lowercase hex digits (random).
pub fn new_id() -> String {
    let a: u64 = rand::random();
    let b: u32 = rand::random();
    format!("c{a:016x}{:04x}", b & 0xffff)
}

/// Ids msgd makes, and nothing else (they go into LDAP DNs and JSON keys).
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PabError {
    /// The directory could not answer or write: try again later.
    #[error("address book temporarily unavailable: {0}")]
    Temporary(String),
    /// The contact breaks a limit of `Contact::check`.
    #[error("invalid contact: {0}")]
    Invalid(String),
    /// The book holds `MAX_CONTACTS` already.
    #[error("address book full")]
    Full,
    /// No contact with that id in this user's book.
    #[error("no such contact")]
    NotFound,
    /// This directory has no address book (`directory.ldap.pab_base` unset).
    #[error("no personal address book configured")]
    NotConfigured,
}

impl From<super::DirError> for PabError {
    fn from(e: super::DirError) -> Self {
        let super::DirError::Temporary(t) = e;
        PabError::Temporary(t)
    }
}

/// A user's contacts and the book's state (changes with every write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub state: String,
    pub contacts: Vec<Contact>,
}

/// What changed since a state (RFC 8620 5.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub destroyed: Vec<String>,
    pub new_state: String,
}

/// A user found for address completion: no attribute but these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserHit {
    pub name: String,
    pub email: String,
}

/// Most users one completion query returns.
pub const MAX_COMPLETIONS: usize = 20;

// ---------------------------------------------------------------------
// The embedded directory's books.

/// One user's book on disk (embedded directory).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Book {
    /// Raised by every write; the book's state.
    modseq: u64,
    /// States below this cannot be answered by `changes` (tombstones gone).
    #[serde(default)]
    floor: u64,
    #[serde(default)]
    contacts: BTreeMap<String, Stored>,
    #[serde(default)]
    tombstones: BTreeMap<String, Tomb>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    created: u64,
    modseq: u64,
    contact: Contact,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tomb {
    created: u64,
    destroyed: u64,
}

/// The embedded directory's address books: `<dir>/<address>.json`.
#[derive(Debug, Clone)]
pub struct Files {
    dir: PathBuf,
}

impl Files {
    /// Books in `pab/` beside the directory file.
    pub fn beside(directory_file: &Path) -> Files {
        let parent = directory_file.parent().unwrap_or(Path::new("."));
        Files {
            dir: parent.join("pab"),
        }
    }

    fn path(&self, user: &str) -> Result<PathBuf, PabError> {
        // The canonical address of a logged-in user; checked anyway, since
        // it becomes a file name.
        super::names::check_address(user).map_err(|e| PabError::Invalid(e.to_string()))?;
        Ok(self.dir.join(format!("{user}.json")))
    }

    fn read(path: &Path) -> Result<Book, PabError> {
        match fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                tracing::error!(path = %path.display(), error = %e, "address book unreadable");
                PabError::Temporary("address book unreadable".into())
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Book::default()),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "reading address book");
                Err(PabError::Temporary("address book unreadable".into()))
            }
        }
    }

    /// Edits one book under its exclusive lock, replaced atomically.
    fn edit<T>(
        &self,
        user: &str,
        f: impl FnOnce(&mut Book) -> Result<T, PabError>,
    ) -> Result<T, PabError> {
        let path = self.path(user)?;
        let io = |what: &str, e: &dyn std::fmt::Display| {
            tracing::error!(path = %path.display(), error = %e, "{what}");
            PabError::Temporary("address book not writable".into())
        };
        crate::fsutil::create_private_dir_all(&self.dir)
            .map_err(|e| io("creating the address book folder", &e))?;
        let lock_path = path.with_extension("lock");
        let lock = crate::fsutil::private_file()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io("opening the address book lock", &e))?;
        lock.lock_exclusive()
            .map_err(|e| io("locking the address book", &e))?;
        let mut book = Self::read(&path)?;
        let out = f(&mut book)?;
        let mut bytes = serde_json::to_vec_pretty(&book).map_err(|e| io("encoding", &e))?;
        bytes.push(b'\n');
        crate::fsutil::write_durable(&path, &bytes).map_err(|e| io("writing", &e))?;
        let _ = lock.unlock();
        Ok(out)
    }

    pub fn list(&self, user: &str) -> Result<Snapshot, PabError> {
        let book = Self::read(&self.path(user)?)?;
        Ok(Snapshot {
            state: book.modseq.to_string(),
            contacts: book.contacts.into_values().map(|s| s.contact).collect(),
        })
    }

    /// Creates (`create`) or replaces a contact; returns the new state.
    pub fn put(&self, user: &str, contact: Contact, create: bool) -> Result<String, PabError> {
        contact.check()?;
        self.edit(user, |book| {
            let exists = book.contacts.contains_key(&contact.id);
            if !create && !exists {
                return Err(PabError::NotFound);
            }
            if create && exists {
                return Err(PabError::Invalid("id exists".into()));
            }
            if create && book.contacts.len() >= MAX_CONTACTS {
                return Err(PabError::Full);
            }
            book.modseq += 1;
            let created = book
                .contacts
                .get(&contact.id)
                .map_or(book.modseq, |s| s.created);
            book.tombstones.remove(&contact.id);
            book.contacts.insert(
                contact.id.clone(),
                Stored {
                    created,
                    modseq: book.modseq,
                    contact,
                },
            );
            Ok(book.modseq.to_string())
        })
    }

    pub fn delete(&self, user: &str, id: &str) -> Result<String, PabError> {
        self.edit(user, |book| {
            let Some(s) = book.contacts.remove(id) else {
                return Err(PabError::NotFound);
            };
            book.modseq += 1;
            book.tombstones.insert(
                id.to_string(),
                Tomb {
                    created: s.created,
                    destroyed: book.modseq,
                },
            );
            if book.tombstones.len() > MAX_TOMBSTONES {
                // Forget the oldest; states before it can no longer be
                // answered by `changes`.
                if let Some((old, t)) = book
                    .tombstones
                    .iter()
                    .min_by_key(|(_, t)| t.destroyed)
                    .map(|(k, t)| (k.clone(), t.destroyed))
                {
                    book.tombstones.remove(&old);
                    book.floor = book.floor.max(t);
                }
            }
            Ok(book.modseq.to_string())
        })
    }

    /// What changed since `since`; None: cannot tell (unknown or too old).
    pub fn changes(&self, user: &str, since: &str) -> Result<Option<Changes>, PabError> {
        let book = Self::read(&self.path(user)?)?;
        let Ok(since) = since.parse::<u64>() else {
            return Ok(None);
        };
        if since > book.modseq || since < book.floor {
            return Ok(None);
        }
        let mut c = Changes {
            new_state: book.modseq.to_string(),
            ..Default::default()
        };
        for (id, s) in &book.contacts {
            if s.created > since {
                c.created.push(id.clone());
            } else if s.modseq > since {
                c.updated.push(id.clone());
            }
        }
        for (id, t) in &book.tombstones {
            if t.destroyed > since && t.created <= since {
                c.destroyed.push(id.clone());
            }
        }
        Ok(Some(c))
    }

    /// Puts many contacts back in one edit of the book (restore, user
    /// move: one rewrite instead of one per contact). Every contact is
    /// checked first. `mirror`: a contact of the same id is replaced when
    /// it differs and contacts not given are destroyed (the book becomes
    /// `contacts`); else existing ids are kept as they are. Returns
    /// (written, destroyed); `Full` beyond `MAX_CONTACTS`.
    pub fn merge(
        &self,
        user: &str,
        contacts: Vec<Contact>,
        mirror: bool,
    ) -> Result<(u64, u64), PabError> {
        for c in &contacts {
            c.check()?;
        }
        self.edit(user, |book| {
            let (mut written, mut destroyed) = (0, 0);
            if mirror {
                let keep: std::collections::BTreeSet<&str> =
                    contacts.iter().map(|c| c.id.as_str()).collect();
                let gone: Vec<String> = book
                    .contacts
                    .keys()
                    .filter(|id| !keep.contains(id.as_str()))
                    .cloned()
                    .collect();
                for id in gone {
                    if let Some(s) = book.contacts.remove(&id) {
                        book.modseq += 1;
                        book.tombstones.insert(
                            id,
                            Tomb {
                                created: s.created,
                                destroyed: book.modseq,
                            },
                        );
                        destroyed += 1;
                    }
                }
                while book.tombstones.len() > MAX_TOMBSTONES {
                    let Some((old, t)) = book
                        .tombstones
                        .iter()
                        .min_by_key(|(_, t)| t.destroyed)
                        .map(|(k, t)| (k.clone(), t.destroyed))
                    else {
                        break;
                    };
                    book.tombstones.remove(&old);
                    book.floor = book.floor.max(t);
                }
            }
            for contact in contacts {
                let old = book.contacts.get(&contact.id);
                match old {
                    Some(s) if !mirror || s.contact == contact => continue,
                    None if book.contacts.len() >= MAX_CONTACTS => return Err(PabError::Full),
                    _ => {}
                }
                book.modseq += 1;
                let created = old.map_or(book.modseq, |s| s.created);
                book.tombstones.remove(&contact.id);
                book.contacts.insert(
                    contact.id.clone(),
                    Stored {
                        created,
                        modseq: book.modseq,
                        contact,
                    },
                );
                written += 1;
            }
            Ok((written, destroyed))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Contact {
        Contact {
            id: new_id(),
            full_name: "Alice Smith".into(),
            emails: vec!["alice@example.test".into()],
            ..Default::default()
        }
    }

    #[test]
    fn embedded_book_create_update_destroy_and_changes() {
        let d = tempfile::tempdir().unwrap();
        let f = Files::beside(&d.path().join("directory.json"));
        let u = "bob@example.test";
        assert_eq!(f.list(u).unwrap().contacts, vec![]);
        let s0 = f.list(u).unwrap().state;
        let mut a = alice();
        let s1 = f.put(u, a.clone(), true).unwrap();
        assert_ne!(s0, s1);
        assert_eq!(f.list(u).unwrap().contacts, vec![a.clone()]);
        // Creating the same id again is refused; updating an unknown one too.
        assert!(matches!(
            f.put(u, a.clone(), true),
            Err(PabError::Invalid(_))
        ));
        let ghost = Contact {
            id: "zzz".into(),
            ..alice()
        };
        assert_eq!(f.put(u, ghost, false), Err(PabError::NotFound));
        let c = f.changes(u, &s0).unwrap().unwrap();
        assert_eq!((c.created.len(), c.updated.len()), (1, 0));
        a.notes = "met at the conference".into();
        let s2 = f.put(u, a.clone(), false).unwrap();
        let c = f.changes(u, &s1).unwrap().unwrap();
        assert_eq!(c.updated, vec![a.id.clone()]);
        assert_eq!(c.new_state, s2);
        f.delete(u, &a.id).unwrap();
        let c = f.changes(u, &s2).unwrap().unwrap();
        assert_eq!(c.destroyed, vec![a.id.clone()]);
        // Created and destroyed after the state: not reported at all.
        let c = f.changes(u, &s0).unwrap().unwrap();
        assert!(c.created.is_empty() && c.destroyed.is_empty(), "{c:?}");
        assert_eq!(f.delete(u, &a.id), Err(PabError::NotFound));
        // A state from the future or garbage: cannot calculate.
        assert_eq!(f.changes(u, "999").unwrap(), None);
        assert_eq!(f.changes(u, "x").unwrap(), None);
        // Another user's book is another file.
        assert!(f.list("carol@example.test").unwrap().contacts.is_empty());
    }

    #[test]
    fn book_file_names_are_checked_addresses() {
        let d = tempfile::tempdir().unwrap();
        let f = Files::beside(&d.path().join("directory.json"));
        for bad in ["../x@example.test", "a/b@example.test", "nodomain"] {
            assert!(matches!(f.list(bad), Err(PabError::Invalid(_))), "{bad}");
        }
    }

    #[test]
    fn contact_limits_are_enforced() {
        let ok = alice();
        assert_eq!(ok.check(), Ok(()));
        let cases = [
            Contact {
                id: "A/B".into(),
                ..alice()
            },
            Contact {
                full_name: "x".repeat(MAX_FIELD + 1),
                ..alice()
            },
            Contact {
                full_name: "a\u{0}b".into(),
                ..alice()
            },
            Contact {
                emails: vec!["no-at-sign".into()],
                ..alice()
            },
            Contact {
                emails: vec!["a b@x".into()],
                ..alice()
            },
            Contact {
                phones: vec!["1".into(); MAX_VALUES + 1],
                ..alice()
            },
            Contact {
                notes: "n".repeat(MAX_NOTES + 1),
                ..alice()
            },
        ];
        for c in cases {
            assert!(matches!(c.check(), Err(PabError::Invalid(_))), "{c:?}");
        }
        let multi = Contact {
            notes: "line 1\nline 2".into(),
            ..alice()
        };
        assert_eq!(multi.check(), Ok(()));
    }

    #[test]
    fn book_is_bounded() {
        let d = tempfile::tempdir().unwrap();
        let f = Files::beside(&d.path().join("directory.json"));
        let u = "bob@example.test";
        f.edit(u, |b| {
            for i in 0..MAX_CONTACTS {
                let c = Contact {
                    id: format!("c{i}"),
                    ..alice()
                };
                b.contacts.insert(
                    c.id.clone(),
                    Stored {
                        created: 1,
                        modseq: 1,
                        contact: c,
                    },
                );
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(f.put(u, alice(), true), Err(PabError::Full));
    }

    #[test]
    fn display_name_falls_back_to_parts_then_email() {
        let mut c = alice();
        assert_eq!(c.display_name(), "Alice Smith");
        c.full_name.clear();
        c.given_name = "Al".into();
        c.surname = "Smith".into();
        assert_eq!(c.display_name(), "Al Smith");
        c.given_name.clear();
        c.surname.clear();
        assert_eq!(c.display_name(), "alice@example.test");
    }

    #[test]
    fn merge_puts_many_in_one_edit_keeps_or_mirrors() {
        let d = tempfile::tempdir().unwrap();
        let f = Files::beside(&d.path().join("directory.json"));
        let u = "bob@example.test";
        let (a, b) = (alice(), alice());
        f.put(u, a.clone(), true).unwrap();
        let s0 = f.list(u).unwrap().state;
        let mut a2 = a.clone();
        a2.notes = "changed".into();
        // Keep: a stays as it is, b is added.
        assert_eq!(f.merge(u, vec![a2.clone(), b.clone()], false), Ok((1, 0)));
        let got = f.list(u).unwrap().contacts;
        assert!(got.contains(&a) && got.contains(&b) && got.len() == 2);
        // Mirror: a replaced, b destroyed, changes tell it.
        assert_eq!(f.merge(u, vec![a2.clone()], true), Ok((1, 1)));
        assert_eq!(f.list(u).unwrap().contacts, vec![a2.clone()]);
        let c = f.changes(u, &s0).unwrap().unwrap();
        assert_eq!(c.updated, vec![a.id.clone()]);
        assert!(c.destroyed.is_empty(), "b was created after s0: {c:?}");
        // Twice: nothing to do. A bad contact: nothing written.
        assert_eq!(f.merge(u, vec![a2.clone()], true), Ok((0, 0)));
        let bad = Contact {
            id: "BAD".into(),
            ..alice()
        };
        assert!(f.merge(u, vec![bad], true).is_err());
        assert_eq!(f.list(u).unwrap().contacts, vec![a2]);
    }
}
