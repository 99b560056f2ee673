//! Message files in partitions.
//!
//! Layout: `<partition>/<xx>/<user>/<mailbox id>/<uid>.msg`, where `xx` is a
//! hash of the user spreading users over 256 folders and `<user>` is the
//! address with unsafe bytes %-escaped. New messages are first written
//! under `<partition>/tmp/`, then renamed into place by the writer in the
//! batch that commits their index entries, which syncs them before the
//! commit (`writer::Syncer`).
//!
//! Each file starts with one prelude line, `MSGD1 {json}\r\n`, recording the
//! owner, the mailbox name and the flags and date at delivery; the message
//! bytes follow unchanged. The path gives mailbox id and UID.
//!
//! Beside the messages, each mailbox folder holds a `mailbox` record file
//! (name, UIDVALIDITY, special use; written at create and rename), and
//! expunged messages are moved to `<partition>/expunged/<day>/` until
//! `msgd expire` purges them (`db/reconstruct.rs`, `db/expire.rs`).

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{MailboxId, Uid};

pub const PRELUDE_MAGIC: &[u8] = b"MSGD1 ";

#[derive(Debug, Serialize, Deserialize)]
pub struct Prelude {
    /// Owner (canonical address).
    pub u: String,
    /// Mailbox name at delivery.
    pub m: String,
    /// Flags at delivery.
    pub f: Vec<String>,
    /// Internal date (unix seconds) and zone offset in minutes.
    pub d: i64,
    pub z: i16,
    /// CRC-32 of the message bytes (after the prelude), for `msgd
    /// verify`; absent in files written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub c: Option<u32>,
}

/// Name of the per-mailbox record file in a mailbox folder.
pub const MAILBOX_FILE: &str = "mailbox";

/// What a mailbox folder records about its mailbox (`<mailbox dir>/mailbox`,
/// JSON), written and fsynced when the mailbox is created or renamed, so
/// `msgd reconstruct` can restore its name, UIDVALIDITY and special use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxFile {
    pub user: String,
    pub name: String,
    pub uidvalidity: u32,
    #[serde(default)]
    pub special_use: Option<super::SpecialUse>,
    /// Unix seconds when the mailbox was created (bounds its modseqs).
    #[serde(default)]
    pub created: i64,
    /// UIDs below this were used by messages since purged (written when
    /// `purge_expunged` removes them), so a reconstruct never reuses one.
    #[serde(default)]
    pub uidnext: u32,
}

/// Writes `dir/mailbox` (through a temporary name, fsynced). The caller
/// fsyncs `dir` (the writer does, with the rest of the batch).
pub fn write_mailbox_file(dir: &Path, rec: &MailboxFile) -> io::Result<()> {
    let tmp = dir.join(format!(
        ".mailbox.{}.{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let mut f = crate::fsutil::private_file()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    f.write_all(&serde_json::to_vec(rec).map_err(io::Error::other)?)?;
    f.sync_data()?;
    fs::rename(&tmp, dir.join(MAILBOX_FILE))
}

/// Longest `mailbox` record file read back (a hostile or damaged one is
/// not read whole).
pub const MAX_MAILBOX_FILE: u64 = 64 << 10;

/// Reads `dir/mailbox`; None when absent or unreadable.
pub fn read_mailbox_file(dir: &Path) -> Option<MailboxFile> {
    let f = File::open(dir.join(MAILBOX_FILE)).ok()?;
    let mut buf = Vec::new();
    f.take(MAX_MAILBOX_FILE).read_to_end(&mut buf).ok()?;
    serde_json::from_slice(&buf).ok()
}

/// Longest prelude line read back (the prelude of a real file is short).
pub const MAX_PRELUDE: usize = 64 << 10;

/// Reads the prelude of a message file: the record and the offset where
/// the message starts. `InvalidData` when the file has none.
pub fn read_prelude(path: &Path) -> io::Result<(Prelude, u32)> {
    let f = File::open(path)?;
    let mut head = Vec::with_capacity(512);
    f.take(MAX_PRELUDE as u64).read_to_end(&mut head)?;
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    if !head.starts_with(PRELUDE_MAGIC) {
        return Err(bad("no MSGD1 prelude"));
    }
    let end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or_else(|| bad("prelude line not terminated"))?;
    let json = head
        .get(PRELUDE_MAGIC.len()..end)
        .ok_or_else(|| bad("prelude"))?;
    let p: Prelude = serde_json::from_slice(json).map_err(|e| bad(&format!("prelude: {e}")))?;
    Ok((p, (end + 2) as u32))
}

/// Folder of set-aside expunged messages in a partition.
pub const EXPUNGED_DIR: &str = "expunged";

/// Where a set-aside file came from, read back from its name
/// `<unix secs>.<random>.<xx>.<user folder>.<mailbox id>.<uid>.msg`
/// (`<random>`: 64 random bits in decimal; older names have a counter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aside {
    pub time: i64,
    /// `<xx>/<user folder>/<mailbox id>` below the partition.
    pub mailbox_dir: PathBuf,
    pub mailbox: MailboxId,
    pub uid: Uid,
}

pub fn parse_aside(name: &str) -> Option<Aside> {
    let rest = name.strip_suffix(".msg")?;
    let mut head = rest.splitn(4, '.');
    let time = head.next()?.parse().ok()?;
    head.next()?.parse::<u64>().ok()?;
    let xx = head.next()?;
    let tail = head.next()?;
    let (tail, uid) = tail.rsplit_once('.')?;
    let (user, mbox) = tail.rsplit_once('.')?;
    let bad = |s: &str| s.is_empty() || s == "." || s == ".." || s.contains('/');
    if bad(xx) || bad(user) {
        return None;
    }
    let mailbox: MailboxId = mbox.parse().ok()?;
    Some(Aside {
        time,
        mailbox_dir: Path::new(xx).join(user).join(mbox),
        mailbox,
        uid: uid.parse().ok()?,
    })
}

/// Moves an expunged message file out of its mailbox into
/// `<partition>/expunged/<unix day>/` (the partition is the path's fourth
/// ancestor), to be purged after the grace period. A file not in the
/// partition layout is removed instead.
pub fn set_aside(path: &Path, now: i64) -> io::Result<()> {
    let parts = (|| {
        let mbox = path.parent()?;
        let udir = mbox.parent()?;
        let hash = udir.parent()?;
        let partition = hash.parent()?;
        Some((
            partition.to_path_buf(),
            format!(
                "{}.{}.{}.{}",
                hash.file_name()?.to_str()?,
                udir.file_name()?.to_str()?,
                mbox.file_name()?.to_str()?,
                path.file_name()?.to_str()?
            ),
        ))
    })();
    let Some((partition, origin)) = parts else {
        return fs::remove_file(path);
    };
    let day = partition
        .join(EXPUNGED_DIR)
        .join(now.div_euclid(86400).to_string());
    let dest = day.join(format!("{now}.{}.{origin}", rand::random::<u64>()));
    match fs::rename(path, &dest) {
        Err(e) if e.kind() == io::ErrorKind::NotFound && path.exists() => {
            crate::fsutil::create_private_dir_all(&day)?;
            fs::rename(path, &dest)
        }
        r => r,
    }
}

/// Suffix of a deleted mailbox's folder set aside whole in
/// `<partition>/expunged/<day>/<unix secs>.<random>.<xx>.<user folder>.<mailbox id>.mailbox`
/// (its record file and message files inside, as they were).
pub const DELETED_SUFFIX: &str = ".mailbox";

/// Moves the folder of a deleted mailbox (`<partition>/<xx>/<user>/<id>`)
/// whole into `<partition>/expunged/<unix day>/`, to be purged with the
/// expunged files after the grace period. One rename, so a crash leaves
/// the folder either in place or aside, never half moved. Both parent
/// folders are fsynced before it returns. Returns where it went; `NotFound`
/// when the folder is not there (already aside, or never had a message).
pub fn set_aside_mailbox(dir: &Path, now: i64) -> io::Result<PathBuf> {
    let bad = || io::Error::new(io::ErrorKind::InvalidInput, "not a mailbox folder");
    let udir = dir.parent().ok_or_else(bad)?;
    let hash = udir.parent().ok_or_else(bad)?;
    let partition = hash.parent().ok_or_else(bad)?;
    fn name(p: &Path) -> io::Result<&str> {
        p.file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a mailbox folder"))
    }
    fs::symlink_metadata(dir)?;
    let day = partition
        .join(EXPUNGED_DIR)
        .join(now.div_euclid(86400).to_string());
    crate::fsutil::create_private_dir_all(&day)?;
    let dest = day.join(format!(
        "{now}.{}.{}.{}.{}{DELETED_SUFFIX}",
        rand::random::<u64>(),
        name(hash)?,
        name(udir)?,
        name(dir)?
    ));
    fs::rename(dir, &dest)?;
    crate::fsutil::sync_dir(&day)?;
    crate::fsutil::sync_dir(udir)?;
    Ok(dest)
}

/// Deleted mailboxes' folders set aside in a partition: (path, time set
/// aside).
pub fn list_deleted(partition: &Path) -> io::Result<Vec<(PathBuf, i64)>> {
    let root = partition.join(EXPUNGED_DIR);
    let days = match fs::read_dir(&root) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for day in days.flatten() {
        if !day.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        for f in fs::read_dir(day.path())?.flatten() {
            let Some(name) = f.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if !name.ends_with(DELETED_SUFFIX) || !f.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if let Some(time) = name.split('.').next().and_then(|t| t.parse().ok()) {
                out.push((f.path(), time));
            }
        }
    }
    Ok(out)
}

/// Set-aside files of a partition: (path, origin), unparseable names
/// skipped.
pub fn list_aside(partition: &Path) -> io::Result<Vec<(PathBuf, Aside)>> {
    let root = partition.join(EXPUNGED_DIR);
    let days = match fs::read_dir(&root) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for day in days.flatten() {
        if !day.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        for f in fs::read_dir(day.path())?.flatten() {
            if let Some(a) = f.file_name().to_str().and_then(parse_aside) {
                out.push((f.path(), a));
            }
        }
    }
    Ok(out)
}

/// What a purge removed.
#[derive(Debug, Default)]
pub struct Purged {
    pub files: u64,
    pub bytes: u64,
    /// Folders of deleted mailboxes removed (their files are counted in
    /// `files` and `bytes`).
    pub mailboxes: u64,
    /// Per mailbox folder (below the partition): the highest UID purged.
    pub max_uids: std::collections::BTreeMap<PathBuf, Uid>,
}

/// Removes set-aside expunged files and deleted mailboxes' folders older
/// than `grace` seconds (by the time in their names), and day folders left
/// empty.
pub fn purge_expunged(partition: &Path, now: i64, grace: u64) -> io::Result<Purged> {
    let mut out = Purged::default();
    let cutoff = now.saturating_sub(i64::try_from(grace).unwrap_or(i64::MAX));
    for (path, a) in list_aside(partition)? {
        if a.time > cutoff {
            continue;
        }
        let len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if fs::remove_file(&path).is_ok() {
            out.files += 1;
            out.bytes += len;
            let m = out.max_uids.entry(a.mailbox_dir).or_insert(0);
            *m = (*m).max(a.uid);
        }
    }
    for (path, time) in list_deleted(partition)? {
        if time > cutoff {
            continue;
        }
        let (mut n, mut len) = (0, 0);
        for f in fs::read_dir(&path)?.flatten() {
            if f.file_name().to_str().is_some_and(|n| n.ends_with(".msg")) {
                n += 1;
                len += f.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
        if fs::remove_dir_all(&path).is_ok() {
            out.files += n;
            out.bytes += len;
            out.mailboxes += 1;
        }
    }
    if let Ok(days) = fs::read_dir(partition.join(EXPUNGED_DIR)) {
        for d in days.flatten() {
            // Only empty ones go.
            let _ = fs::remove_dir(d.path());
        }
    }
    Ok(out)
}

/// FNV-1a: stable across releases (unlike std's hasher), for the user folder.
fn fnv1a(s: &str) -> u32 {
    let mut h: u32 = 0x811c9dc5;
    for b in s.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x01000193);
    }
    h
}

/// The user's folder name: safe characters kept, everything else %XX.
pub fn encode_user(user: &str) -> String {
    let mut out = String::with_capacity(user.len());
    for b in user.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b'+') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.starts_with('.') {
        out.replace_range(0..1, "%2E");
    }
    // An empty name would be the hash folder itself; a lone `%` is no
    // encoding of anything else.
    if out.is_empty() {
        out.push('%');
    }
    out
}

pub fn user_dir(partition: &Path, user: &str) -> PathBuf {
    partition
        .join(format!("{:02x}", fnv1a(user) & 0xff))
        .join(encode_user(user))
}

pub fn mailbox_dir(partition: &Path, user: &str, mailbox: MailboxId) -> PathBuf {
    user_dir(partition, user).join(mailbox.to_string())
}

pub fn message_file(dir: &Path, uid: Uid) -> PathBuf {
    dir.join(format!("{uid}.msg"))
}

/// A message written under `<partition>/tmp/`, waiting to be
/// renamed into its mailbox. Removed on drop unless taken.
pub struct TmpFile {
    pub path: Option<PathBuf>,
    /// Length of the prelude: where the message starts.
    pub offset: u32,
}

impl TmpFile {
    /// Renames the file to `dest` (`rename_into`: its folder created if
    /// missing, added to `touched`). Its bytes are not durable yet: the
    /// caller has the batch sync `dest` before its commit
    /// (`Batch::sync_files`).
    pub fn place(&mut self, dest: &Path, touched: &mut Vec<PathBuf>) -> io::Result<()> {
        let src = self
            .path
            .as_deref()
            .ok_or_else(|| io::Error::other("temporary file already placed"))?;
        rename_into(src, dest, touched)?;
        self.path = None;
        Ok(())
    }
}

/// Messages at least this long are written out by `write_tmp` itself
/// before it returns, so that a batch's sync never waits for their bytes.
const WRITE_OUT_AT: usize = 256 << 10;

impl Drop for TmpFile {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// Writes prelude + message to a new temporary file and starts writing
/// it out; it becomes durable when the writer syncs it after renaming it
/// into place (`TmpFile::place`).
pub fn write_tmp(partition: &Path, prelude: &Prelude, data: &[u8]) -> io::Result<TmpFile> {
    let tmp = partition.join("tmp");
    let mut head = PRELUDE_MAGIC.to_vec();
    head.extend_from_slice(&serde_json::to_vec(prelude).map_err(io::Error::other)?);
    head.extend_from_slice(b"\r\n");
    let offset = u32::try_from(head.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "prelude too long"))?;
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let name = format!(
            "{:x}.{:x}.{:x}",
            now.as_micros(),
            std::process::id(),
            rand::random::<u64>()
        );
        let path = tmp.join(name);
        // 0600 at creation; the rename into the mailbox keeps the mode.
        let mut f = match crate::fsutil::private_file()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                crate::fsutil::create_private_dir_all(&tmp)?;
                continue;
            }
            Err(e) => return Err(e),
        };
        let guard = TmpFile {
            path: Some(path),
            offset,
        };
        f.write_all(&head)?;
        f.write_all(data)?;
        // Closed here: a batch reopens what it syncs, so staged messages
        // (a MULTIAPPEND of a thousand) hold no descriptors meanwhile.
        crate::fsutil::start_writeback(&f, data.len() >= WRITE_OUT_AT);
        return Ok(guard);
    }
}

/// Reads `size` message bytes at `offset` from a message file.
pub fn read_message(path: &Path, offset: u32, size: u64) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let f = File::open(path)?;
    // Positioned reads: no seek (one system call fewer per message).
    let mut buf = vec![0u8; size as usize];
    match f.read_exact_at(&mut buf, offset as u64) {
        Ok(()) => Ok(buf),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(shorter(path)),
        Err(e) => Err(e),
    }
}

/// One message of an open message file, read a piece at a time (POP3 RETR
/// streams it instead of loading it whole). The open handle keeps the bytes
/// readable even if the file is unlinked (expunged) meanwhile.
#[derive(Debug)]
pub struct MessageBody {
    file: File,
    /// Message bytes not read yet.
    left: u64,
}

impl MessageBody {
    /// Opens `path` at the message (`offset`, `size` from its index entry).
    /// A file shorter than its index entry is refused here, before anything
    /// has been sent.
    pub fn open(path: &Path, offset: u32, size: u64) -> io::Result<MessageBody> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        if len < u64::from(offset).saturating_add(size) {
            return Err(shorter(path));
        }
        file.seek(SeekFrom::Start(offset as u64))?;
        Ok(MessageBody { file, left: size })
    }

    /// Message bytes not read yet.
    pub fn remaining(&self) -> u64 {
        self.left
    }

    /// Reads the next min(`buf.len()`, remaining) message bytes into the
    /// front of `buf` (one read call as a rule; the caller reuses one
    /// buffer for every piece). Returns how many; 0 at the end.
    pub fn read_piece(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let Some(piece) = buf.get_mut(..want) else {
            return Ok(0);
        };
        // A file truncated after open fails here (UnexpectedEof): never
        // pad, never send a short message.
        self.file.read_exact(piece)?;
        self.left -= want as u64;
        Ok(want)
    }
}

fn shorter(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("{} is shorter than its index entry", path.display()),
    )
}

/// Renames `src` to `dest`, creating `dest`'s folder and its missing
/// parents when it is not there yet (added to `touched`, to be fsynced
/// before the commit). The folder is looked at only when the rename says
/// it is missing: a delivery into an existing mailbox costs no `stat`.
pub fn rename_into(src: &Path, dest: &Path, touched: &mut Vec<PathBuf>) -> io::Result<()> {
    match fs::rename(src, dest) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let before = touched.len();
            create_dirs(dest.parent().unwrap_or(Path::new(".")), touched)?;
            if touched.len() == before {
                // The folder was there: the source is what is missing.
                return Err(e);
            }
            fs::rename(src, dest)
        }
        r => r,
    }
}

/// Creates `dir` and its missing parents; returns the folders whose entries
/// changed (to be fsynced before commit).
pub fn create_dirs(dir: &Path, touched: &mut Vec<PathBuf>) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut d = dir;
    while !d.is_dir() {
        missing.push(d.to_path_buf());
        match d.parent() {
            Some(p) => d = p,
            None => break,
        }
    }
    crate::fsutil::create_private_dir_all(dir)?;
    for m in missing {
        if let Some(p) = m.parent() {
            touched.push(p.to_path_buf());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_folder_names_are_safe() {
        assert_eq!(encode_user("alice@example.test"), "alice@example.test");
        assert_eq!(encode_user("../x/y"), "%2E.%2Fx%2Fy");
        assert_eq!(encode_user("a b"), "a%20b");
        assert_eq!(encode_user("."), "%2E");
        assert_eq!(encode_user(".."), "%2E.");
        assert_eq!(encode_user(""), "%");
        assert_eq!(encode_user("a\\b\0c"), "a%5Cb%00c");
        // Whatever the directory returns, the folder stays one level
        // below its hash folder inside the partition.
        let p = Path::new("/part");
        for u in ["", ".", "..", "../..", "a/../../b", "/etc/passwd", "x\0y"] {
            let d = user_dir(p, u);
            assert_eq!(d.parent().and_then(|h| h.parent()), Some(p), "{u:?}");
            let name = d.file_name().unwrap().to_str().unwrap();
            assert!(!name.contains('/') && name != "." && name != "..", "{u:?}");
        }
    }

    #[test]
    fn expunged_files_are_set_aside_and_purged_after_the_grace() {
        let d = tempfile::tempdir().unwrap();
        let mbox = mailbox_dir(d.path(), "a.b@x.test", 7);
        fs::create_dir_all(&mbox).unwrap();
        let f = message_file(&mbox, 12);
        fs::write(&f, b"x").unwrap();
        set_aside(&f, 1_000_000).unwrap();
        assert!(!f.exists());
        let list = list_aside(d.path()).unwrap();
        assert_eq!(list.len(), 1);
        let a = &list[0].1;
        assert_eq!((a.time, a.mailbox, a.uid), (1_000_000, 7, 12));
        assert_eq!(d.path().join(&a.mailbox_dir), mbox);
        // Within the grace: kept.
        let p = purge_expunged(d.path(), 1_000_050, 100).unwrap();
        assert_eq!(p.files, 0);
        let p = purge_expunged(d.path(), 1_000_100, 100).unwrap();
        assert_eq!((p.files, p.bytes), (1, 1));
        assert_eq!(p.max_uids.get(&a.mailbox_dir), Some(&12));
        assert_eq!(
            fs::read_dir(d.path().join(EXPUNGED_DIR)).unwrap().count(),
            0
        );
        // Hostile names are not parsed into paths outside the partition.
        assert_eq!(parse_aside("1.2.../...7.3.msg"), None);
        assert_eq!(parse_aside("1.2.ab.a/b.7.3.msg"), None);
        assert_eq!(parse_aside("x.2.ab.u.7.3.msg"), None);
    }

    #[test]
    fn a_rename_into_a_missing_mailbox_folder_creates_it_and_names_the_folders_to_fsync() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("staged");
        fs::write(&src, b"m").unwrap();
        let mbox = mailbox_dir(d.path(), "a@x.test", 3);
        let dest = message_file(&mbox, 1);
        let mut touched = Vec::new();
        rename_into(&src, &dest, &mut touched).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"m");
        // Every folder that gained an entry: the partition (hash folder),
        // the hash folder (user), the user's (mailbox).
        let user = mbox.parent().unwrap();
        let hash = user.parent().unwrap();
        for f in [hash, user, &mbox] {
            assert!(
                touched.contains(&f.parent().unwrap().to_path_buf()),
                "{f:?}: {touched:?}"
            );
        }
        // Into the existing folder: nothing created, nothing to fsync
        // besides the mailbox folder the caller adds.
        fs::write(&src, b"n").unwrap();
        let mut again = Vec::new();
        rename_into(&src, &message_file(&mbox, 2), &mut again).unwrap();
        assert!(again.is_empty());
        // A missing source is an error, not a reason to create folders.
        let mut none = Vec::new();
        let e = rename_into(&src, &message_file(&mbox, 3), &mut none).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(none.is_empty());
    }

    #[test]
    fn tmp_file_round_trip_and_cleanup() {
        let d = tempfile::tempdir().unwrap();
        let p = Prelude {
            u: "a@b".into(),
            m: "INBOX".into(),
            f: vec![],
            d: 0,
            z: 0,
            c: None,
        };
        let t = write_tmp(d.path(), &p, b"hello\r\n").unwrap();
        let path = t.path.clone().unwrap();
        let got = read_message(&path, t.offset, 7).unwrap();
        assert_eq!(got, b"hello\r\n");
        drop(t);
        assert!(!path.exists());
    }

    #[test]
    fn message_body_reads_pieces_of_exactly_the_indexed_bytes() {
        let d = tempfile::tempdir().unwrap();
        let p = Prelude {
            u: "a@b".into(),
            m: "INBOX".into(),
            f: vec![],
            d: 0,
            z: 0,
            c: None,
        };
        let msg: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let t = write_tmp(d.path(), &p, &msg).unwrap();
        let path = t.path.clone().unwrap();
        let mut body = MessageBody::open(&path, t.offset, msg.len() as u64).unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 4096];
        loop {
            let n = body.read_piece(&mut buf).unwrap();
            assert!(n <= 4096);
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, msg);
        assert_eq!(body.remaining(), 0);
        // Still readable through the open handle after an unlink.
        let mut body = MessageBody::open(&path, t.offset, msg.len() as u64).unwrap();
        std::fs::remove_file(&path).unwrap();
        let mut all = vec![0u8; 20_000];
        assert_eq!(body.read_piece(&mut all).unwrap(), msg.len());
        assert_eq!(&all[..msg.len()], msg);
    }

    #[test]
    fn message_body_refuses_a_file_shorter_than_its_index_entry() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("1.msg");
        std::fs::write(&path, b"MSGD1 {}\r\nshort").unwrap();
        let e = MessageBody::open(&path, 10, 100).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        let e = MessageBody::open(&d.path().join("2.msg"), 10, 1).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
