//! Bulk import and export of users as CSV (docs/admin.md, "CSV").
//!
//! The first line names the columns, in any order: `address` (required),
//! `password`, `name`, `quota`, `msg_quota`, `status`, `aliases` and
//! `forward` (addresses separated by spaces), `keep_mailbox`,
//! `mail_host`, `partition`, `class`. Fields may be quoted ("" inside
//! quotes is a quote); a record is one line. An empty password gives the
//! user a random one nobody knows (set it later with `msgd user modify
//! --password-stdin`); the export writes no passwords, so an export
//! imports again.
//!
//! Import: each line is checked like `msgd user add` (rights, defaults,
//! limits, counted as the run goes); a bad line is reported with its
//! number and the run goes on; the exit status is 1 if any line failed.
//! On the embedded directory, passwords are hashed in parallel and each
//! batch of `BATCH` users is one edit of the file.

use std::collections::HashMap;
use std::io::{BufRead, Write as _};
use std::path::Path;

use super::*;
use crate::directory::{canonical_address, domain_of, password};

/// Users per edit of the embedded file.
const BATCH: usize = 1000;
/// Longest line accepted.
const MAX_LINE: usize = 64 * 1024;
/// Most lines in one file.
const MAX_LINES: usize = 1_000_000;
/// Largest file read (it is parsed whole before anything is written).
const MAX_BYTES: u64 = 512 * 1024 * 1024;

pub const COLUMNS: &[&str] = &[
    "address",
    "name",
    "password",
    "quota",
    "msg_quota",
    "status",
    "aliases",
    "forward",
    "keep_mailbox",
    "mail_host",
    "partition",
    "class",
];

/// Splits one CSV record.
pub fn split(line: &str) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    cur.push('"');
                } else {
                    quoted = false;
                }
            } else {
                cur.push(c);
            }
        } else if c == '"' {
            if !cur.is_empty() || was_quoted {
                return Err("a quote inside an unquoted field".into());
            }
            quoted = true;
            was_quoted = true;
        } else if c == ',' {
            out.push(std::mem::take(&mut cur));
            was_quoted = false;
        } else {
            if was_quoted {
                return Err("text after a closing quote".into());
            }
            cur.push(c);
        }
    }
    if quoted {
        return Err("an unclosed quote (a record is one line)".into());
    }
    out.push(cur);
    Ok(out)
}

/// Quotes a field if it needs it.
pub fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) || s.starts_with(' ') || s.ends_with(' ') {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn parse_u64(v: &str, what: &str) -> std::result::Result<Option<u64>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .map_err(|_| format!("{what}: '{v}' is not a number"))
}

fn words(v: &str) -> Vec<String> {
    v.split_whitespace().map(str::to_string).collect()
}

/// One record as a user and its password (None: empty).
pub fn record(
    header: &[String],
    fields: &[String],
) -> std::result::Result<(User, Option<Secret>), String> {
    if fields.len() != header.len() {
        return Err(format!(
            "{} fields, the header has {}",
            fields.len(),
            header.len()
        ));
    }
    let mut u = User::default();
    let mut pw = None;
    for (k, v) in header.iter().zip(fields) {
        let v = v.trim();
        match k.as_str() {
            "address" => u.address = v.to_string(),
            "name" => u.name = (!v.is_empty()).then(|| v.to_string()),
            "password" => pw = (!v.is_empty()).then(|| Secret::from(v)),
            "quota" => u.quota = parse_u64(v, "quota")?,
            "msg_quota" => u.msg_quota = parse_u64(v, "msg_quota")?,
            "status" if v.is_empty() => {}
            "status" => {
                u.status = EntryStatus::parse(v)
                    .ok_or_else(|| format!("status: '{v}' is not active, inactive or deleted"))?
            }
            "aliases" => u.aliases = words(v),
            "forward" => u.forward = words(v),
            "keep_mailbox" => {
                u.keep_mailbox = match v.to_ascii_lowercase().as_str() {
                    "" | "true" | "yes" | "1" => true,
                    "false" | "no" | "0" => false,
                    _ => return Err(format!("keep_mailbox: '{v}' is not true or false")),
                }
            }
            "mail_host" => u.mail_host = (!v.is_empty()).then(|| v.to_string()),
            "partition" => u.partition = (!v.is_empty()).then(|| v.to_string()),
            "class" => u.class = (!v.is_empty()).then(|| v.to_string()),
            _ => unreachable!("header checked"),
        }
    }
    if u.address.is_empty() {
        return Err("address: empty".into());
    }
    Ok((u, pw))
}

/// Reads the header; every column known, `address` present, none twice.
pub fn header(line: &str) -> anyhow::Result<Vec<String>> {
    let h: Vec<String> = split(line.trim_start_matches('\u{feff}'))
        .map_err(|e| anyhow::anyhow!("line 1: {e}"))?
        .into_iter()
        .map(|c| c.trim().to_ascii_lowercase())
        .collect();
    for (i, c) in h.iter().enumerate() {
        if !COLUMNS.contains(&c.as_str()) {
            anyhow::bail!(
                "line 1: unknown column '{c}' (known: {})",
                COLUMNS.join(", ")
            );
        }
        if h[..i].contains(c) {
            anyhow::bail!("line 1: column '{c}' twice");
        }
    }
    if !h.iter().any(|c| c == "address") {
        anyhow::bail!("line 1: no 'address' column");
    }
    Ok(h)
}

/// A failed line.
#[derive(Debug, Serialize)]
struct Failure {
    line: usize,
    error: String,
}

/// A domain and its (users, quota bytes) as counted so far.
type Counted = Option<(Domain, (u64, u64))>;

/// What the limits have seen so far, per domain.
#[derive(Default)]
struct Usage {
    domains: HashMap<String, Counted>,
}

impl Usage {
    /// The domain of an address, read once.
    async fn domain(&mut self, p: &Provisioner, address: &str) -> Result<Option<Domain>> {
        let dom = policy::address_domain(address);
        self.load(p, &dom).await?;
        Ok(self.domains[&dom].as_ref().map(|(d, _)| d.clone()))
    }

    async fn load(&mut self, p: &Provisioner, dom: &str) -> Result<()> {
        if !self.domains.contains_key(dom) {
            let v = match p.domain_info(dom).await? {
                Some(d) => {
                    let used = p.domain_usage(dom).await?;
                    Some((d, used))
                }
                None => None,
            };
            self.domains.insert(dom.to_string(), v);
        }
        Ok(())
    }

    /// Checks the limits for one new user and counts it.
    async fn take(&mut self, p: &Provisioner, u: &User) -> Result<()> {
        let dom = domain_of(&u.address).unwrap_or_default().to_string();
        if !self.domains.contains_key(&dom) {
            let v = match p.domain_info(&dom).await? {
                Some(d) => {
                    let used = p.domain_usage(&dom).await?;
                    Some((d, used))
                }
                None => None,
            };
            self.domains.insert(dom.clone(), v);
        }
        if let Some(Some((d, used))) = self.domains.get_mut(&dom) {
            if u.status == EntryStatus::Deleted {
                return Ok(());
            }
            let q = u.quota.or(d.default_quota);
            policy::within_limits(d, *used, None, Some(q))?;
            used.0 += 1;
            used.1 = used.1.saturating_add(q.unwrap_or(0));
        }
        Ok(())
    }
}

/// A user checked and completed, ready for the back end.
struct Ready {
    line: usize,
    user: User,
    password: Secret,
}

pub async fn import(p: &Provisioner, actor: &Actor, file: &Path, json: bool) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let f = std::fs::File::open(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    if f.metadata()?.len() > MAX_BYTES {
        anyhow::bail!(
            "{}: larger than {MAX_BYTES} bytes: split it",
            file.display()
        );
    }
    // Bounded even if the file grows while it is read.
    let f = std::io::Read::take(f, MAX_BYTES);
    let mut lines = std::io::BufReader::new(f);
    let mut buf = String::new();
    let mut read_line = |buf: &mut String| -> anyhow::Result<bool> {
        buf.clear();
        let n = std::io::Read::take(&mut lines, MAX_LINE as u64 + 1).read_line(buf)?;
        if n > MAX_LINE {
            anyhow::bail!("a line longer than {MAX_LINE} bytes");
        }
        Ok(n > 0)
    };
    if !read_line(&mut buf)? {
        anyhow::bail!("{}: empty file", file.display());
    }
    let head = header(buf.trim_end_matches(['\r', '\n']))?;
    // Parse every line first: the total for the progress, and syntax
    // errors before anything is written.
    let mut failures = Vec::new();
    let mut todo: Vec<(usize, User, Option<Secret>)> = Vec::new();
    let mut n = 1;
    while read_line(&mut buf)? {
        n += 1;
        if n > MAX_LINES {
            anyhow::bail!("more than {MAX_LINES} lines");
        }
        let l = buf.trim_end_matches(['\r', '\n']);
        if l.trim().is_empty() {
            continue;
        }
        match split(l).and_then(|f| record(&head, &f)) {
            Ok((u, pw)) => todo.push((n, u, pw)),
            Err(e) => failures.push(Failure { line: n, error: e }),
        }
    }
    let progress = crate::ops::progress::Progress::new();
    let mut display = crate::ops::progress::Display::new("msgd user import");
    progress.stage("importing users", Some(todo.len() as u64), "users");
    let mut usage = Usage::default();
    let mut added = 0usize;
    let mut it = todo.into_iter().peekable();
    while it.peek().is_some() {
        let chunk: Vec<_> = it.by_ref().take(BATCH).collect();
        let mut ready = Vec::with_capacity(chunk.len());
        for (line, u, pw) in chunk {
            let r: Result<User> = async {
                policy::may_touch_address(actor, &u.address)?;
                policy::may_create_user(actor, &u)?;
                let d = usage.domain(p, &u.address).await?;
                let u = policy::apply_defaults(&p.config, u, d.as_ref())?;
                usage.take(p, &u).await?;
                Ok(u)
            }
            .await;
            match r {
                Ok(user) => ready.push(Ready {
                    line,
                    user,
                    password: pw.unwrap_or_else(|| Secret::from(password::generate())),
                }),
                Err(e) => {
                    failures.push(Failure {
                        line,
                        error: e.to_string(),
                    });
                    progress.inc(1);
                }
            }
        }
        for (line, r) in add_batch(p, actor, ready).await? {
            match r {
                Ok(_) => added += 1,
                Err(e) => failures.push(Failure {
                    line,
                    error: e.to_string(),
                }),
            }
            progress.inc(1);
        }
        display.show(&progress.snapshot());
    }
    display.finish();
    failures.sort_by_key(|f| f.line);
    let secs = started.elapsed().as_secs_f64();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "added": added,
                "failed": failures,
                "seconds": secs,
            }))?
        );
    } else {
        for f in &failures {
            eprintln!("msgd: {}: line {}: {}", file.display(), f.line, f.error);
        }
        println!(
            "imported {added} users, {} line(s) failed, in {secs:.1} s",
            failures.len()
        );
    }
    if !failures.is_empty() {
        anyhow::bail!("{} line(s) of {} failed", failures.len(), file.display());
    }
    Ok(())
}

/// Adds checked users: on the embedded file, hashes in parallel and one
/// edit for all; on LDAP, one add each.
async fn add_batch(
    p: &Provisioner,
    actor: &Actor,
    ready: Vec<Ready>,
) -> anyhow::Result<Vec<(usize, Result<User>)>> {
    match &p.backend {
        Backend::Embedded(b) => {
            let workers = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1);
            let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(workers));
            let mut tasks = Vec::with_capacity(ready.len());
            for r in ready {
                let sem = sem.clone();
                let params = b.argon2();
                tasks.push(tokio::spawn(async move {
                    let _permit = sem.acquire_owned().await;
                    let h = embedded::hash_password(params, r.password).await;
                    (r.line, r.user, h)
                }));
            }
            let mut lines = Vec::new();
            let mut prepared = Vec::new();
            let mut out = Vec::new();
            for t in tasks {
                let (line, user, h) = t.await.map_err(|e| anyhow::anyhow!("hashing: {e}"))?;
                match h {
                    Ok(hash) => {
                        lines.push(line);
                        prepared.push(embedded::Prepared { user, hash });
                    }
                    Err(e) => out.push((line, Err(e))),
                }
            }
            let results = b.users_add(prepared).await?;
            for (line, r) in lines.into_iter().zip(results) {
                if let Ok(u) = &r {
                    p.audit.record(actor, "user.add", &u.address, u);
                }
                out.push((line, r));
            }
            Ok(out)
        }
        Backend::Ldap(_) => {
            // Rights, defaults and limits were checked above; the
            // Provisioner checks them again, against the directory. A
            // directory add is several round trips and a commit: a few
            // run at once. Rows that share an address or a local part
            // (the entry's RDN) with an earlier row of the batch run
            // after, one at a time, so that the earlier row's add is seen
            // by their checks.
            let (together, after) = independent(ready);
            let add =
                |r: Ready| async move { (r.line, p.user_add(actor, r.user, r.password).await) };
            let mut out: Vec<(usize, Result<User>)> =
                futures::stream::StreamExt::collect(futures::stream::StreamExt::buffered(
                    futures::stream::iter(together.into_iter().map(add)),
                    LDAP_IN_FLIGHT,
                ))
                .await;
            for r in after {
                out.push(add(r).await);
            }
            out.sort_by_key(|(line, _)| *line);
            Ok(out)
        }
    }
}

/// Directory adds in flight at once during an LDAP import.
const LDAP_IN_FLIGHT: usize = 8;

/// Splits a batch into rows that share no address and no local part with
/// an earlier row (safe to add at once) and the rest, in file order.
fn independent(ready: Vec<Ready>) -> (Vec<Ready>, Vec<Ready>) {
    let mut seen = std::collections::HashSet::new();
    let (mut together, mut after) = (Vec::new(), Vec::new());
    for r in ready {
        let u = &r.user;
        let mut keys: Vec<String> = std::iter::once(&u.address)
            .chain(&u.aliases)
            .chain(&u.equivalents)
            .map(|a| canonical_address(a))
            .collect();
        let locals: Vec<String> = keys
            .iter()
            .map(|a| format!("@local:{}", a.split('@').next().unwrap_or_default()))
            .collect();
        keys.extend(locals);
        let clash = keys.iter().any(|k| seen.contains(k));
        seen.extend(keys);
        if clash {
            after.push(r);
        } else {
            together.push(r);
        }
    }
    (together, after)
}

fn row(u: &User) -> String {
    let opt = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_default();
    let s = |v: &Option<String>| v.clone().unwrap_or_default();
    let mut aliases = u.aliases.clone();
    aliases.extend(u.equivalents.iter().cloned());
    [
        u.address.clone(),
        s(&u.name),
        String::new(),
        opt(u.quota),
        opt(u.msg_quota),
        u.status.as_str().to_string(),
        aliases.join(" "),
        u.forward.join(" "),
        u.keep_mailbox.to_string(),
        s(&u.mail_host),
        s(&u.partition),
        s(&u.class),
    ]
    .iter()
    .map(|f| field(f))
    .collect::<Vec<_>>()
    .join(",")
}

pub async fn export(
    p: &Provisioner,
    actor: &Actor,
    file: Option<&Path>,
    domain: Option<String>,
) -> anyhow::Result<()> {
    let mut out: Box<dyn std::io::Write> = match file {
        Some(f) => Box::new(std::io::BufWriter::new(
            crate::fsutil::private_file()
                .create(true)
                .truncate(true)
                .write(true)
                .open(f)
                .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    writeln!(out, "{}", COLUMNS.join(","))?;
    let mut q = Query {
        domain: domain.map(|d| canonical_address(&d)),
        limit: MAX_PAGE,
        ..Default::default()
    };
    let mut n = 0;
    loop {
        let page = p.user_list(actor, &q).await?;
        for u in &page.items {
            writeln!(out, "{}", row(u))?;
        }
        n += page.items.len();
        q.offset += page.items.len();
        if page.items.is_empty() || q.offset >= page.total {
            break;
        }
    }
    out.flush()?;
    if file.is_some() {
        eprintln!("msgd: exported {n} users");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_sharing_an_address_or_a_local_part_are_added_after_the_rest() {
        let h = header("address,aliases").unwrap();
        let rows = [
            "a@x.test,",
            "b@x.test,al@x.test",
            "A@X.test,", // same address as line 2
            "c@x.test,",
            "a@y.test,",  // same local part (the RDN) as line 2
            "al@x.test,", // an alias of line 3
            "d@x.test,",
        ];
        let ready: Vec<Ready> = rows
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let (user, _) = record(&h, &split(l).unwrap()).unwrap();
                Ready {
                    line: i + 2,
                    user,
                    password: Secret::from("x".to_string()),
                }
            })
            .collect();
        let (together, after) = independent(ready);
        let lines = |v: &[Ready]| v.iter().map(|r| r.line).collect::<Vec<_>>();
        assert_eq!(lines(&together), [2, 3, 5, 8]);
        assert_eq!(lines(&after), [4, 6, 7]);
    }

    #[test]
    fn split_and_quote() {
        assert_eq!(split("a,b,,c").unwrap(), ["a", "b", "", "c"]);
        assert_eq!(
            split(r#""x, y","say ""hi""",z"#).unwrap(),
            ["x, y", r#"say "hi""#, "z"]
        );
        assert!(split(r#""open"#).is_err());
        assert!(split(r#"a"b"#).is_err());
        assert!(split(r#""a"b"#).is_err());
        for s in ["plain", "a,b", r#"q"uote"#, " pad"] {
            assert_eq!(split(&field(s)).unwrap(), [s]);
        }
    }

    #[test]
    fn header_and_records() {
        assert!(header("address,bogus").is_err());
        assert!(header("name").is_err());
        assert!(header("address,address").is_err());
        let h = header("Address,password,quota,aliases,status").unwrap();
        let (u, pw) = record(
            &h,
            &split("a@x.test,secret,100,b@x.test c@x.test,inactive").unwrap(),
        )
        .unwrap();
        assert_eq!(u.address, "a@x.test");
        assert_eq!(pw.unwrap().expose(), "secret");
        assert_eq!(u.quota, Some(100));
        assert_eq!(u.aliases, ["b@x.test", "c@x.test"]);
        assert_eq!(u.status, EntryStatus::Inactive);
        assert!(record(&h, &split("a@x.test,,lots,,").unwrap()).is_err());
        assert!(record(&h, &split("a@x.test,,").unwrap()).is_err());
    }

    #[test]
    fn export_row_imports_again() {
        let u = User {
            address: "a@x.test".into(),
            name: Some("A, Person".into()),
            aliases: vec!["b@x.test".into()],
            quota: Some(5),
            ..Default::default()
        };
        let h: Vec<String> = COLUMNS.iter().map(|s| s.to_string()).collect();
        let (back, pw) = record(&h, &split(&row(&u)).unwrap()).unwrap();
        assert_eq!(back, u);
        assert!(pw.is_none());
    }
}
