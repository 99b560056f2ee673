//! What a backup and a user move carry besides mailboxes and messages
//! (issue 14): the user's mailbox ACLs (RFC 4314), the JMAP `Mailbox`
//! sortOrder, the personal address book of the embedded directory, and
//! (in the stream) the METADATA entries, which hold the JMAP settings
//! (identities, vacation response, submissions: `jmap::identity`). The
//! decisions per item are in docs/backup.md ("What else is carried").
//!
//! One record, [`Extras`], read from the store in [`read`] and put back by
//! [`apply`]; both encodings carry it: the folder's manifest (`extras`,
//! absent in older manifests) and the stream (`{"t":"extras",...}` followed
//! by its JSON bytes, `backup::StreamWriter::extras`).
//!
//! Two ways to put it back ([`Mode`]):
//! - `Restore` adds what the target lacks and never overwrites (a value
//!   set since the backup is kept), as the rest of a restore does;
//! - `Mirror` makes the target equal to the record (the move: the source
//!   is the truth; entries left by an earlier, aborted move go).
//!
//! Everything is hostile on the way back: names, identifiers, rights
//! letters, METADATA entry names and sizes and contacts are checked before
//! anything is written; a bad one fails the user with a message naming it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::Context as _;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::backup::{MetadataRecord, Target};
use crate::config::{Config, DirectoryBackend};
use crate::directory::pab::{Contact, PabError};
use crate::directory::Directory;
use crate::store::{
    valid_script_name, MetaDepth, MetaLimits, SieveLimits, SieveRefusal, Store, StoreError,
    UserIndex,
};

/// Largest extras record read back from a stream (its JSON bytes).
pub const MAX_EXTRAS: u64 = 64 << 20;
/// Rights letters of RFC 4314 2.1 (with the obsolete `c` and `d`).
const RIGHTS: &str = "lrswipkxteacd";
/// Longest ACL identifier (an address or `anyone`, maybe `-` first).
const MAX_IDENTIFIER: usize = 320;
/// Largest METADATA value put back (as a restore of the folder).
const MAX_META_VALUE: usize = 1 << 20;
/// Most records of each kind in one user's extras.
const MAX_RECORDS: usize = 100_000;

/// A user's data beyond mailboxes and messages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extras {
    /// ACL entries of the user's mailboxes (the owner's implicit rights
    /// are not stored and not here).
    #[serde(default)]
    pub acl: Vec<AclRecord>,
    /// JMAP `Mailbox.sortOrder` values set by a client (mailboxes with the
    /// default have none).
    #[serde(default)]
    pub sort_order: Vec<SortOrderRecord>,
    /// The personal address book. `None`: not carried (an LDAP directory
    /// keeps it: the directory's own backup covers it).
    #[serde(default)]
    pub contacts: Option<Vec<Contact>>,
    /// METADATA entries (with the JMAP settings). Only in the stream: the
    /// folder's manifest has its own `metadata` field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metadata: Vec<MetadataRecord>,
    /// Sieve scripts and which one is active (issue 16, docs/sieve.md).
    #[serde(default)]
    pub sieve: SieveExtras,
}

/// A user's Sieve scripts (`store/sieve.rs`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SieveExtras {
    #[serde(default)]
    pub scripts: Vec<SieveScriptRecord>,
    /// The active script's name (none: no script runs).
    #[serde(default)]
    pub active: Option<String>,
}

/// One Sieve script: its name and text (UTF-8, RFC 5228 2.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SieveScriptRecord {
    pub name: String,
    pub script: String,
}

/// One ACL entry: `identifier` has `rights` on the user's `mailbox`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclRecord {
    pub mailbox: String,
    pub identifier: String,
    /// Rights letters as stored (`lrs...`).
    pub rights: String,
}

/// A mailbox's JMAP sortOrder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SortOrderRecord {
    pub mailbox: String,
    pub sort_order: u32,
}

/// How [`apply`] treats what the target has already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Add what is missing, overwrite nothing (restore).
    Restore,
    /// Make the target equal to the record (user move).
    Mirror,
}

/// What [`apply`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtrasApplied {
    pub acl: u64,
    pub sort_order: u64,
    pub contacts: u64,
    pub metadata: u64,
    /// Sieve scripts written (and the active one set).
    #[serde(default)]
    pub sieve: u64,
    /// Entries removed (`Mode::Mirror` only).
    pub removed: u64,
}

/// Does this store's directory keep personal address books that belong in
/// a backup? Only the embedded one (its `pab/` files sit with the store);
/// an LDAP directory's PAB is backed up with the directory.
pub fn carries_contacts(config: &Config) -> bool {
    config.directory.backend == DirectoryBackend::Embedded
}

/// Reads a user's extras. `idx` names the mailboxes (one read transaction
/// earlier; a mailbox deleted since is left out). `with_metadata`: also
/// the METADATA entries (the stream; the folder records them itself).
pub async fn read(
    store: &Store,
    directory: &Directory,
    config: &Config,
    idx: &UserIndex,
    with_metadata: bool,
) -> anyhow::Result<Extras> {
    let mut x = Extras::default();
    for mb in &idx.mailboxes {
        let entries = match store.acl(mb.info.id).await {
            Ok(e) => e,
            Err(StoreError::NoSuchMailbox) => continue,
            Err(e) => return Err(e.into()),
        };
        for (identifier, rights) in entries {
            x.acl.push(AclRecord {
                mailbox: mb.info.name.clone(),
                identifier,
                rights,
            });
        }
    }
    let ids: HashMap<u64, &str> = idx
        .mailboxes
        .iter()
        .map(|m| (m.info.id, m.info.name.as_str()))
        .collect();
    let orders = store.sort_orders(ids.keys().copied().collect()).await?;
    let mut orders: Vec<_> = orders
        .into_iter()
        .filter_map(|(id, o)| {
            ids.get(&id).map(|n| SortOrderRecord {
                mailbox: n.to_string(),
                sort_order: o,
            })
        })
        .collect();
    orders.sort_by(|a, b| a.mailbox.cmp(&b.mailbox));
    x.sort_order = orders;
    if carries_contacts(config) {
        x.contacts = match directory.pab_list(&idx.user).await {
            Ok(s) => Some(s.contacts),
            Err(PabError::NotConfigured) => None,
            Err(e) => anyhow::bail!("address book of {}: {e}", idx.user),
        };
    }
    if with_metadata {
        x.metadata = super::backup::read_metadata(store, idx).await?;
    }
    x.sieve = read_sieve(store, &idx.user).await?;
    Ok(x)
}

/// The user's Sieve scripts, by name.
async fn read_sieve(store: &Store, user: &str) -> anyhow::Result<SieveExtras> {
    let mut out = SieveExtras::default();
    for (name, active) in store.sieve_list(user).await? {
        let Some(text) = store.sieve_get(user, &name).await? else {
            continue;
        };
        if active {
            out.active = Some(name.clone());
        }
        out.scripts.push(SieveScriptRecord {
            name,
            script: String::from_utf8_lossy(&text).into_owned(),
        });
    }
    Ok(out)
}

/// Checks a record before anything is written: names, identifiers,
/// rights, entries, contacts; counts bounded.
pub fn check(x: &Extras) -> anyhow::Result<()> {
    anyhow::ensure!(
        x.acl.len() <= MAX_RECORDS
            && x.sort_order.len() <= MAX_RECORDS
            && x.metadata.len() <= MAX_RECORDS
            && x.contacts.as_ref().map_or(0, |c| c.len()) <= MAX_RECORDS,
        "too many extra records"
    );
    let name_ok = |n: &str| crate::store::normalize_name(n).is_ok();
    for a in &x.acl {
        anyhow::ensure!(
            name_ok(&a.mailbox),
            "ACL of a bad mailbox name {:?}",
            a.mailbox
        );
        anyhow::ensure!(
            !a.identifier.is_empty()
                && a.identifier.len() <= MAX_IDENTIFIER
                && !a
                    .identifier
                    .chars()
                    .any(|c| c.is_control() || c.is_whitespace()),
            "ACL of {:?}: bad identifier {:?}",
            a.mailbox,
            a.identifier
        );
        anyhow::ensure!(
            !a.rights.is_empty()
                && a.rights.len() <= RIGHTS.len() * 2
                && a.rights.chars().all(|c| RIGHTS.contains(c)),
            "ACL of {:?} for {:?}: bad rights {:?}",
            a.mailbox,
            a.identifier,
            a.rights
        );
    }
    for s in &x.sort_order {
        anyhow::ensure!(
            name_ok(&s.mailbox),
            "sortOrder of a bad mailbox name {:?}",
            s.mailbox
        );
    }
    for m in &x.metadata {
        anyhow::ensure!(
            (m.entry.starts_with("/private/") || m.entry.starts_with("/shared/"))
                && m.entry.len() <= 1024
                && !m.entry.chars().any(|c| c.is_control()),
            "bad METADATA entry name {:?}",
            m.entry
        );
        anyhow::ensure!(
            m.value.len() <= MAX_META_VALUE * 4 / 3 + 4,
            "METADATA value of {} too large",
            m.entry
        );
        if let Some(n) = &m.mailbox {
            anyhow::ensure!(name_ok(n), "METADATA of a bad mailbox name {n:?}");
        }
    }
    let sieve_limits = SieveLimits::default();
    anyhow::ensure!(
        x.sieve.scripts.len() <= sieve_limits.max_scripts,
        "too many Sieve scripts"
    );
    for sc in &x.sieve.scripts {
        anyhow::ensure!(
            valid_script_name(&sc.name),
            "bad Sieve script name {:?}",
            sc.name
        );
        anyhow::ensure!(
            sc.script.len() <= sieve_limits.max_size,
            "Sieve script {:?} too large",
            sc.name
        );
    }
    if let Some(a) = &x.sieve.active {
        anyhow::ensure!(
            x.sieve.scripts.iter().any(|sc| &sc.name == a),
            "active Sieve script {a:?} is not among the scripts"
        );
    }
    if let Some(cs) = &x.contacts {
        anyhow::ensure!(
            cs.len() <= crate::directory::pab::MAX_CONTACTS,
            "more contacts than a book holds"
        );
        let mut seen = BTreeSet::new();
        for c in cs {
            c.check().with_context(|| format!("contact {:?}", c.id))?;
            anyhow::ensure!(seen.insert(&c.id), "contact {:?} twice", c.id);
        }
    }
    Ok(())
}

/// Puts a user's extras back into `user` (already the target user:
/// `target.user(recorded)`), mailbox names mapped by `target` (under
/// `--mailbox-prefix`). The mailboxes must exist already (restored
/// before); entries of a mailbox that does not are skipped. Contacts go to
/// the book only when this store's directory is the embedded one.
pub async fn apply(
    store: &Store,
    directory: &Directory,
    config: &Config,
    user: &str,
    target: &Target,
    x: &Extras,
    mode: Mode,
) -> anyhow::Result<ExtrasApplied> {
    check(x)?;
    let mut out = ExtrasApplied::default();
    // The target user's mailboxes, by name.
    let boxes: HashMap<String, u64> = store
        .list(user)
        .await?
        .into_iter()
        .map(|m| (m.name, m.id))
        .collect();
    apply_acl(store, user, target, x, mode, &boxes, &mut out).await?;
    apply_sort_order(store, user, target, x, mode, &boxes, &mut out).await?;
    apply_metadata(store, user, target, x, mode, &boxes, &mut out).await?;
    apply_sieve(store, user, &x.sieve, mode, &mut out).await?;
    if let Some(cs) = &x.contacts {
        if carries_contacts(config) {
            apply_contacts(directory, user, cs, mode, &mut out).await?;
        } else {
            tracing::info!(
                user,
                "backup holds contacts; this store's directory (LDAP) keeps its own: not restored"
            );
        }
    }
    Ok(out)
}

/// Restore: adds the scripts the user lacks, and the active mark when no
/// script is active. Mirror: the user's scripts become exactly these.
async fn apply_sieve(
    store: &Store,
    user: &str,
    want: &SieveExtras,
    mode: Mode,
    out: &mut ExtrasApplied,
) -> anyhow::Result<()> {
    let limits = SieveLimits::default();
    let have = store.sieve_list(user).await?;
    let refused = |name: &str, r: SieveRefusal| anyhow::anyhow!("Sieve script {name:?}: {r:?}");
    if mode == Mode::Mirror {
        let active_have = have.iter().find(|(_, a)| *a).map(|(n, _)| n.as_str());
        if active_have.is_some() && active_have != want.active.as_deref() {
            store
                .sieve_set_active(user, None)
                .await?
                .map_err(|r| refused("(active)", r))?;
        }
        for (name, _) in &have {
            if !want.scripts.iter().any(|sc| &sc.name == name) {
                store
                    .sieve_delete(user, name)
                    .await?
                    .map_err(|r| refused(name, r))?;
                out.removed += 1;
            }
        }
    }
    for sc in &want.scripts {
        let exists = have.iter().any(|(n, _)| n == &sc.name);
        let write = match mode {
            Mode::Restore => !exists,
            Mode::Mirror => {
                !exists
                    || store.sieve_get(user, &sc.name).await?.as_deref()
                        != Some(sc.script.as_bytes())
            }
        };
        if write {
            store
                .sieve_put(user, &sc.name, sc.script.as_bytes().to_vec(), limits)
                .await?
                .map_err(|r| refused(&sc.name, r))?;
            out.sieve += 1;
        }
    }
    let none_active = !have.iter().any(|(_, a)| *a);
    if let Some(a) = &want.active {
        let set = match mode {
            Mode::Restore => none_active,
            Mode::Mirror => !have.iter().any(|(n, act)| *act && n == a),
        };
        if set {
            store
                .sieve_set_active(user, Some(a))
                .await?
                .map_err(|r| refused(a, r))?;
            out.sieve += 1;
        }
    }
    Ok(())
}

/// The one walk both modes share over a record's entries (`want`) and the
/// target's (`have`): `Restore` writes the keys the target lacks and
/// removes nothing; `Mirror` writes every key whose value differs and
/// removes the keys the record lacks. Returns (writes, removals).
fn walk<'a, K, V>(
    mode: Mode,
    want: impl IntoIterator<Item = (&'a K, &'a V)>,
    have: &HashMap<K, V>,
) -> (Vec<(K, V)>, Vec<K>)
where
    K: std::hash::Hash + Eq + Clone + 'a,
    V: PartialEq + Clone + 'a,
{
    let mut set = Vec::new();
    let mut wanted = std::collections::HashSet::new();
    for (k, v) in want {
        let keep = match mode {
            Mode::Restore => have.contains_key(k),
            Mode::Mirror => have.get(k) == Some(v),
        };
        if !keep {
            set.push((k.clone(), v.clone()));
        }
        wanted.insert(k);
    }
    let remove = match mode {
        Mode::Restore => Vec::new(),
        Mode::Mirror => have
            .keys()
            .filter(|k| !wanted.contains(k))
            .cloned()
            .collect(),
    };
    (set, remove)
}

async fn apply_acl(
    store: &Store,
    user: &str,
    target: &Target,
    x: &Extras,
    mode: Mode,
    boxes: &HashMap<String, u64>,
    out: &mut ExtrasApplied,
) -> anyhow::Result<()> {
    // mailbox id -> identifier -> rights wanted.
    let mut want: BTreeMap<u64, BTreeMap<String, String>> = BTreeMap::new();
    for a in &x.acl {
        // The owner's rights are implicit: an entry naming the target user
        // (a restore `--as` the grantee) would mean nothing.
        if a.identifier.eq_ignore_ascii_case(user) {
            continue;
        }
        let Some(&id) = boxes.get(&target.mailbox(&a.mailbox)) else {
            continue;
        };
        want.entry(id)
            .or_default()
            .insert(a.identifier.clone(), a.rights.clone());
    }
    let scope: Vec<u64> = match mode {
        Mode::Restore => want.keys().copied().collect(),
        Mode::Mirror => boxes.values().copied().collect(),
    };
    for id in scope {
        let have: HashMap<String, String> = store.acl(id).await?.into_iter().collect();
        let wanted = want.remove(&id).unwrap_or_default();
        let (set, remove) = walk(mode, &wanted, &have);
        for (ident, rights) in set {
            store.set_acl(id, &ident, Some(rights)).await?;
            out.acl += 1;
        }
        for ident in remove {
            store.set_acl(id, &ident, None).await?;
            out.removed += 1;
        }
    }
    Ok(())
}

async fn apply_sort_order(
    store: &Store,
    user: &str,
    target: &Target,
    x: &Extras,
    mode: Mode,
    boxes: &HashMap<String, u64>,
    out: &mut ExtrasApplied,
) -> anyhow::Result<()> {
    let mut want: HashMap<u64, u32> = HashMap::new();
    for s in &x.sort_order {
        if let Some(&id) = boxes.get(&target.mailbox(&s.mailbox)) {
            want.insert(id, s.sort_order);
        }
    }
    let have = store.sort_orders(boxes.values().copied().collect()).await?;
    let (set, remove) = walk(mode, &want, &have);
    for (id, o) in set {
        store.set_sort_order(user, id, Some(o)).await?;
        out.sort_order += 1;
    }
    for id in remove {
        store.set_sort_order(user, id, None).await?;
        out.removed += 1;
    }
    Ok(())
}

async fn apply_metadata(
    store: &Store,
    user: &str,
    target: &Target,
    x: &Extras,
    mode: Mode,
    boxes: &HashMap<String, u64>,
    out: &mut ExtrasApplied,
) -> anyhow::Result<()> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let limits = MetaLimits {
        max_value: MAX_META_VALUE,
        // The store compares as i64: the largest that stays positive.
        max_entries: i64::MAX as u64,
        max_bytes: i64::MAX as u64,
    };
    // (mailbox id, 0 for the server) -> entry -> value.
    let mut want: BTreeMap<u64, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
    for r in &x.metadata {
        let id = match &r.mailbox {
            None => 0,
            Some(n) => match boxes.get(&target.mailbox(n)) {
                Some(&id) => id,
                None => continue,
            },
        };
        let value = b64
            .decode(&r.value)
            .with_context(|| format!("METADATA value of {}", r.entry))?;
        want.entry(id).or_default().insert(r.entry.clone(), value);
    }
    let scope: Vec<u64> = match mode {
        Mode::Restore => want.keys().copied().collect(),
        Mode::Mirror => std::iter::once(0).chain(boxes.values().copied()).collect(),
    };
    for id in scope {
        let roots = if id == 0 {
            vec!["/private".to_string()]
        } else {
            vec!["/private".to_string(), "/shared".to_string()]
        };
        let have: HashMap<String, Vec<u8>> = store
            .get_metadata(id, user, roots, MetaDepth::Infinity)
            .await?
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
        let wanted = want.remove(&id).unwrap_or_default();
        let (set, remove) = walk(mode, &wanted, &have);
        out.metadata += set.len() as u64;
        out.removed += remove.len() as u64;
        let mut items: Vec<(String, Option<Vec<u8>>)> =
            set.into_iter().map(|(e, v)| (e, Some(v))).collect();
        items.extend(remove.into_iter().map(|e| (e, None)));
        if items.is_empty() {
            continue;
        }
        if let Err(e) = store.set_metadata(id, user, user, items, limits).await? {
            anyhow::bail!("METADATA of {user}: refused ({e:?})");
        }
    }
    Ok(())
}

async fn apply_contacts(
    directory: &Directory,
    user: &str,
    contacts: &[Contact],
    mode: Mode,
    out: &mut ExtrasApplied,
) -> anyhow::Result<()> {
    let (written, removed) = directory
        .pab_merge(user, contacts.to_vec(), mode == Mode::Mirror)
        .await
        .map_err(|e| anyhow::anyhow!("address book of {user}: {e}"))?;
    out.contacts += written;
    out.removed += removed;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::backup::{Item, StreamReader, StreamWriter};
    use crate::store::{Flags, NewMessage, Quota};
    use std::sync::Arc;

    const A: &str = "alice@example.test";
    const B: &str = "bob@example.test";

    fn config(dir: &std::path::Path) -> Config {
        let mut c = Config::default();
        c.server.data_dir = dir.to_path_buf();
        c.store.min_free_disk = 0;
        c.store.partition.insert(
            "primary".into(),
            crate::config::PartitionConfig {
                path: "partition/primary".into(),
            },
        );
        c
    }

    struct Side {
        _d: tempfile::TempDir,
        config: Config,
        store: Store,
        directory: Arc<Directory>,
    }

    fn side() -> Side {
        let d = tempfile::tempdir().unwrap();
        let config = config(d.path());
        Side {
            store: Store::open(&config).unwrap(),
            directory: Directory::open(&config).unwrap(),
            config,
            _d: d,
        }
    }

    async fn mailbox(s: &Store, user: &str, name: &str) -> u64 {
        s.ensure_user(user, None).await.unwrap();
        if s.status(user, name).await.is_err() {
            s.create_mailbox(user, name, None).await.unwrap();
        }
        s.append(
            user,
            name,
            NewMessage {
                data: Arc::new(b"Subject: x\r\n\r\nx\r\n".to_vec()),
                flags: Flags::default(),
                internal_date: None,
            },
            Quota::default(),
        )
        .await
        .unwrap();
        s.status(user, name).await.unwrap().id
    }

    fn contact(id: &str, name: &str) -> Contact {
        Contact {
            id: id.into(),
            full_name: name.into(),
            emails: vec![format!("{id}@example.test")],
            ..Default::default()
        }
    }

    /// A user with an ACL, a sortOrder, a vacation setting and a contact.
    async fn seed(s: &Side) -> UserIndex {
        let inbox = mailbox(&s.store, A, "INBOX").await;
        let work = mailbox(&s.store, A, "Work").await;
        s.store.set_acl(work, B, Some("lrs".into())).await.unwrap();
        s.store
            .set_acl(inbox, "anyone", Some("l".into()))
            .await
            .unwrap();
        s.store.set_sort_order(A, work, Some(3)).await.unwrap();
        s.store
            .set_metadata(
                0,
                A,
                A,
                vec![(
                    "/private/vendor/msgd/vacation".into(),
                    Some(br#"{"is_enabled":true,"subject":"away"}"#.to_vec()),
                )],
                MetaLimits {
                    max_value: 1000,
                    max_entries: 10,
                    max_bytes: 10_000,
                },
            )
            .await
            .unwrap()
            .unwrap();
        s.directory
            .pab_put(A, contact("c1", "Carol"), true)
            .await
            .unwrap();
        for (name, text) in [("main", SIEVE_MAIN), ("spare", "keep;\r\n")] {
            s.store
                .sieve_put(A, name, text.as_bytes().to_vec(), SieveLimits::default())
                .await
                .unwrap()
                .unwrap();
        }
        s.store
            .sieve_set_active(A, Some("main"))
            .await
            .unwrap()
            .unwrap();
        s.store.user_index(A).await.unwrap().unwrap()
    }

    const SIEVE_MAIN: &str = "require \"fileinto\";\r\nfileinto \"Work\";\r\n";

    async fn acl_of(s: &Store, user: &str, name: &str) -> Vec<(String, String)> {
        let id = s.status(user, name).await.unwrap().id;
        s.acl(id).await.unwrap()
    }

    #[tokio::test]
    async fn extras_are_read_and_restored_under_a_prefix_and_as_another_user() {
        let src = side();
        let idx = seed(&src).await;
        let x = read(&src.store, &src.directory, &src.config, &idx, true)
            .await
            .unwrap();
        assert_eq!(x.acl.len(), 2);
        assert_eq!(
            x.sort_order,
            vec![SortOrderRecord {
                mailbox: "Work".into(),
                sort_order: 3
            }]
        );
        assert_eq!(x.contacts.as_ref().unwrap().len(), 1);
        assert_eq!(x.sieve.active.as_deref(), Some("main"));
        assert_eq!(x.sieve.scripts.len(), 2);
        assert!(x
            .metadata
            .iter()
            .any(|m| m.mailbox.is_none() && m.entry.ends_with("/vacation")));
        // Through JSON, as the manifest and the stream carry it.
        let x: Extras = serde_json::from_slice(&serde_json::to_vec(&x).unwrap()).unwrap();

        // Into another store, as carol, below "Old": the ACL follows the
        // renamed mailbox.
        let dst = side();
        const C: &str = "carol@example.test";
        let target = Target {
            as_user: Some(C.into()),
            mailbox_prefix: Some("Old".into()),
        };
        mailbox(&dst.store, C, "Old/INBOX").await;
        let work = mailbox(&dst.store, C, "Old/Work").await;
        let got = apply(
            &dst.store,
            &dst.directory,
            &dst.config,
            C,
            &target,
            &x,
            Mode::Restore,
        )
        .await
        .unwrap();
        assert_eq!((got.acl, got.sort_order, got.contacts), (2, 1, 1));
        // Two scripts and the active mark.
        assert_eq!(got.sieve, 3);
        assert_eq!(
            dst.store.sieve_active(C).await.unwrap(),
            Some(("main".to_string(), SIEVE_MAIN.as_bytes().to_vec()))
        );
        assert_eq!(
            acl_of(&dst.store, C, "Old/Work").await,
            vec![(B.to_string(), "lrs".to_string())]
        );
        assert_eq!(dst.store.sort_orders(vec![work]).await.unwrap()[&work], 3);
        let v = dst
            .store
            .get_metadata(
                0,
                C,
                vec!["/private/vendor/msgd/vacation".into()],
                MetaDepth::Zero,
            )
            .await
            .unwrap();
        assert!(v[0]
            .1
            .as_ref()
            .unwrap()
            .starts_with(b"{\"is_enabled\":true"));
        assert_eq!(dst.directory.pab_list(C).await.unwrap().contacts.len(), 1);
        // Twice: nothing new, and a value set since is kept.
        dst.store.set_acl(work, B, Some("lr".into())).await.unwrap();
        let again = apply(
            &dst.store,
            &dst.directory,
            &dst.config,
            C,
            &target,
            &x,
            Mode::Restore,
        )
        .await
        .unwrap();
        assert_eq!(again, ExtrasApplied::default());
        assert_eq!(
            acl_of(&dst.store, C, "Old/Work").await,
            vec![(B.to_string(), "lr".to_string())]
        );
    }

    #[tokio::test]
    async fn mirror_makes_the_target_equal_to_the_source() {
        let src = side();
        let idx = seed(&src).await;
        let x = read(&src.store, &src.directory, &src.config, &idx, true)
            .await
            .unwrap();
        let dst = side();
        // Left over from an earlier, aborted move: stale values.
        let inbox = mailbox(&dst.store, A, "INBOX").await;
        let work = mailbox(&dst.store, A, "Work").await;
        dst.store
            .set_acl(work, "stale@example.test", Some("lr".into()))
            .await
            .unwrap();
        dst.store.set_acl(work, B, Some("l".into())).await.unwrap();
        dst.store.set_sort_order(A, inbox, Some(9)).await.unwrap();
        dst.directory
            .pab_put(A, contact("old", "Gone"), true)
            .await
            .unwrap();
        // A stale script, active, and an older text of "main".
        for (name, text) in [("stale", "discard;"), ("main", "keep;")] {
            dst.store
                .sieve_put(A, name, text.as_bytes().to_vec(), SieveLimits::default())
                .await
                .unwrap()
                .unwrap();
        }
        dst.store
            .sieve_set_active(A, Some("stale"))
            .await
            .unwrap()
            .unwrap();
        apply(
            &dst.store,
            &dst.directory,
            &dst.config,
            A,
            &Target::default(),
            &x,
            Mode::Mirror,
        )
        .await
        .unwrap();
        assert_eq!(
            acl_of(&dst.store, A, "Work").await,
            vec![(B.to_string(), "lrs".to_string())]
        );
        assert_eq!(
            acl_of(&dst.store, A, "INBOX").await,
            vec![("anyone".to_string(), "l".to_string())]
        );
        let orders = dst.store.sort_orders(vec![inbox, work]).await.unwrap();
        assert_eq!(orders, HashMap::from([(work, 3)]));
        let book = dst.directory.pab_list(A).await.unwrap().contacts;
        assert_eq!(book, vec![contact("c1", "Carol")]);
        assert_eq!(
            dst.store.sieve_list(A).await.unwrap(),
            vec![("main".to_string(), true), ("spare".to_string(), false)]
        );
        // Read back, the target says what the source said.
        let idx2 = dst.store.user_index(A).await.unwrap().unwrap();
        let y = read(&dst.store, &dst.directory, &dst.config, &idx2, true)
            .await
            .unwrap();
        assert_eq!(x, y);
    }

    #[tokio::test]
    async fn restored_as_the_grantee_the_owner_entry_is_dropped() {
        let src = side();
        let idx = seed(&src).await;
        let x = read(&src.store, &src.directory, &src.config, &idx, false)
            .await
            .unwrap();
        let dst = side();
        mailbox(&dst.store, B, "Work").await;
        let target = Target {
            as_user: Some(B.into()),
            mailbox_prefix: None,
        };
        apply(
            &dst.store,
            &dst.directory,
            &dst.config,
            B,
            &target,
            &x,
            Mode::Restore,
        )
        .await
        .unwrap();
        // Alice granted bob "lrs" on Work; bob owns the copy: no entry.
        assert_eq!(acl_of(&dst.store, B, "Work").await, vec![]);
    }

    #[test]
    fn a_manifest_without_extras_still_reads() {
        let old = serde_json::json!({
            "format": "msgd-backup", "version": 1, "user": A,
            "run": "000001700000-000000001", "created": "2026-12-02T08:00:00Z",
            "previous": null, "subscriptions": [], "mailboxes": [],
            "totals": {"messages": 0, "bytes": 0, "new_blobs": 0, "new_bytes": 0, "vanished": 0}
        });
        let m: crate::ops::backup::Manifest = serde_json::from_value(old).unwrap();
        assert!(m.extras.is_none());
        // An extras object with unknown future fields and missing ones.
        let x: Extras = serde_json::from_str(r#"{"acl":[],"later":1}"#).unwrap();
        assert_eq!(x, Extras::default());
    }

    #[test]
    fn hostile_records_are_refused_before_anything_is_written() {
        let ok = Extras {
            acl: vec![AclRecord {
                mailbox: "INBOX".into(),
                identifier: "anyone".into(),
                rights: "lr".into(),
            }],
            ..Default::default()
        };
        check(&ok).unwrap();
        let bad = |f: &dyn Fn(&mut Extras)| {
            let mut x = ok.clone();
            f(&mut x);
            assert!(check(&x).is_err(), "{x:?}");
        };
        bad(&|x| x.acl[0].rights = "lrZ".into());
        bad(&|x| x.acl[0].rights = String::new());
        bad(&|x| x.acl[0].identifier = "a b".into());
        bad(&|x| x.acl[0].identifier = "x\r\n".into());
        bad(&|x| x.acl[0].identifier = "a".repeat(MAX_IDENTIFIER + 1));
        bad(&|x| x.acl[0].mailbox = String::new());
        bad(&|x| {
            x.metadata.push(MetadataRecord {
                mailbox: None,
                entry: "/etc/passwd".into(),
                value: String::new(),
            })
        });
        bad(&|x| x.contacts = Some(vec![contact("c1", "x"), contact("c1", "y")]));
        bad(&|x| x.contacts = Some(vec![contact("BAD ID", "x")]));
        bad(&|x| {
            x.sort_order.push(SortOrderRecord {
                mailbox: "a\0b".into(),
                sort_order: 1,
            })
        });
    }

    #[test]
    fn extras_travel_in_the_stream_checked_and_bounded() {
        let x = Extras {
            acl: vec![AclRecord {
                mailbox: "INBOX".into(),
                identifier: "anyone".into(),
                rights: "lr".into(),
            }],
            contacts: Some(vec![contact("c1", "Carol")]),
            ..Default::default()
        };
        let mut w = StreamWriter::new(Vec::new()).unwrap();
        w.user(A, &[]).unwrap();
        w.extras(&x).unwrap();
        let b = w.finish().unwrap();
        let read_all = |b: &[u8]| -> anyhow::Result<Vec<Item>> {
            let mut r = StreamReader::new(std::io::Cursor::new(b), 1 << 20)?;
            let mut out = Vec::new();
            while let Some(i) = r.next_item()? {
                out.push(i);
            }
            Ok(out)
        };
        let items = read_all(&b).unwrap();
        assert_eq!(items[1], Item::Extras(Box::new(x.clone())));
        // A flipped byte inside the extras' JSON: checksum error.
        let mut bad = b.clone();
        let pos = bad.windows(5).position(|w| w == b"Carol").unwrap();
        bad[pos] = b'K';
        let e = read_all(&bad).unwrap_err();
        assert!(format!("{e:#}").contains("checksum"), "{e:#}");
        // Cut inside it: an error.
        assert!(read_all(&b[..pos]).is_err());
        // Extras before any user: refused.
        let mut w = StreamWriter::new(Vec::new()).unwrap();
        w.extras(&x).unwrap();
        assert!(read_all(&w.finish().unwrap()).is_err());
        // A claimed size beyond the bound is refused before reading.
        let mut huge = crate::ops::backup::STREAM_MAGIC.to_vec();
        huge.extend_from_slice(format!("{{\"t\":\"user\",\"user\":\"{A}\"}}\n").as_bytes());
        huge.extend_from_slice(
            format!(
                "{{\"t\":\"extras\",\"size\":{},\"sha256\":\"{}\"}}\n",
                MAX_EXTRAS + 1,
                "0".repeat(64)
            )
            .as_bytes(),
        );
        let e = read_all(&huge).unwrap_err();
        assert!(format!("{e:#}").contains("extras"), "{e:#}");
    }
}
