//! The embedded directory: one JSON file under the data folder, managed by
//! `msgd user|alias|domain ...`.
//!
//! The CLI edits it under an exclusive lock (`<file>.lock`) and replaces it
//! atomically; the server re-reads it when its modification time or size
//! changes (checked at most every `RECHECK`), so accounts can be added while
//! msgd runs.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use fs2::FileExt;
use serde::{Deserialize, Serialize};

use super::{
    canonical_address, domain_of, password, Account, AuthResult, DirError, EntryStatus, Recipient,
};

/// How often the server looks at the file for changes.
const RECHECK: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Data {
    /// Local domains.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Users by canonical address.
    #[serde(default)]
    pub users: BTreeMap<String, User>,
    /// Aliases and lists: address -> targets.
    #[serde(default)]
    pub aliases: BTreeMap<String, Vec<String>>,
    /// An alias's errors-to address (as LDAP's `mgrpErrorsTo`): the
    /// envelope sender of the copies made for it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub errors_to: BTreeMap<String, String>,
    /// A group's settings beyond its members, by group address (an entry
    /// of `aliases`); absent: active, anyone may post.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, GroupInfo>,
    /// A domain's settings (status, defaults, administrators, limits), by
    /// domain (an entry of `domains`); absent: active, no defaults.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub domain_info: BTreeMap<String, DomainInfo>,
    /// Site administrators: addresses of users of this file who may
    /// manage every domain (docs/admin.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub site_admins: Vec<String>,
}

/// What the embedded directory keeps about a group besides its members
/// (the Sun schema's group attributes, docs/directory.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupInfo {
    /// cn: a display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// inetMailGroupStatus.
    pub status: super::EntryStatus,
    /// mgrpAllowedBroadcaster (addresses, lowercase).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_broadcasters: Vec<String>,
    /// mgrpAllowedDomain (domains, lowercase).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_domains: Vec<String>,
    /// Other addresses of the group (mailAlternateAddress).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// What the embedded directory keeps about a domain (docs/directory.md,
/// docs/admin.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DomainInfo {
    /// inetDomainStatus / mailDomainStatus.
    pub status: super::EntryStatus,
    /// Quota in bytes given to new users of the domain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_quota: Option<u64>,
    /// Message-count quota given to new users of the domain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_msg_quota: Option<u64>,
    /// mailHost given to new users of the domain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_mail_host: Option<String>,
    /// Addresses of the domain's administrators (users of this file).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub admins: Vec<String>,
    /// Most users the domain may have (sunMaxUsers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_users: Option<u64>,
    /// Most bytes of quota all its users together may be given
    /// (mailDomainDiskQuota).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_quota: Option<u64>,
}

/// `Debug` hides the password hash.
#[derive(Clone, Serialize, Deserialize)]
pub struct User {
    /// PHC / crypt string; never the password itself.
    pub password: String,
    #[serde(flatten)]
    pub account: Account,
    /// cn: a display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The service class the user was created with (`[provision.class]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// When the user was marked deleted (unix seconds): the purge
    /// removes its mail after `provision.purge_after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<i64>,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("password", &"<hidden>")
            .field("account", &self.account)
            .finish()
    }
}

/// Who owns each other address of the file, built when the file is
/// (re)loaded so a lookup miss does not scan every user and group.
/// Keys are lowercase; the first owner in file order wins, as before.
#[derive(Default)]
struct AliasIndex {
    /// A user's other address -> the user's canonical address.
    user: HashMap<String, String>,
    /// A group's other address -> the group's address (a key of `aliases`).
    group: HashMap<String, String>,
}

impl AliasIndex {
    fn of(d: &Data) -> AliasIndex {
        let mut ix = AliasIndex::default();
        for (key, u) in &d.users {
            for a in &u.account.aliases {
                ix.user
                    .entry(a.to_lowercase())
                    .or_insert_with(|| key.clone());
            }
        }
        for (key, g) in &d.groups {
            for a in &g.aliases {
                ix.group
                    .entry(a.to_lowercase())
                    .or_insert_with(|| key.clone());
            }
        }
        ix
    }
}

struct Cached {
    data: Arc<Data>,
    aliases: Arc<AliasIndex>,
    stamp: Option<(SystemTime, u64)>,
    checked: Instant,
}

#[derive(Clone)]
pub struct Embedded {
    path: PathBuf,
    /// The users' address books, beside the file (`pab/`).
    pab: super::pab::Files,
    cache: Arc<Mutex<Cached>>,
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn read(path: &Path) -> anyhow::Result<Data> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).with_context(|| format!("parsing {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Data::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

impl Embedded {
    pub fn open(path: PathBuf) -> anyhow::Result<Embedded> {
        let data = read(&path)?;
        Ok(Embedded {
            pab: super::pab::Files::beside(&path),
            cache: Arc::new(Mutex::new(Cached {
                aliases: Arc::new(AliasIndex::of(&data)),
                data: Arc::new(data),
                stamp: stamp(&path),
                checked: Instant::now(),
            })),
            path,
        })
    }

    /// The current data, re-read if the file changed.
    fn data(&self) -> Result<Arc<Data>, DirError> {
        Ok(self.loaded()?.0)
    }

    /// The current data and its alias index, re-read if the file changed.
    fn loaded(&self) -> Result<(Arc<Data>, Arc<AliasIndex>), DirError> {
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if c.checked.elapsed() >= RECHECK {
            c.checked = Instant::now();
            let s = stamp(&self.path);
            if s != c.stamp {
                match read(&self.path) {
                    Ok(d) => {
                        c.aliases = Arc::new(AliasIndex::of(&d));
                        c.data = Arc::new(d);
                        c.stamp = s;
                        tracing::info!(path = %self.path.display(), "embedded directory reloaded");
                    }
                    // A broken edit keeps the last good data, loudly.
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "embedded directory unreadable; keeping the previous version")
                    }
                }
            }
        }
        Ok((c.data.clone(), c.aliases.clone()))
    }

    pub fn pab(&self) -> &super::pab::Files {
        &self.pab
    }

    /// Active users whose address starts with `prefix` (lowercase), for
    /// address completion: the embedded directory keeps no names.
    pub fn complete_users(&self, prefix: &str) -> Result<Vec<super::pab::UserHit>, DirError> {
        let d = self.data()?;
        Ok(d.users
            .values()
            .filter(|u| u.account.active && u.account.address.starts_with(prefix))
            .take(super::pab::MAX_COMPLETIONS)
            .map(|u| super::pab::UserHit {
                name: String::new(),
                email: u.account.address.clone(),
            })
            .collect())
    }

    /// `domain` is lowercase. Deleted domains are not local.
    pub fn is_local_domain(&self, domain: &str) -> Result<bool, DirError> {
        Ok(matches!(
            self.domain_status(domain)?,
            Some(EntryStatus::Active | EntryStatus::Inactive)
        ))
    }

    /// The status of a domain of the file (`domain_info`, default
    /// active); None: not one of `domains`.
    pub fn domain_status(&self, domain: &str) -> Result<Option<EntryStatus>, DirError> {
        let d = self.data()?;
        if !d.domains.iter().any(|x| x == domain) {
            return Ok(None);
        }
        Ok(Some(
            d.domain_info
                .get(domain)
                .map(|i| i.status)
                .unwrap_or_default(),
        ))
    }

    pub fn lookup(&self, address: &str) -> Result<Option<Recipient>, DirError> {
        let (d, ix) = self.loaded()?;
        if let Some(u) = d.users.get(address) {
            return Ok(Some(Recipient::User(account_of(u))));
        }
        let lower = address.to_lowercase();
        if let Some(u) = ix.user.get(&lower).and_then(|k| d.users.get(k)) {
            return Ok(Some(Recipient::User(account_of(u))));
        }
        // A group by its address or one of its other addresses.
        let group = d.aliases.get_key_value(address).or_else(|| {
            ix.group
                .get(&lower)
                .and_then(|k| d.aliases.get_key_value(k))
        });
        if let Some((name, t)) = group {
            let info = d.groups.get(name).cloned().unwrap_or_default();
            return Ok(Some(Recipient::List(super::List {
                posting_restricted: !info.allowed_broadcasters.is_empty()
                    || !info.allowed_domains.is_empty(),
                members: t.clone(),
                errors_to: d.errors_to.get(name).cloned(),
                status: info.status,
                allowed_broadcasters: info
                    .allowed_broadcasters
                    .iter()
                    .filter_map(|b| super::broadcaster_address(b))
                    .collect(),
                allowed_domains: info
                    .allowed_domains
                    .iter()
                    .map(|x| x.trim().to_ascii_lowercase())
                    .filter(|x| !x.is_empty())
                    .collect(),
            })));
        }
        Ok(None)
    }

    /// What a login names, for a password check: a user with its stored
    /// hash, or no user (with the account a failure counts against).
    pub fn login_entry(&self, login: &str) -> Result<LoginEntry, DirError> {
        let d = self.data()?;
        if let Some(u) = d.users.get(login) {
            return Ok(LoginEntry::User {
                account: account_of(u),
                stored: u.password.as_str().into(),
            });
        }
        // Logins are by canonical address only; a failure through an
        // alias still counts against its user.
        let owner = match self.lookup(login)? {
            Some(Recipient::User(a)) => Some(a.address),
            Some(Recipient::List(t)) if t.members.len() == 1 => {
                let t = canonical_address(&t.members[0]);
                d.users.contains_key(&t).then_some(t)
            }
            _ => None,
        };
        Ok(LoginEntry::Unknown { owner })
    }

    /// Checks a password here and now, without cache or pool (tests, CLI).
    pub fn authenticate(&self, login: &str, pass: &str) -> Result<AuthResult, DirError> {
        Ok(match self.login_entry(login)? {
            LoginEntry::User { account, stored } => {
                LoginEntry::verdict(account, password::verify(pass, &stored))
            }
            LoginEntry::Unknown { owner } => {
                // Spend the same time as a real check so timing does not
                // tell which logins exist.
                let _ = password::verify(
                    pass,
                    &password::hash(&password::generate()).unwrap_or_default(),
                );
                AuthResult::Failed(owner)
            }
        })
    }
}

/// A user's account as msgd uses it: a user marked deleted is never
/// active, whatever `active` says in the file.
fn account_of(u: &User) -> Account {
    let mut a = u.account.clone();
    if a.deleted {
        a.active = false;
    }
    a
}

/// A login as the embedded directory sees it.
pub enum LoginEntry {
    User {
        account: Account,
        /// The stored hash (also the entry's password state for the
        /// credential cache: a new hash misses at once).
        stored: Arc<str>,
    },
    Unknown {
        owner: Option<String>,
    },
}

impl LoginEntry {
    /// The result for a user whose password was (not) right.
    pub fn verdict(account: Account, password_ok: bool) -> AuthResult {
        if !password_ok {
            AuthResult::Failed(Some(account.address))
        } else if !account.active {
            AuthResult::Inactive
        } else {
            AuthResult::Ok(account)
        }
    }
}

/// Edits the file under an exclusive lock and replaces it atomically.
pub fn edit<T>(path: &Path, f: impl FnOnce(&mut Data) -> anyhow::Result<T>) -> anyhow::Result<T> {
    if let Some(dir) = path.parent() {
        crate::fsutil::create_private_dir_all(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let lock_path = path.with_extension("lock");
    let lock = crate::fsutil::private_file()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    lock.lock_exclusive()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    let mut data = read(path)?;
    let out = f(&mut data)?;
    let mut bytes = serde_json::to_vec_pretty(&data)?;
    bytes.push(b'\n');
    crate::fsutil::write_durable(path, &bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    // Private (0600) from creation: it holds password hashes.
    let _ = lock.unlock();
    Ok(out)
}

/// Reads the file without locking (for listings).
pub fn load(path: &Path) -> anyhow::Result<Data> {
    read(path)
}

/// Adds a user (and its domain, if new), hashing `pass` with the default
/// Argon2id parameters.
pub fn add_user(
    data: &mut Data,
    address: &str,
    pass: &str,
    quota: Option<u64>,
    active: bool,
) -> anyhow::Result<()> {
    add_user_hashed(data, address, password::hash(pass)?, quota, active)
}

/// Adds a user with an already made password hash (`msgd user add`
/// hashes with the `[auth]` parameters).
pub fn add_user_hashed(
    data: &mut Data,
    address: &str,
    hash: String,
    quota: Option<u64>,
    active: bool,
) -> anyhow::Result<()> {
    let address = canonical_address(address);
    super::names::check_address(&address)?;
    let Some(domain) = domain_of(&address) else {
        anyhow::bail!("'{address}' is not an address (user@domain)");
    };
    if data.users.contains_key(&address) || data.aliases.contains_key(&address) {
        anyhow::bail!("{address} exists already");
    }
    if !data.domains.iter().any(|d| d == domain) {
        data.domains.push(domain.to_string());
        data.domains.sort();
    }
    data.users.insert(
        address.clone(),
        User {
            password: hash,
            account: Account {
                active,
                quota,
                ..Account::new(address)
            },
            name: None,
            class: None,
            deleted_at: None,
        },
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_edits_are_seen_by_a_running_server() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("directory.json");
        let e = Embedded::open(path.clone()).unwrap();
        assert_eq!(e.lookup("a@x.test").unwrap(), None);
        edit(&path, |data| add_user(data, "A@X.test", "pw", None, true)).unwrap();
        std::thread::sleep(RECHECK + Duration::from_millis(50));
        assert!(matches!(
            e.lookup("a@x.test").unwrap(),
            Some(Recipient::User(_))
        ));
        assert!(e.is_local_domain("x.test").unwrap());
        assert!(matches!(
            e.authenticate("a@x.test", "pw").unwrap(),
            AuthResult::Ok(_)
        ));
        assert_eq!(
            e.authenticate("a@x.test", "pW").unwrap(),
            AuthResult::Failed(Some("a@x.test".into()))
        );
        assert_eq!(
            e.authenticate("b@x.test", "pw").unwrap(),
            AuthResult::Failed(None)
        );
    }

    #[test]
    fn inactive_account_and_aliases() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("directory.json");
        edit(&path, |data| {
            add_user(data, "a@x.test", "pw", Some(100), false)?;
            data.aliases
                .insert("team@x.test".into(), vec!["a@x.test".into()]);
            Ok(())
        })
        .unwrap();
        let e = Embedded::open(path.clone()).unwrap();
        assert_eq!(
            e.authenticate("a@x.test", "pw").unwrap(),
            AuthResult::Inactive
        );
        assert_eq!(
            e.lookup("team@x.test").unwrap(),
            Some(Recipient::List(crate::directory::List::of(vec![
                "a@x.test".into()
            ])))
        );
        // Debug of the data never shows a password hash.
        let data = load(&path).unwrap();
        assert!(!format!("{data:?}").contains("$argon2"), "{data:?}");
        // Names are validated when a user is created.
        let d2 = tempfile::tempdir().unwrap();
        for bad in [
            "../../x@x.test",
            "a/b@x.test",
            "a\nb@x.test",
            "a@x..test",
            "nodomain",
        ] {
            let e = edit(&d2.path().join("directory.json"), |data| {
                add_user(data, bad, "pw", None, true)
            })
            .unwrap_err();
            assert!(e.to_string().contains("not a valid name"), "{bad}: {e}");
        }
        // A login through an alias fails, counted against its user.
        assert_eq!(
            e.authenticate("team@x.test", "pw").unwrap(),
            AuthResult::Failed(Some("a@x.test".into()))
        );
    }

    #[test]
    fn aliases_are_found_through_the_index_and_a_reload_rebuilds_it() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("directory.json");
        edit(&path, |data| {
            add_user(data, "a@x.test", "pw", None, true)?;
            add_user(data, "b@x.test", "pw", None, true)?;
            data.users.get_mut("a@x.test").unwrap().account.aliases =
                vec!["a1@x.test".into(), "Boss@X.test".into()];
            data.users.get_mut("b@x.test").unwrap().account.aliases = vec!["b1@x.test".into()];
            data.aliases.insert(
                "g@x.test".into(),
                vec!["a@x.test".into(), "b@x.test".into()],
            );
            data.groups.insert(
                "g@x.test".into(),
                GroupInfo {
                    aliases: vec!["g1@x.test".into(), "g2@x.test".into()],
                    ..GroupInfo::default()
                },
            );
            Ok(())
        })
        .unwrap();
        let e = Embedded::open(path.clone()).unwrap();
        let user = |addr: &str| match e.lookup(addr).unwrap() {
            Some(Recipient::User(a)) => Some(a.address),
            _ => None,
        };
        let list = |addr: &str| match e.lookup(addr).unwrap() {
            Some(Recipient::List(l)) => Some(l.members),
            _ => None,
        };
        assert_eq!(user("a1@x.test").as_deref(), Some("a@x.test"));
        assert_eq!(
            user("boss@x.test").as_deref(),
            Some("a@x.test"),
            "lowercased"
        );
        assert_eq!(user("b1@x.test").as_deref(), Some("b@x.test"));
        let members = Some(vec!["a@x.test".to_string(), "b@x.test".to_string()]);
        assert_eq!(list("g1@x.test"), members);
        assert_eq!(list("g2@x.test"), members);
        assert_eq!(e.lookup("nobody@x.test").unwrap(), None);

        // An edit moves an alias and drops another: the reload rebuilds the index.
        edit(&path, |data| {
            data.users.get_mut("a@x.test").unwrap().account.aliases = vec![];
            data.users.get_mut("b@x.test").unwrap().account.aliases =
                vec!["b1@x.test".into(), "a1@x.test".into()];
            data.groups.get_mut("g@x.test").unwrap().aliases = vec!["g3@x.test".into()];
            Ok(())
        })
        .unwrap();
        std::thread::sleep(RECHECK + Duration::from_millis(50));
        assert_eq!(user("a1@x.test").as_deref(), Some("b@x.test"));
        assert_eq!(e.lookup("boss@x.test").unwrap(), None);
        assert_eq!(e.lookup("g1@x.test").unwrap(), None);
        assert_eq!(list("g3@x.test"), members);
    }

    #[test]
    fn sun_schema_fields_are_read_from_the_file() {
        use crate::directory::List;
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("directory.json");
        edit(&path, |data| {
            add_user(data, "a@x.test", "pw", None, true)?;
            let a = &mut data.users.get_mut("a@x.test").unwrap().account;
            a.msg_quota = Some(7);
            a.deleted = true;
            a.routing_address = Some("b@x.test".into());
            a.preferred_host = Some("store9".into());
            data.aliases
                .insert("g@x.test".into(), vec!["a@x.test".into()]);
            data.groups.insert(
                "g@x.test".into(),
                GroupInfo {
                    status: EntryStatus::Inactive,
                    allowed_broadcasters: vec![
                        "MAILTO:Boss@X.test".into(),
                        "not an address".into(),
                    ],
                    allowed_domains: vec![" Y.test ".into()],
                    aliases: vec!["g2@x.test".into()],
                    name: None,
                },
            );
            data.domains.push("off.test".into());
            data.domain_info.insert(
                "off.test".into(),
                DomainInfo {
                    status: EntryStatus::Deleted,
                    ..DomainInfo::default()
                },
            );
            Ok(())
        })
        .unwrap();
        let e = Embedded::open(path).unwrap();
        let Some(Recipient::User(a)) = e.lookup("a@x.test").unwrap() else {
            panic!()
        };
        assert_eq!(a.msg_quota, Some(7));
        assert_eq!(a.routing_address.as_deref(), Some("b@x.test"));
        assert_eq!(a.preferred_host.as_deref(), Some("store9"));
        assert!(a.deleted && !a.active, "deleted is never active");
        assert_eq!(
            e.authenticate("a@x.test", "pw").unwrap(),
            AuthResult::Inactive
        );
        let want = List {
            members: vec!["a@x.test".into()],
            errors_to: None,
            status: EntryStatus::Inactive,
            allowed_broadcasters: vec!["boss@x.test".into()],
            allowed_domains: vec!["y.test".into()],
            posting_restricted: true,
        };
        assert_eq!(
            e.lookup("g@x.test").unwrap(),
            Some(Recipient::List(want.clone()))
        );
        assert_eq!(e.lookup("g2@x.test").unwrap(), Some(Recipient::List(want)));
        assert_eq!(
            e.domain_status("x.test").unwrap(),
            Some(EntryStatus::Active)
        );
        assert_eq!(
            e.domain_status("off.test").unwrap(),
            Some(EntryStatus::Deleted)
        );
        assert_eq!(e.domain_status("none.test").unwrap(), None);
        assert!(!e.is_local_domain("off.test").unwrap());
    }

    #[test]
    fn add_user_refuses_non_addresses_and_duplicates() {
        let mut data = Data::default();
        assert!(add_user(&mut data, "nodomain", "pw", None, true).is_err());
        assert!(add_user(&mut data, "@x", "pw", None, true).is_err());
        add_user(&mut data, "a@x", "pw", None, true).unwrap();
        assert!(add_user(&mut data, "A@x", "pw", None, true).is_err());
    }
}
