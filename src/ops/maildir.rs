//! Maildir and Maildir++ on disk, both ways (`msgd import` reads,
//! `msgd export` writes).
//!
//! Layout: the root folder is INBOX (`cur/ new/ tmp/`), every other
//! mailbox a `.A.B` folder beside them (Maildir++: `.` separates levels;
//! names in modified UTF-7, as Dovecot and Courier write them). A message
//! file's name ends in `:2,FLAGS` (also `;2,` / `!2,` as some file systems
//! need): `D` \Draft, `F` \Flagged, `P` passed ($Forwarded), `R`
//! \Answered, `S` \Seen, `T` \Deleted, and lowercase `a`..`z` the keywords
//! numbered in the folder's `dovecot-keywords` file (`N name` lines). The
//! internal date is the file's mtime; Dovecot's `,S=`/`,W=` fields are
//! size hints and not trusted.
//!
//! Everything read here is hostile: folder names are checked (no empty
//! level, no `..`), only regular files are read (a symlink is refused, not
//! followed), a file larger than the message limit is refused before it
//! is read, and NUL bytes are refused. Everything written stays below the
//! destination: names are encoded so no level is `.`/`..` or holds `/`,
//! folders that are symlinks are refused, files are created exclusively.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

use crate::store::Flags;

/// `$Forwarded`: the keyword the `P` (passed) letter stands for.
pub const FORWARDED: &str = "$Forwarded";
const SYSTEM_LETTERS: [(char, u8); 5] = [
    ('D', Flags::DRAFT),
    ('F', Flags::FLAGGED),
    ('R', Flags::ANSWERED),
    ('S', Flags::SEEN),
    ('T', Flags::DELETED),
];
/// A `.` inside a mailbox level, in a folder name (modified UTF-7 of `.`).
const DOT: &str = "&AC4-";
/// Most bytes of a `dovecot-keywords` file read.
const MAX_KEYWORDS_FILE: u64 = 64 * 1024;

/// Entries not read, with the reason: (path or name, why).
pub type Refusals = Vec<(String, String)>;

/// One folder of a Maildir: where it is and the mailbox it maps to.
#[derive(Debug, Clone, PartialEq)]
pub struct Folder {
    pub path: PathBuf,
    pub mailbox: String,
}

/// The folders of a Maildir++ tree: the root (INBOX) and every `.A.B`
/// folder holding `cur` or `new`. A folder whose name cannot be a mailbox
/// is returned in the second list with the reason.
pub fn folders(root: &Path) -> anyhow::Result<(Vec<Folder>, Refusals)> {
    if !root.join("cur").is_dir() && !root.join("new").is_dir() {
        bail!(
            "{} is not a Maildir (no cur/ or new/ folder)",
            root.display()
        );
    }
    let mut out = vec![Folder {
        path: root.to_path_buf(),
        mailbox: "INBOX".into(),
    }];
    let mut bad = Vec::new();
    let mut entries: Vec<_> = fs::read_dir(root)
        .with_context(|| format!("reading {}", root.display()))?
        .filter_map(|e| e.ok())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let Ok(name) = e.file_name().into_string() else {
            bad.push((
                e.file_name().to_string_lossy().into_owned(),
                "folder name is not UTF-8".into(),
            ));
            continue;
        };
        let Some(rest) = name.strip_prefix('.') else {
            continue;
        };
        // Only real folders: a symlink is not followed.
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if !is_dir {
            continue;
        }
        let p = e.path();
        if !p.join("cur").is_dir() && !p.join("new").is_dir() {
            continue;
        }
        match folder_mailbox(rest) {
            Ok(m) => out.push(Folder {
                path: p,
                mailbox: m,
            }),
            Err(why) => bad.push((name, why)),
        }
    }
    Ok((out, bad))
}

/// A Maildir++ folder name (without its leading `.`) as a mailbox name:
/// levels split at `.`, each decoded from modified UTF-7; a Courier-style
/// `INBOX.` prefix is dropped.
pub fn folder_mailbox(rest: &str) -> Result<String, String> {
    let mut levels: Vec<String> = Vec::new();
    for part in rest.split('.') {
        if part.is_empty() {
            return Err("empty level in the folder name".into());
        }
        // `&AC4-` is a `.` inside a level (as `export` writes it).
        let dec = part
            .split(DOT)
            .map(|p| crate::imap::utf7::decode(p).unwrap_or_else(|| p.to_string()))
            .collect::<Vec<_>>()
            .join(".");
        if dec.is_empty() || dec.contains('/') || dec.chars().any(|c| c.is_control()) {
            return Err(format!("folder level {part:?} cannot be a mailbox name"));
        }
        levels.push(dec);
    }
    if levels.len() > 1 && levels[0].eq_ignore_ascii_case("INBOX") {
        levels.remove(0);
    }
    let name = levels.join("/");
    crate::store::normalize_name(&name).map_err(|e| format!("{e}"))
}

/// A mailbox name as a Maildir++ folder name (`.A.B`; INBOX is the root,
/// returned as None). Each level is modified UTF-7 with `.` written
/// `&AC4-`, so no level is empty, `.`, `..` or holds a separator.
pub fn mailbox_folder(mailbox: &str) -> Result<Option<String>, String> {
    if mailbox == "INBOX" {
        return Ok(None);
    }
    let mut out = String::new();
    for level in mailbox.split(crate::store::DELIMITER) {
        if level.is_empty() {
            return Err(format!("mailbox {mailbox:?} has an empty level"));
        }
        out.push('.');
        let enc = crate::imap::utf7::encode(level).replace('.', DOT);
        out.push_str(&enc);
    }
    if out.contains('/') || out.contains('\0') || out.len() > 255 {
        return Err(format!("mailbox {mailbox:?} cannot be a folder name"));
    }
    Ok(Some(out))
}

/// The `dovecot-keywords` file of a folder: letter index -> keyword.
pub fn read_keywords(folder: &Path) -> anyhow::Result<BTreeMap<u8, String>> {
    use std::io::Read;
    let p = folder.join("dovecot-keywords");
    let mut out = BTreeMap::new();
    let f = match fs::File::open(&p) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
    };
    let mut text = String::new();
    let mut bytes = Vec::new();
    f.take(MAX_KEYWORDS_FILE)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", p.display()))?;
    text.push_str(&String::from_utf8_lossy(&bytes));
    for line in text.lines() {
        let Some((n, name)) = line.trim().split_once(' ') else {
            continue;
        };
        let (Ok(n), name) = (n.parse::<u8>(), name.trim()) else {
            continue;
        };
        if n < 26 && valid_keyword(name) {
            out.insert(n, name.to_string());
        }
    }
    Ok(out)
}

/// An IMAP atom usable as a keyword.
pub fn valid_keyword(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 200
        && !k.starts_with('\\')
        && k.bytes().all(|b| {
            b > b' ' && b < 0x7f && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b']')
        })
}

/// Flags from a message file's name (`...:2,FRS`, `...;2,ab`); `new/`
/// messages have none.
pub fn flags_from_name(name: &str, keywords: &BTreeMap<u8, String>) -> Flags {
    let mut f = Flags::default();
    let info = [":2,", ";2,", "!2,"]
        .iter()
        .filter_map(|sep| name.rfind(sep).map(|i| &name[i + sep.len()..]))
        .next();
    let Some(info) = info else {
        return f;
    };
    for c in info.chars() {
        if let Some((_, bit)) = SYSTEM_LETTERS.iter().find(|(l, _)| *l == c) {
            f.bits |= bit;
        } else if c == 'P' {
            f.add_name(FORWARDED);
        } else if c.is_ascii_lowercase() {
            if let Some(k) = keywords.get(&(c as u8 - b'a')) {
                f.add_name(k);
            }
        }
    }
    f
}

/// The `:2,` info letters of `flags` (ASCII order, as Maildir wants),
/// keywords mapped through `letters` (keywords without one are dropped and
/// counted in the second value).
pub fn name_letters(flags: &Flags, letters: &HashMap<String, u8>) -> (String, usize) {
    let mut out: Vec<char> = Vec::new();
    for (l, bit) in SYSTEM_LETTERS {
        if flags.has(bit) {
            out.push(l);
        }
    }
    let mut dropped = 0;
    for k in &flags.keywords {
        if k.eq_ignore_ascii_case(FORWARDED) {
            out.push('P');
        } else if let Some(n) = letters.get(&k.to_ascii_lowercase()) {
            out.push((b'a' + n) as char);
        } else {
            dropped += 1;
        }
    }
    out.sort_unstable();
    out.dedup();
    (out.into_iter().collect(), dropped)
}

/// A message file of a source folder, to read in this order.
#[derive(Debug)]
pub struct SourceFile {
    pub path: PathBuf,
    pub name: String,
    pub mtime: i64,
    pub len: u64,
}

/// The message files of a folder (`cur/` and `new/`), oldest first. Entries
/// that are not regular files (symlinks, folders) come back as refusals.
pub fn message_files(folder: &Path) -> (Vec<SourceFile>, Refusals) {
    let mut files = Vec::new();
    let mut bad = Vec::new();
    for sub in ["cur", "new"] {
        let dir = folder.join(sub);
        let Ok(rd) = fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.filter_map(|e| e.ok()) {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            match fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_file() => {
                    let mtime = m
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|d| d.as_secs() as i64)
                        .unwrap_or(0);
                    files.push(SourceFile {
                        path,
                        name,
                        mtime,
                        len: m.len(),
                    });
                }
                Ok(_) => bad.push((
                    path.display().to_string(),
                    "not a regular file (symlinks are not followed)".into(),
                )),
                Err(e) => bad.push((path.display().to_string(), e.to_string())),
            }
        }
    }
    files.sort_by(|a, b| (a.mtime, &a.name).cmp(&(b.mtime, &b.name)));
    (files, bad)
}

/// Bare LF line ends made CRLF (a CR already there is kept).
pub fn to_crlf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 40 + 2);
    let mut prev = 0u8;
    for &b in data {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

/// CRLF line ends made LF, as Maildir readers expect.
pub fn to_lf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i] == b'\r' && data.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(data[i]);
        i += 1;
    }
    out
}

/// A folder to write messages into, below the export's root.
pub struct OutFolder {
    pub path: PathBuf,
    /// Unique part of each file already there -> its current name.
    existing: HashMap<String, String>,
    /// keyword (lowercase) -> letter index; `names` in index order.
    letters: HashMap<String, u8>,
    names: Vec<String>,
}

/// Creates (or reopens, for a resumed export) a Maildir folder below
/// `root`: `folder` None is the root itself.
pub fn open_out(root: &Path, folder: Option<&str>) -> anyhow::Result<OutFolder> {
    ensure_real_dir(root)?;
    let path = match folder {
        None => root.to_path_buf(),
        Some(f) => {
            if f.contains('/') || f == "." || f == ".." || !f.starts_with('.') {
                bail!("refusing folder name {f:?}");
            }
            let p = root.join(f);
            ensure_real_dir(&p)?;
            // Maildir++ marks subfolders (Courier, Dovecot).
            let marker = p.join("maildirfolder");
            if fs::symlink_metadata(&marker).is_err() {
                fs::File::create(&marker)?;
            }
            p
        }
    };
    for sub in ["cur", "new", "tmp"] {
        ensure_real_dir(&path.join(sub))?;
    }
    let mut existing = HashMap::new();
    for e in fs::read_dir(path.join("cur"))?.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        let unique = name.split([':', ';', '!']).next().unwrap_or("").to_string();
        existing.insert(unique, name);
    }
    let mut letters = HashMap::new();
    let mut names = Vec::new();
    for (n, k) in read_keywords(&path)? {
        while names.len() < n as usize {
            names.push(String::new());
        }
        names.push(k.clone());
        letters.insert(k.to_ascii_lowercase(), n);
    }
    Ok(OutFolder {
        path,
        existing,
        letters,
        names,
    })
}

fn ensure_real_dir(p: &Path) -> anyhow::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.file_type().is_dir() => Ok(()),
        Ok(_) => bail!(
            "{} exists and is not a folder (symlinks are refused)",
            p.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir(p).with_context(|| format!("creating {}", p.display()))
        }
        Err(e) => Err(e).with_context(|| format!("{}", p.display())),
    }
}

/// What writing one message did.
#[derive(Debug, PartialEq, Eq)]
pub enum Wrote {
    New,
    /// Already there from an earlier run; its flags were brought up to date.
    Kept,
}

impl OutFolder {
    /// Letters for keywords, assigned in first-seen order (26 at most).
    pub fn learn_keywords(&mut self, flags: &Flags) {
        for k in &flags.keywords {
            if k.eq_ignore_ascii_case(FORWARDED)
                || self.letters.contains_key(&k.to_ascii_lowercase())
            {
                continue;
            }
            if self.names.len() < 26 && valid_keyword(k) {
                self.letters
                    .insert(k.to_ascii_lowercase(), self.names.len() as u8);
                self.names.push(k.clone());
            }
        }
    }

    /// Writes one message (tmp/, fsync, mtime, rename into cur/), unless
    /// a file with the same unique name exists (then only its flags are
    /// updated). Returns how many keywords had no letter.
    pub fn write(
        &mut self,
        unique: &str,
        data_crlf: &[u8],
        flags: &Flags,
        date: i64,
    ) -> anyhow::Result<(Wrote, usize)> {
        let (letters, dropped) = name_letters(flags, &self.letters);
        let data = to_lf(data_crlf);
        let unique = format!("{unique},S={},W={}", data.len(), data_crlf.len());
        let name = format!("{unique}:2,{letters}");
        let cur = self.path.join("cur");
        if let Some(old) = self.existing.get(&unique) {
            if *old != name {
                fs::rename(cur.join(old), cur.join(&name))?;
                self.existing.insert(unique, name);
            }
            return Ok((Wrote::Kept, dropped));
        }
        let tmp = self.path.join("tmp").join(&unique);
        let _ = fs::remove_file(&tmp);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(&data)?;
        let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(date.max(0) as u64);
        f.set_times(fs::FileTimes::new().set_modified(when).set_accessed(when))?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, cur.join(&name))?;
        self.existing.insert(unique, name);
        Ok((Wrote::New, dropped))
    }

    /// Writes `dovecot-keywords` and makes the folder's entries durable.
    pub fn finish(&self) -> anyhow::Result<()> {
        if !self.names.is_empty() {
            let mut text = String::new();
            for (i, k) in self.names.iter().enumerate() {
                if !k.is_empty() {
                    text.push_str(&format!("{i} {k}\n"));
                }
            }
            let tmp = self.path.join("tmp").join("dovecot-keywords.msgd");
            let _ = fs::remove_file(&tmp);
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, self.path.join("dovecot-keywords"))?;
        }
        for d in [self.path.join("cur"), self.path.clone()] {
            fs::File::open(&d)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kw() -> BTreeMap<u8, String> {
        BTreeMap::from([(0, "$Junk".to_string()), (2, "work".to_string())])
    }

    #[test]
    fn maildir_info_letters_map_to_flags() {
        let f = flags_from_name("1700000000.M1P2.host,S=10,W=11:2,DFPRSTac", &kw());
        assert!(f.has(Flags::DRAFT) && f.has(Flags::FLAGGED) && f.has(Flags::ANSWERED));
        assert!(f.has(Flags::SEEN) && f.has(Flags::DELETED));
        assert!(f.has_keyword("$Forwarded") && f.has_keyword("$Junk") && f.has_keyword("work"));
        // unknown letter b is ignored, new/ names have no info
        assert_eq!(flags_from_name("x:2,b", &kw()), Flags::default());
        assert_eq!(
            flags_from_name("1700000000.M1P2.host", &kw()),
            Flags::default()
        );
        assert!(flags_from_name("x;2,S", &kw()).has(Flags::SEEN));
    }

    #[test]
    fn maildir_letters_round_trip_in_ascii_order() {
        let mut letters = HashMap::new();
        letters.insert("$junk".to_string(), 0u8);
        let f = Flags::from_names(&["\\Seen", "\\Answered", "$Junk", "$Forwarded", "other"]);
        let (s, dropped) = name_letters(&f, &letters);
        assert_eq!(s, "PRSa");
        assert_eq!(dropped, 1);
        let mut back = BTreeMap::new();
        back.insert(0, "$Junk".to_string());
        let g = flags_from_name(&format!("x:2,{s}"), &back);
        assert_eq!(
            g,
            Flags::from_names(&["\\Seen", "\\Answered", "$Junk", "$Forwarded"])
        );
    }

    #[test]
    fn maildirpp_folder_names_both_ways() {
        assert_eq!(folder_mailbox("Sub.Folder").unwrap(), "Sub/Folder");
        assert_eq!(folder_mailbox("INBOX.Sent").unwrap(), "Sent");
        assert_eq!(folder_mailbox("Entw&APw-rfe").unwrap(), "Entwürfe");
        assert!(folder_mailbox("a..b").is_err());
        assert!(folder_mailbox("").is_err());
        // an encoded "/" is not a separator: the level stays as written
        assert_eq!(folder_mailbox("a.&AC8-etc").unwrap(), "a/&AC8-etc");
        for name in [
            "Sent",
            "A/B",
            "Entwürfe",
            "a.b",
            "&amp",
            "日.本",
            "&.",
            "a&AC4-b",
        ] {
            let f = mailbox_folder(name).unwrap().unwrap();
            assert!(!f.contains('/'), "{f}");
            assert!(f[1..]
                .split('.')
                .all(|l| !l.is_empty() && l != "." && l != ".."));
            assert_eq!(folder_mailbox(&f[1..]).unwrap(), name, "{f}");
        }
        assert_eq!(mailbox_folder("INBOX").unwrap(), None);
        // ".." is written as a level that is no path step, and read back
        let f = mailbox_folder("x/../y").unwrap().unwrap();
        assert_eq!(f, ".x.&AC4-&AC4-.y");
        assert_eq!(folder_mailbox(&f[1..]).unwrap(), "x/../y");
    }

    #[test]
    fn dovecot_keywords_file_is_read_and_bounded() {
        let d = tempfile::tempdir().unwrap();
        fs::write(
            d.path().join("dovecot-keywords"),
            "0 $Junk\n1 NonJunk\nbad line\n30 toolarge\n2 \\Seen\n",
        )
        .unwrap();
        let k = read_keywords(d.path()).unwrap();
        assert_eq!(k.len(), 2);
        assert_eq!(k[&1], "NonJunk");
    }

    #[test]
    fn line_ends_convert_both_ways() {
        assert_eq!(to_crlf(b"a\nb\r\nc\n"), b"a\r\nb\r\nc\r\n");
        assert_eq!(to_lf(b"a\r\nb\r\nc\rd"), b"a\nb\nc\rd");
    }

    #[test]
    fn export_writes_once_and_updates_flags_on_rerun() {
        let d = tempfile::tempdir().unwrap();
        let mut f = open_out(d.path(), Some(".A.B")).unwrap();
        let flags = Flags::from_names(&["\\Seen", "work"]);
        f.learn_keywords(&flags);
        let (w, _) = f
            .write("100.M1U5.msgd", b"Subject: x\r\n\r\nhi\r\n", &flags, 100)
            .unwrap();
        assert_eq!(w, Wrote::New);
        f.finish().unwrap();
        let mut f = open_out(d.path(), Some(".A.B")).unwrap();
        let flags2 = Flags::from_names(&["\\Seen", "\\Flagged", "work"]);
        let (w, _) = f
            .write("100.M1U5.msgd", b"Subject: x\r\n\r\nhi\r\n", &flags2, 100)
            .unwrap();
        assert_eq!(w, Wrote::Kept);
        let names: Vec<_> = fs::read_dir(d.path().join(".A.B/cur"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["100.M1U5.msgd,S=15,W=18:2,FSa".to_string()]);
        assert!(d.path().join(".A.B/maildirfolder").exists());
        assert_eq!(
            fs::read_to_string(d.path().join(".A.B/dovecot-keywords")).unwrap(),
            "0 work\n"
        );
        assert!(open_out(d.path(), Some("../x")).is_err());
    }

    #[test]
    fn export_refuses_symlinked_folders() {
        let d = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), d.path().join(".Evil")).unwrap();
        assert!(open_out(d.path(), Some(".Evil")).is_err());
    }
}
