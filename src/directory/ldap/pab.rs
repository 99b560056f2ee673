//! Personal address books in LDAP (docs/pab.md).
//!
//! Layout, under `directory.ldap.pab_base`:
//! ```text
//! ou=<user address>,<pab_base>          organizationalUnit, made at first write
//!   uid=<contact id>,ou=<user>,...      inetOrgPerson + msgdContact
//!     cn            display name (full name, else given + surname, else email, else id)
//!     displayName   full name            givenName   given name
//!     sn            surname (the id when there is none: sn is required)
//!     mail*         emails                telephoneNumber*  phones
//!     o*            organizations         description  notes
//! ```
//! Written by the service account; the site's ACL limits its write access
//! to `pab_base` (tests/ldap/slapd.conf.in). `msgdContact` (msgd.schema)
//! marks contacts so that address and login searches never find them when
//! `pab_base` lies under `base_dn`.
//!
//! Every value in a filter goes through `ldap_escape`, every value in a DN
//! through `dn_escape`; contact ids are checked (`pab::valid_id`).

use std::collections::HashSet;

use ldap3::{dn_escape, ldap_escape, Mod, Scope};

use super::{rc, Entry, Ldap};
use crate::directory::pab::{self, Changes, Contact, PabError, Snapshot, UserHit};
use crate::directory::DirError;

/// The object class that marks a contact entry (msgd.schema).
pub const CONTACT_CLASS: &str = "msgdContact";

/// LDAP result codes of writes that are the client's fault or a race.
const INVALID_ATTRIBUTE_SYNTAX: u32 = 21;
const CONSTRAINT_VIOLATION: u32 = 19;
const ENTRY_ALREADY_EXISTS: u32 = 68;
const OBJECT_CLASS_VIOLATION: u32 = 65;

const CONTACT_ATTRS: [&str; 11] = [
    "uid",
    "cn",
    "displayName",
    "givenName",
    "sn",
    "mail",
    "telephoneNumber",
    "o",
    "description",
    "entryCSN",
    "modifyTimestamp",
];

/// The attributes of a contact's entry (without objectClass and uid).
fn contact_attrs(c: &Contact) -> Vec<(String, HashSet<String>)> {
    let one = |v: &str| -> HashSet<String> {
        if v.is_empty() {
            HashSet::new()
        } else {
            HashSet::from([v.to_string()])
        }
    };
    let many = |v: &[String]| v.iter().cloned().collect::<HashSet<String>>();
    let mut cn = c.display_name();
    if cn.is_empty() {
        cn = c.id.clone();
    }
    let sn = if c.surname.is_empty() {
        &c.id
    } else {
        &c.surname
    };
    vec![
        ("cn".into(), one(&cn)),
        ("sn".into(), one(sn)),
        ("displayName".into(), one(&c.full_name)),
        ("givenName".into(), one(&c.given_name)),
        ("mail".into(), many(&c.emails)),
        ("telephoneNumber".into(), many(&c.phones)),
        ("o".into(), many(&c.organizations)),
        ("description".into(), one(&c.notes)),
    ]
}

/// The contact an entry holds; None without a valid uid.
fn contact_of(e: &Entry) -> Option<Contact> {
    let id = e.first("uid")?.to_string();
    if !pab::valid_id(&id) {
        return None;
    }
    let all = |a: &str| e.values(a).iter().map(|v| v.trim().to_string()).collect();
    let first = |a: &str| e.first(a).unwrap_or("").to_string();
    let sn = first("sn");
    Some(Contact {
        full_name: first("displayName"),
        given_name: first("givenName"),
        surname: if sn == id { String::new() } else { sn },
        emails: all("mail"),
        phones: all("telephoneNumber"),
        organizations: all("o"),
        notes: e.values("description").first().cloned().unwrap_or_default(),
        id,
    })
}

/// A write the server refused because of what the client sent.
fn refused(code: u32) -> bool {
    matches!(
        code,
        INVALID_ATTRIBUTE_SYNTAX | CONSTRAINT_VIOLATION | OBJECT_CLASS_VIOLATION
    )
}

impl Ldap {
    fn pab_base(&self) -> Result<&str, PabError> {
        let b = self.inner.cfg.pab_base.trim();
        if b.is_empty() {
            Err(PabError::NotConfigured)
        } else {
            Ok(b)
        }
    }

    /// `ou=<user>,<pab_base>`.
    fn book_dn(&self, user: &str) -> Result<String, PabError> {
        Ok(format!("ou={},{}", dn_escape(user), self.pab_base()?))
    }

    fn contact_dn(&self, user: &str, id: &str) -> Result<String, PabError> {
        if !pab::valid_id(id) {
            return Err(PabError::NotFound);
        }
        Ok(format!("uid={id},{}", self.book_dn(user)?))
    }

    /// Address and login filters exclude contact entries when the PAB may
    /// lie inside the search base.
    pub(super) fn not_contact(&self, filter: String) -> String {
        if self.inner.cfg.pab_base.trim().is_empty() {
            filter
        } else {
            format!("(&{filter}(!(objectClass={CONTACT_CLASS})))")
        }
    }

    /// One write on a service connection (a stale pooled connection is
    /// retried once on a fresh one); the server's result code.
    async fn write(&self, what: &str, op: WriteOp<'_>) -> Result<u32, PabError> {
        let pool = &self.inner.lookups;
        let timeout = self.inner.servers.op_timeout();
        let mut fresh = false;
        loop {
            let mut lease = pool.get(fresh).await?;
            let ldap = lease.ldap.with_timeout(timeout);
            let r = match &op {
                WriteOp::Add(dn, attrs) => ldap.add(dn, attrs.clone()).await,
                WriteOp::Modify(dn, mods) => ldap.modify(dn, mods.clone()).await,
                WriteOp::Delete(dn) => ldap.delete(dn).await,
            };
            match r {
                Ok(res) => {
                    lease.release();
                    if res.rc != rc::SUCCESS {
                        tracing::debug!(what, rc = res.rc, text = %res.text, "PAB write refused");
                    }
                    return Ok(res.rc);
                }
                Err(e) => {
                    if lease.reused && super::is_connection_error(&e) && !fresh {
                        fresh = true;
                        continue;
                    }
                    return Err(PabError::Temporary(format!("LDAP {what}: {e}")));
                }
            }
        }
    }

    pub async fn pab_list(&self, user: &str) -> Result<Snapshot, PabError> {
        let base = self.book_dn(user)?;
        let attrs: Vec<String> = CONTACT_ATTRS.iter().map(|a| a.to_string()).collect();
        let filter = format!("(objectClass={CONTACT_CLASS})");
        let entries = self
            .search(
                &base,
                Scope::OneLevel,
                &filter,
                &attrs,
                (pab::MAX_CONTACTS + 1) as i32,
            )
            .await?;
        // The state: a digest of every contact's id and change stamp.
        let mut stamps: Vec<String> = entries
            .iter()
            .map(|e| {
                format!(
                    "{}\n{}\n{}",
                    e.dn.to_ascii_lowercase(),
                    e.first("entryCSN").unwrap_or(""),
                    e.first("modifyTimestamp").unwrap_or("")
                )
            })
            .collect();
        stamps.sort();
        let digest = ring::digest::digest(&ring::digest::SHA256, stamps.join("\n\n").as_bytes());
        let state: String = digest.as_ref()[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut contacts: Vec<Contact> = entries.iter().filter_map(contact_of).collect();
        contacts.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Snapshot {
            state: format!("l{state}"),
            contacts,
        })
    }

    /// LDAP keeps no history: only "nothing changed" can be answered.
    pub async fn pab_changes(&self, user: &str, since: &str) -> Result<Option<Changes>, PabError> {
        let now = self.pab_list(user).await?;
        Ok((now.state == since).then(|| Changes {
            new_state: now.state,
            ..Default::default()
        }))
    }

    pub async fn pab_put(&self, user: &str, c: Contact, create: bool) -> Result<(), PabError> {
        c.check()?;
        let dn = self.contact_dn(user, &c.id)?;
        let attrs = contact_attrs(&c);
        if !create {
            let mods: Vec<Mod<String>> =
                attrs.into_iter().map(|(a, v)| Mod::Replace(a, v)).collect();
            return match self.write("modify", WriteOp::Modify(&dn, mods)).await? {
                rc::SUCCESS => Ok(()),
                rc::NO_SUCH_OBJECT => Err(PabError::NotFound),
                code if refused(code) => Err(PabError::Invalid(format!("LDAP result {code}"))),
                code => Err(PabError::Temporary(format!("LDAP modify: result {code}"))),
            };
        }
        if self.pab_list(user).await?.contacts.len() >= pab::MAX_CONTACTS {
            return Err(PabError::Full);
        }
        let mut entry: Vec<(String, HashSet<String>)> = vec![
            (
                "objectClass".into(),
                HashSet::from([
                    "top".to_string(),
                    "inetOrgPerson".to_string(),
                    CONTACT_CLASS.to_string(),
                ]),
            ),
            ("uid".into(), HashSet::from([c.id.clone()])),
        ];
        entry.extend(attrs.into_iter().filter(|(_, v)| !v.is_empty()));
        for attempt in 0..2 {
            match self.write("add", WriteOp::Add(&dn, entry.clone())).await? {
                rc::SUCCESS => return Ok(()),
                rc::NO_SUCH_OBJECT if attempt == 0 => self.make_book(user).await?,
                ENTRY_ALREADY_EXISTS => return Err(PabError::Invalid("id exists".into())),
                code if refused(code) => {
                    return Err(PabError::Invalid(format!("LDAP result {code}")))
                }
                code => return Err(PabError::Temporary(format!("LDAP add: result {code}"))),
            }
        }
        Err(PabError::Temporary(
            "LDAP add: the book cannot be made".into(),
        ))
    }

    /// The user's `ou=<address>` entry under `pab_base`.
    async fn make_book(&self, user: &str) -> Result<(), PabError> {
        let dn = self.book_dn(user)?;
        let attrs = vec![
            (
                "objectClass".to_string(),
                HashSet::from(["top".to_string(), "organizationalUnit".to_string()]),
            ),
            ("ou".to_string(), HashSet::from([user.to_string()])),
        ];
        match self.write("add book", WriteOp::Add(&dn, attrs)).await? {
            rc::SUCCESS | ENTRY_ALREADY_EXISTS => Ok(()),
            code => {
                tracing::error!(dn, code, "cannot create the address book entry; check directory.ldap.pab_base and the service account's ACL");
                Err(PabError::Temporary(format!("LDAP add book: result {code}")))
            }
        }
    }

    pub async fn pab_delete(&self, user: &str, id: &str) -> Result<(), PabError> {
        let dn = self.contact_dn(user, id)?;
        match self.write("delete", WriteOp::Delete(&dn)).await? {
            rc::SUCCESS => Ok(()),
            rc::NO_SUCH_OBJECT => Err(PabError::NotFound),
            code => Err(PabError::Temporary(format!("LDAP delete: result {code}"))),
        }
    }

    /// Active users whose address or name starts with `prefix`, for
    /// address completion: at most `pab::MAX_COMPLETIONS`, name and
    /// address only. Groups and contacts are left out.
    pub async fn complete_users(&self, prefix: &str) -> Result<Vec<UserHit>, DirError> {
        let me = &self.inner;
        let p = ldap_escape(prefix.trim());
        if p.is_empty() {
            return Ok(Vec::new());
        }
        let mail = &me.cfg.attributes.mail;
        let filter = self.not_contact(format!(
            "(&({mail}=*)(|({mail}={p}*)(cn={p}*)(givenName={p}*)(sn={p}*)(displayName={p}*)))"
        ));
        let mut attrs = me.read_attrs.clone();
        attrs.push("cn".into());
        attrs.push("displayName".into());
        // Room for inactive users and groups, which are dropped here.
        let limit = (pab::MAX_COMPLETIONS * 3) as i32;
        let entries = self
            .search(&me.cfg.base_dn, Scope::Subtree, &filter, &attrs, limit)
            .await?;
        let mut out = Vec::new();
        for e in entries {
            if self.is_group(&e) {
                continue;
            }
            let Some(a) = self.account(&e) else { continue };
            if !a.active {
                continue;
            }
            let name = e
                .first("displayName")
                .or_else(|| e.first("cn"))
                .unwrap_or("")
                .to_string();
            out.push(UserHit {
                name,
                email: a.address,
            });
            if out.len() >= pab::MAX_COMPLETIONS {
                break;
            }
        }
        Ok(out)
    }
}

enum WriteOp<'a> {
    Add(&'a str, Vec<(String, HashSet<String>)>),
    Modify(&'a str, Vec<Mod<String>>),
    Delete(&'a str),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn contact_round_trips_through_entry_attributes() {
        let c = Contact {
            id: "c0123".into(),
            full_name: "Dr. Bob Jones".into(),
            given_name: "Bob".into(),
            surname: String::new(),
            emails: vec!["bob@example.test".into()],
            phones: vec!["+1 555 0100".into()],
            organizations: vec!["Example Ltd".into()],
            notes: "line 1\nline 2".into(),
        };
        let mut attrs: HashMap<String, Vec<String>> = contact_attrs(&c)
            .into_iter()
            .map(|(a, v)| (a.to_ascii_lowercase(), v.into_iter().collect()))
            .collect();
        // sn is required by inetOrgPerson: the id stands in, and is not
        // read back as a surname.
        assert_eq!(attrs["sn"], vec!["c0123".to_string()]);
        assert_eq!(attrs["cn"], vec!["Dr. Bob Jones".to_string()]);
        attrs.insert("uid".into(), vec!["c0123".into()]);
        let e = Entry {
            dn: "uid=c0123,ou=a@x,ou=pab".into(),
            attrs,
        };
        assert_eq!(contact_of(&e), Some(c));
    }

    #[test]
    fn entries_with_foreign_uids_are_not_contacts() {
        let e = Entry {
            dn: "uid=x".into(),
            attrs: HashMap::from([("uid".into(), vec!["Alice,ou=x".into()])]),
        };
        assert_eq!(contact_of(&e), None);
    }

    fn config(slapd: &super::super::testslapd::Slapd, pab_base: &str) -> crate::config::Config {
        use super::super::testslapd::{BASE_DN, BIND_DN, BIND_PASSWORD};
        let mut c = crate::config::Config::default();
        c.directory.backend = "ldap".parse().unwrap();
        let l = &mut c.directory.ldap;
        l.urls = vec![slapd.url.clone()];
        l.base_dn = BASE_DN.into();
        l.bind_dn = BIND_DN.into();
        l.bind_password = BIND_PASSWORD.into();
        l.pab_base = pab_base.into();
        c
    }

    fn contact(name: &str, email: &str) -> Contact {
        Contact {
            id: pab::new_id(),
            full_name: name.into(),
            emails: vec![email.into()],
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn pab_in_ldap_create_list_update_delete_per_user() {
        let s = super::super::testslapd::Slapd::start();
        let l = Ldap::open(&config(&s, "ou=pab,dc=example,dc=test")).unwrap();
        let alice = "alice@example.test";
        let empty = l.pab_list(alice).await.unwrap();
        assert!(empty.contacts.is_empty());
        // The first write makes the user's book entry.
        let mut c = contact("Bob (work)", "bob@example.test");
        c.phones = vec!["+1 555 0100".into()];
        l.pab_put(alice, c.clone(), true).await.unwrap();
        let one = l.pab_list(alice).await.unwrap();
        assert_eq!(one.contacts, vec![c.clone()]);
        assert_ne!(one.state, empty.state);
        assert_eq!(
            l.pab_changes(alice, &one.state)
                .await
                .unwrap()
                .map(|c| c.new_state),
            Some(one.state.clone())
        );
        assert_eq!(l.pab_changes(alice, &empty.state).await.unwrap(), None);
        // Creating the same id twice is refused.
        assert!(matches!(
            l.pab_put(alice, c.clone(), true).await,
            Err(PabError::Invalid(_))
        ));
        c.notes = "call (after 5)".into();
        c.organizations = vec!["Jones & Co, *Ltd*".into()];
        l.pab_put(alice, c.clone(), false).await.unwrap();
        assert_eq!(l.pab_list(alice).await.unwrap().contacts, vec![c.clone()]);
        // Another user's book is another subtree.
        assert!(l
            .pab_list("carol@example.test")
            .await
            .unwrap()
            .contacts
            .is_empty());
        assert_eq!(
            l.pab_delete("carol@example.test", &c.id).await,
            Err(PabError::NotFound)
        );
        // A contact holding a user's address is never taken for the user.
        let bob = match l.lookup("bob@example.test").await.unwrap() {
            Some(crate::directory::Recipient::User(a)) => a,
            other => panic!("{other:?}"),
        };
        assert_eq!(bob.address, "bob@example.test");
        l.pab_delete(alice, &c.id).await.unwrap();
        assert!(l.pab_list(alice).await.unwrap().contacts.is_empty());
        assert_eq!(l.pab_delete(alice, &c.id).await, Err(PabError::NotFound));
        assert_eq!(l.pab_put(alice, c, false).await, Err(PabError::NotFound));
    }

    #[tokio::test]
    async fn pab_user_names_with_dn_and_filter_specials_stay_in_their_book() {
        let s = super::super::testslapd::Slapd::start();
        let l = Ldap::open(&config(&s, "ou=pab,dc=example,dc=test")).unwrap();
        let odd = "o,u=x+y*(z)@example.test";
        l.pab_put(odd, contact("A", "a@example.test"), true)
            .await
            .unwrap();
        assert_eq!(l.pab_list(odd).await.unwrap().contacts.len(), 1);
        assert!(l
            .pab_list("o@example.test")
            .await
            .unwrap()
            .contacts
            .is_empty());
    }

    #[tokio::test]
    async fn service_account_cannot_write_outside_the_pab_subtree() {
        // The test slapd's ACL (tests/ldap/slapd.conf.in) is the one docs/pab.md documents.
        let s = super::super::testslapd::Slapd::start();
        let l = Ldap::open(&config(&s, "ou=people,dc=example,dc=test")).unwrap();
        let r = l
            .pab_put("alice@example.test", contact("A", "a@example.test"), true)
            .await;
        assert!(matches!(r, Err(PabError::Temporary(_))), "{r:?}");
        let l = Ldap::open(&config(&s, "")).unwrap();
        assert_eq!(
            l.pab_list("alice@example.test").await,
            Err(PabError::NotConfigured)
        );
    }

    #[tokio::test]
    async fn completion_finds_active_users_by_prefix_not_contacts_or_groups() {
        let s = super::super::testslapd::Slapd::start();
        let l = Ldap::open(&config(&s, "ou=pab,dc=example,dc=test")).unwrap();
        l.pab_put(
            "carol@example.test",
            contact("Alicia Contact", "alicia@elsewhere.test"),
            true,
        )
        .await
        .unwrap();
        let hits = l.complete_users("ali").await.unwrap();
        assert_eq!(
            hits,
            vec![UserHit {
                name: "Alice Smith".into(),
                email: "alice@example.test".into()
            }]
        );
        // By surname too; a filter metacharacter is a literal.
        let hits = l.complete_users("jon").await.unwrap();
        assert_eq!(
            hits.iter().map(|h| h.email.as_str()).collect::<Vec<_>>(),
            vec!["bob@example.test"]
        );
        assert!(l.complete_users("*").await.unwrap().is_empty());
        // Groups (staff, team) and the disabled dave are left out.
        assert!(l.complete_users("staff").await.unwrap().is_empty());
        assert!(l.complete_users("dave").await.unwrap().is_empty());
    }
}
