//! `msgd config get|set|list|check`: the original product's configutil.
//!
//! Works on the `--config` file itself, before (and without) loading it for
//! a server, so it also runs beside a running server: `set` changes the
//! file, `systemctl reload msgd@ROLE` (SIGHUP) applies it
//! (`roles::run::reload`, which uses [`changed_keys`] and
//! [`needs_restart`] from here to say what applied and what waits for a
//! restart).
//!
//! Invariants:
//! - Keys are the dotted paths of the TOML (`store.dbcachesize`,
//!   `store.partition.NAME.path`, `listener.imap.bind`); a part holding a
//!   dot is written in double quotes (`mta.tls_policy."example.com"`).
//! - `get` and `list` show effective values: built-in defaults, the role
//!   profiles of `--role`, the file and `MSGD_*` variables, exactly as
//!   `config::load` builds them for the server.
//! - `set` never writes a file the server would refuse: the edited text
//!   (toml_edit: comments and layout kept) is written to a temporary file
//!   beside the original, loaded with `config::load` (unknown keys, types,
//!   cross-key rules), and only then renamed over the original (fsync of
//!   the file and of the folder; same permission bits, and the same owner
//!   where allowed). On refusal the file is untouched (exit 2). The file is
//!   read and replaced under an exclusive lock on it, so concurrent `set`s
//!   apply one after the other and none is lost.
//! - A value's TOML type follows the schema: the type of the key's
//!   effective value decides how the argument is read (a string as is, a
//!   number, `true`/`false`, an array as a TOML literal `["a", "b"]` or a
//!   comma list `a, b`). For a key with no effective value (an unset
//!   option, a new partition) a TOML literal is tried first, then a string.
//! - Secrets are never printed: keys whose last part names a password or a
//!   secret (`*password*`, `*secret*`, but not `*_file`, which name files)
//!   show `********`.
//!
//! Exit codes: 0 ok, 1 failure (I/O), 2 usage or configuration (unknown
//! key, bad value, a file that does not load).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::Value as Json;
use toml_edit::{DocumentMut, Item, Table};

use crate::cli::{EXIT_FAILURE, EXIT_OK, EXIT_USAGE};
use crate::config::{self, Config};
use crate::roles::Role;

#[derive(clap::Subcommand, Debug, Clone)]
pub enum ConfigCmd {
    /// Print a key's effective value (a table: every key below it).
    Get { key: String },
    /// Change keys in the --config file, keeping its comments. Arrays:
    /// a TOML literal '["a", "b"]' or a comma list 'a, b'.
    Set {
        /// KEY VALUE [KEY VALUE]...: keys that must change together (e.g.
        /// tls.cert and tls.key) in one checked write.
        #[arg(required = true, num_args = 2.., allow_hyphen_values = true, value_names = ["KEY", "VALUE"])]
        pairs: Vec<String>,
    },
    /// Print every key and its effective value.
    List {
        /// Only the keys set in the --config file.
        #[arg(long)]
        changed: bool,
    },
    /// Check the file; print every error; exit 2 if any (= check-config).
    Check,
}

/// What the user sees masked instead of a secret.
pub const MASK: &str = "********";

/// A failure with its exit code.
#[derive(Debug)]
struct Failed {
    code: i32,
    lines: Vec<String>,
}

impl Failed {
    fn usage(msg: impl Into<String>) -> Failed {
        Failed {
            code: EXIT_USAGE,
            lines: vec![msg.into()],
        }
    }
    fn io(msg: impl Into<String>) -> Failed {
        Failed {
            code: EXIT_FAILURE,
            lines: vec![msg.into()],
        }
    }
}

/// `file`: the `--config` file (required for `set`); `role`: `--role`.
pub fn cli(file: Option<&Path>, role: &str, cmd: ConfigCmd) -> i32 {
    let roles = match Role::parse_list(role) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("msgd: {e}");
            return EXIT_USAGE;
        }
    };
    let r = match cmd {
        ConfigCmd::Get { key } => get(file, &roles, &key),
        ConfigCmd::Set { pairs } => set(file, &roles, &pairs),
        ConfigCmd::List { changed } => list(file, &roles, changed),
        ConfigCmd::Check => check(file, &roles),
    };
    match r {
        Ok(lines) => {
            let mut out = std::io::stdout().lock();
            for l in lines {
                let _ = writeln!(out, "{l}");
            }
            EXIT_OK
        }
        Err(f) => {
            // The headline, then one indented line per error.
            for (i, l) in f.lines.iter().enumerate() {
                if i == 0 {
                    eprintln!("msgd: {l}");
                } else {
                    eprintln!("  {l}");
                }
            }
            f.code
        }
    }
}

fn origin(file: Option<&Path>) -> String {
    file.map(|p| p.display().to_string())
        .unwrap_or_else(|| "built-in defaults".into())
}

/// The effective configuration, as the server would load it.
fn effective(file: Option<&Path>, roles: &[Role]) -> Result<Config, Failed> {
    config::load(file, roles)
        .map(|l| l.config)
        .map_err(|errors| {
            let mut lines = vec![format!("configuration errors ({}):", origin(file))];
            lines.extend(errors);
            Failed {
                code: EXIT_USAGE,
                lines,
            }
        })
}

fn check(file: Option<&Path>, roles: &[Role]) -> Result<Vec<String>, Failed> {
    let c = effective(file, roles)?;
    let mut out: Vec<String> = config::deprecated_keys(&c)
        .into_iter()
        .map(|k| format!("warning: {k} is deprecated (see etc/msgd.toml)"))
        .collect();
    out.push("configuration ok".into());
    Ok(out)
}

fn get(file: Option<&Path>, roles: &[Role], key: &str) -> Result<Vec<String>, Failed> {
    let path = parse_key(key).map_err(Failed::usage)?;
    let c = effective(file, roles)?;
    let tree = to_json(&c);
    let Some(v) = lookup(&tree, &path) else {
        return Err(Failed::usage(format!(
            "{key}: no such key in the effective configuration (unknown, or an option that is not set)"
        )));
    };
    if v.is_object() {
        let mut out = Vec::new();
        flatten(v, &mut path.clone(), &mut |p, v| {
            out.push(format!("{} = {}", join_key(p), shown(p, v)))
        });
        return Ok(out);
    }
    Ok(vec![match v {
        Json::String(_) if is_secret(&path) => MASK.to_string(),
        Json::String(s) => s.clone(),
        other => shown(&path, other),
    }])
}

fn list(file: Option<&Path>, roles: &[Role], changed: bool) -> Result<Vec<String>, Failed> {
    let c = effective(file, roles)?;
    let tree = to_json(&c);
    let in_file = if changed {
        let Some(file) = file else {
            return Err(Failed::usage("list --changed: give --config FILE"));
        };
        let text =
            fs::read_to_string(file).map_err(|e| Failed::io(format!("{}: {e}", file.display())))?;
        let doc: DocumentMut = text
            .parse()
            .map_err(|e| Failed::usage(format!("{}: {e}", file.display())))?;
        let mut keys = Vec::new();
        file_leaves(doc.as_item(), &mut Vec::new(), &mut keys);
        Some(keys)
    } else {
        None
    };
    let mut out = Vec::new();
    flatten(&tree, &mut Vec::new(), &mut |p, v| {
        let keep = in_file
            .as_ref()
            .is_none_or(|keys| keys.iter().any(|k| p.starts_with(k)));
        if keep {
            out.push(format!("{} = {}", join_key(p), shown(p, v)));
        }
    });
    Ok(out)
}

/// One `KEY VALUE` of `set`, read and typed.
struct Change {
    key: String,
    path: Vec<String>,
    raw: String,
    candidates: Vec<toml_edit::Value>,
}

fn set(file: Option<&Path>, roles: &[Role], pairs: &[String]) -> Result<Vec<String>, Failed> {
    let Some(file) = file else {
        return Err(Failed::usage(
            "config set: give the file to change with --config FILE",
        ));
    };
    if pairs.len() < 2 || !pairs.len().is_multiple_of(2) {
        return Err(Failed::usage(
            "config set: give KEY VALUE pairs (KEY VALUE [KEY VALUE]...)",
        ));
    }
    // A symlinked config: change the file it points to, keep the link.
    let file = fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    // Held until the new file is renamed in: two `set`s at once both land.
    let (text, meta, _lock) =
        read_locked(&file).map_err(|e| Failed::io(format!("{}: {e}", file.display())))?;
    config::check_nesting(&file.display().to_string(), &text).map_err(Failed::usage)?;
    let doc: DocumentMut = text
        .parse()
        .map_err(|e| Failed::usage(format!("{}: not TOML: {e}", file.display())))?;
    // The schema type: the key's effective value with this file, or with
    // the built-in defaults when the file does not load yet.
    let schema = config::load(Some(&file), roles)
        .or_else(|_| config::load(None, roles))
        .map(|l| to_json(&l.config))
        .unwrap_or(Json::Null);
    let mut changes = Vec::new();
    for pair in pairs.chunks(2) {
        let (key, raw) = (&pair[0], &pair[1]);
        let path = parse_key(key).map_err(Failed::usage)?;
        let hint = lookup(&schema, &path);
        if hint.is_some_and(Json::is_object) && !raw.trim_start().starts_with('{') {
            return Err(Failed::usage(format!(
                "{key} is a table: set the keys below it ({key}.NAME)"
            )));
        }
        let candidates = typed_candidates(raw, hint);
        if candidates.is_empty() {
            let kind = match hint {
                Some(Json::Number(_)) => "a number",
                Some(Json::Bool(_)) => "true or false",
                Some(Json::Array(_)) => "an array",
                _ => "a TOML value",
            };
            return Err(Failed::usage(format!(
                "config set {key}: '{}' is not {kind}; {} left unchanged",
                mask_value(raw, &path, raw),
                file.display()
            )));
        }
        changes.push(Change {
            key: key.clone(),
            path,
            raw: raw.clone(),
            candidates,
        });
    }
    let mode = meta
        .as_ref()
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(crate::fsutil::FILE_MODE);
    let owner = meta.as_ref().map(|m| (m.uid(), m.gid()));
    let attempts = changes
        .iter()
        .map(|c| c.candidates.len())
        .max()
        .unwrap_or(0);
    let mut first_error: Option<Vec<String>> = None;
    // Attempt i uses each key's i-th reading (or its last one).
    for i in 0..attempts {
        let mut edited = doc.clone();
        for c in &changes {
            let v = c.candidates[i.min(c.candidates.len() - 1)].clone();
            set_in(&mut edited, &c.path, v).map_err(Failed::usage)?;
        }
        let new_text = edited.to_string();
        let tmp = Staged::write(&file, &new_text, mode, owner)
            .map_err(|e| Failed::io(format!("{}: {e}", file.display())))?;
        match config::load(Some(tmp.path()), roles) {
            Ok(_) => {
                tmp.commit(&file)
                    .map_err(|e| Failed::io(format!("{}: {e}", file.display())))?;
                let mut out = Vec::new();
                let mut restart = false;
                for c in &changes {
                    let v = &c.candidates[i.min(c.candidates.len() - 1)];
                    let shown_value = if is_secret(&c.path) {
                        MASK.to_string()
                    } else {
                        v.to_string().trim().to_string()
                    };
                    out.push(format!("{} = {shown_value}", join_key(&c.path)));
                    restart |= needs_restart(&join_key(&c.path));
                }
                out.push(if restart {
                    "written; takes effect when msgd restarts".into()
                } else {
                    "written; a running msgd applies it to new sessions on reload (systemctl reload, or SIGHUP)".into()
                });
                return Ok(out);
            }
            Err(errors) => {
                // The errors name the file being changed, not the copy.
                let tmp_path = tmp.path().display().to_string();
                let tmp_name = tmp
                    .path()
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let real = file.display().to_string();
                first_error.get_or_insert_with(|| {
                    errors
                        .into_iter()
                        .map(|e| e.replace(&tmp_path, &real).replace(&tmp_name, &real))
                        .map(|e| {
                            changes
                                .iter()
                                .fold(e, |e, c| mask_value(&e, &c.path, &c.raw))
                        })
                        .collect()
                });
                // `tmp` is removed on drop.
            }
        }
    }
    let keys: Vec<&str> = changes.iter().map(|c| c.key.as_str()).collect();
    let mut lines = vec![format!(
        "config set {}: refused, {} left unchanged:",
        keys.join(" "),
        file.display()
    )];
    lines.extend(first_error.unwrap_or_default());
    Err(Failed {
        code: EXIT_USAGE,
        lines,
    })
}

/// Reads the file under an exclusive lock (flock) on it, so that
/// concurrent `set`s apply one after the other. The lock is taken on the
/// open file; if a concurrent `set` renamed a new file in meanwhile, the
/// new one is opened and locked instead. A missing file reads as empty.
fn read_locked(file: &Path) -> std::io::Result<(String, Option<fs::Metadata>, Option<fs::File>)> {
    use fs2::FileExt;
    use std::io::Read;
    loop {
        let mut f = match fs::File::open(file) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((String::new(), None, None))
            }
            Err(e) => return Err(e),
        };
        f.lock_exclusive()?;
        let held = f.metadata()?;
        match fs::metadata(file) {
            Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                let mut text = String::new();
                f.read_to_string(&mut text)?;
                return Ok((text, Some(held), Some(f)));
            }
            // Replaced (or removed) while waiting: start again.
            _ => continue,
        }
    }
}

/// An error message never echoes a secret value given to `set`.
fn mask_value(msg: &str, path: &[String], raw: &str) -> String {
    if is_secret(path) && !raw.is_empty() {
        msg.replace(raw, MASK)
    } else {
        msg.to_string()
    }
}

/// A temporary copy beside the target: removed on drop unless committed.
struct Staged {
    tmp: PathBuf,
    done: bool,
}

impl Staged {
    fn write(
        target: &Path,
        text: &str,
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> std::io::Result<Staged> {
        let dir = target.parent().unwrap_or(Path::new("."));
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "config".into());
        let tmp = dir.join(format!(".{name}.msgd-set.{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        // Created private; the original's bits are set before anything is
        // written (they may be wider, never while the text is partial).
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        let staged = Staged { tmp, done: false };
        if let Some((uid, gid)) = owner {
            // Root editing msgd's file keeps it msgd's; others cannot chown
            // and keep their own.
            let _ = std::os::unix::fs::fchown(&f, Some(uid), Some(gid));
        }
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        Ok(staged)
    }

    fn path(&self) -> &Path {
        &self.tmp
    }

    fn commit(mut self, target: &Path) -> std::io::Result<()> {
        fs::rename(&self.tmp, target)?;
        self.done = true;
        crate::fsutil::sync_dir(target.parent().unwrap_or(Path::new(".")))
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Splits a dotted key; parts in double quotes may hold dots.
pub fn parse_key(key: &str) -> Result<Vec<String>, String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut was_quoted = false;
    for c in key.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                was_quoted = true;
            }
            '.' if !quoted => {
                if cur.is_empty() && !was_quoted {
                    return Err(format!("'{key}': empty part in the key"));
                }
                parts.push(std::mem::take(&mut cur));
                was_quoted = false;
            }
            c if c.is_control() => {
                return Err(format!(
                    "'{}': control character in the key",
                    key.escape_debug()
                ))
            }
            c => cur.push(c),
        }
    }
    if quoted {
        return Err(format!("'{key}': unbalanced quote"));
    }
    if cur.is_empty() && !was_quoted {
        return Err(format!("'{key}': empty part in the key"));
    }
    parts.push(cur);
    Ok(parts)
}

/// The dotted form of a key (parts that need it in double quotes).
pub fn join_key(path: &[String]) -> String {
    path.iter()
        .map(|p| {
            if !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                p.clone()
            } else {
                format!("\"{p}\"")
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Keys whose value is a secret: shown masked.
pub fn is_secret(path: &[String]) -> bool {
    path.last().is_some_and(|k| {
        let k = k.to_ascii_lowercase();
        (k.contains("password") || k.contains("secret")) && !k.ends_with("_file")
    })
}

fn to_json(c: &Config) -> Json {
    serde_json::to_value(c).unwrap_or(Json::Null)
}

fn lookup<'a>(tree: &'a Json, path: &[String]) -> Option<&'a Json> {
    path.iter().try_fold(tree, |v, k| v.as_object()?.get(k))
}

/// Calls `f` for every leaf (arrays and empty tables are leaves).
fn flatten(v: &Json, path: &mut Vec<String>, f: &mut dyn FnMut(&[String], &Json)) {
    match v {
        Json::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                path.push(k.clone());
                flatten(v, path, f);
                path.pop();
            }
        }
        _ => f(path, v),
    }
}

/// The keys set in the file (tables recursed).
fn file_leaves(item: &Item, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match item.as_table_like() {
        Some(t) if !t.is_empty() => {
            for (k, v) in t.iter() {
                path.push(k.to_string());
                file_leaves(v, path, out);
                path.pop();
            }
        }
        _ => out.push(path.clone()),
    }
}

/// Every key whose effective value differs between two configurations
/// (leaves; a key present in one only counts).
pub fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    let (a, b) = (to_json(old), to_json(new));
    let mut keys = Vec::new();
    diff(&a, &b, &mut Vec::new(), &mut keys);
    keys
}

fn diff(a: &Json, b: &Json, path: &mut Vec<String>, out: &mut Vec<String>) {
    match (a, b) {
        (Json::Object(x), Json::Object(y)) => {
            let mut names: Vec<&String> = x.keys().chain(y.keys()).collect();
            names.sort();
            names.dedup();
            for k in names {
                path.push(k.clone());
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => diff(p, q, path, out),
                    _ => out.push(join_key(path)),
                }
                path.pop();
            }
        }
        _ if a != b => out.push(join_key(path)),
        _ => {}
    }
}

/// The keys (and tables) of [`needs_restart`]. Not here, so applied by a
/// reload (`roles::run`): `[limits]` (sessions read theirs from the new
/// snapshot; the connection, login and memory limiters are updated in
/// place), `log.level`, `directory.cache_ttl`, `auth.cache_ttl`.
const AT_START: &[&str] = &[
    "server.data_dir",
    "server.shutdown_grace",
    "log.format",
    "log.dir",
    "listener",
    "store",
    "directory.backend",
    "directory.path",
    "directory.ldap",
    "auth.cache_size",
    "auth.hash_threads",
    "auth.argon2_m_cost",
    "auth.argon2_t_cost",
    "auth.argon2_p_cost",
    "queue",
    "dns",
    "mta",
    "mmp",
    "http",
    "mem",
];

/// `new` with every key of [`needs_restart`] put back to its value in
/// `old` (the running one): what a reload installs, so that sessions never
/// see a folder or a listener the process does not use.
pub fn keep_start_only(old: &Config, new: &Config) -> anyhow::Result<Config> {
    let o = to_json(old);
    let mut n = to_json(new);
    for key in AT_START {
        let path: Vec<&str> = key.split('.').collect();
        let (leaf, parents) = path.split_last().expect("non-empty");
        let from = parents
            .iter()
            .try_fold(&o, |v, k| v.get(k))
            .and_then(|v| v.get(leaf))
            .cloned();
        let Some(to) = parents
            .iter()
            .try_fold(&mut n, |v, k| v.get_mut(k))
            .and_then(Json::as_object_mut)
        else {
            continue;
        };
        match from {
            Some(v) => {
                to.insert(leaf.to_string(), v);
            }
            None => {
                to.remove(*leaf);
            }
        }
    }
    Ok(serde_json::from_value(n)?)
}

/// Keys read once when the process starts (listeners, folders, the store,
/// the directory, pools, the queue, log set-up, process-wide limits): a
/// reload logs them as waiting for a restart. Every other key is read by
/// each new session from its configuration snapshot, and the TLS
/// certificate and key are reloaded.
pub fn needs_restart(key: &str) -> bool {
    AT_START.iter().any(|p| {
        key == *p
            || key
                .strip_prefix(p)
                .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// The TOML values to try for `raw`, most likely first (see the module
/// doc). Each is checked by loading the edited file.
fn typed_candidates(raw: &str, hint: Option<&Json>) -> Vec<toml_edit::Value> {
    let literal = || raw.trim().parse::<toml_edit::Value>().ok();
    let string = || toml_edit::Value::from(raw);
    let mut out: Vec<toml_edit::Value> = Vec::new();
    match hint {
        Some(Json::String(_)) => {
            // Quotes given on purpose make a TOML string literal.
            match literal() {
                Some(v @ toml_edit::Value::String(_)) => out.push(v),
                _ => out.push(string()),
            }
        }
        Some(Json::Number(_)) | Some(Json::Bool(_)) => out.extend(literal()),
        Some(Json::Array(items)) => {
            if raw.trim_start().starts_with('[') {
                out.extend(literal());
            } else {
                let parts: Vec<&str> = raw
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect();
                let as_strings =
                    || toml_edit::Value::Array(parts.iter().copied().collect::<toml_edit::Array>());
                let as_literals = || -> Option<toml_edit::Value> {
                    let mut a = toml_edit::Array::new();
                    for p in &parts {
                        a.push(p.parse::<toml_edit::Value>().ok()?);
                    }
                    Some(toml_edit::Value::Array(a))
                };
                match items.first() {
                    Some(Json::String(_)) => out.push(as_strings()),
                    Some(_) => out.extend(as_literals()),
                    None => {
                        out.push(as_strings());
                        out.extend(as_literals());
                    }
                }
            }
        }
        Some(Json::Object(_)) => out.extend(literal()),
        Some(Json::Null) | None => {
            out.extend(literal());
            out.push(string());
        }
    }
    for v in &mut out {
        v.decor_mut().clear();
    }
    out
}

/// Sets `path` to `value` in the document, creating the tables on the way
/// and keeping the comment that followed an old value.
fn set_in(
    doc: &mut DocumentMut,
    path: &[String],
    mut value: toml_edit::Value,
) -> Result<(), String> {
    let (leaf, parents) = path.split_last().ok_or("empty key")?;
    let mut item: &mut Item = doc.as_item_mut();
    for (i, seg) in parents.iter().enumerate() {
        let inline = item.is_inline_table();
        let t = item
            .as_table_like_mut()
            .ok_or_else(|| format!("{} is not a table", join_key(&path[..i])))?;
        item = t.entry(seg).or_insert_with(|| {
            if inline {
                Item::Value(toml_edit::Value::InlineTable(Default::default()))
            } else {
                let mut nt = Table::new();
                nt.set_implicit(true);
                Item::Table(nt)
            }
        });
    }
    let parent_key = join_key(parents);
    let t = item
        .as_table_like_mut()
        .ok_or_else(|| format!("{parent_key} is not a table"))?;
    match t.get_mut(leaf) {
        Some(Item::Value(old)) => {
            let decor = old.decor().clone();
            *value.decor_mut() = decor;
            *old = value;
        }
        Some(Item::None) | None => {
            t.insert(leaf, Item::Value(value));
        }
        Some(_) => return Err(format!("{} is a table", join_key(path))),
    }
    Ok(())
}

/// A value as printed by `get`/`list`: TOML syntax, secrets masked, an
/// unset option as `(unset)`.
fn shown(path: &[String], v: &Json) -> String {
    match v {
        Json::String(s) if is_secret(path) && !s.is_empty() => format!("\"{MASK}\""),
        Json::Null => "(unset)".into(),
        other => json_to_toml(other)
            .map(|t| t.to_string().trim().to_string())
            .unwrap_or_else(|| other.to_string()),
    }
}

fn json_to_toml(v: &Json) -> Option<toml_edit::Value> {
    Some(match v {
        Json::Null => return None,
        Json::Bool(b) => (*b).into(),
        Json::Number(n) => match n.as_i64() {
            Some(i) => i.into(),
            None => n.as_f64()?.into(),
        },
        Json::String(s) => s.as_str().into(),
        Json::Array(a) => toml_edit::Value::Array(
            a.iter()
                .filter_map(json_to_toml)
                .collect::<toml_edit::Array>(),
        ),
        Json::Object(m) => {
            let mut t = toml_edit::InlineTable::new();
            for (k, v) in m {
                if let Some(v) = json_to_toml(v) {
                    t.insert(k, v);
                }
            }
            toml_edit::Value::InlineTable(t)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(s: &str) -> DocumentMut {
        s.parse().unwrap()
    }

    #[test]
    fn set_keeps_comments_and_the_comment_after_the_value() {
        let mut d =
            doc("# top\n[store]\n# the cache\ndbcachesize = 100 # bytes\n\n[imap]\nx = 1\n");
        set_in(
            &mut d,
            &parse_key("store.dbcachesize").unwrap(),
            "200".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(
            d.to_string(),
            "# top\n[store]\n# the cache\ndbcachesize = 200 # bytes\n\n[imap]\nx = 1\n"
        );
    }

    #[test]
    fn set_creates_missing_tables_with_a_header() {
        let mut d = doc("[store]\ndbcachesize = 1\n");
        set_in(
            &mut d,
            &parse_key("store.partition.second.path").unwrap(),
            toml_edit::Value::from("/srv/p2"),
        )
        .unwrap();
        let s = d.to_string();
        assert!(
            s.contains("[store.partition.second]\npath = \"/srv/p2\""),
            "{s}"
        );
        assert!(!s.contains("[store.partition]\n"), "{s}");
        let back = toml_parse(&s);
        assert_eq!(
            back["store"]["partition"]["second"]["path"].as_str(),
            Some("/srv/p2")
        );
    }

    fn toml_parse(s: &str) -> DocumentMut {
        s.parse().unwrap()
    }

    #[test]
    fn set_into_inline_tables() {
        let mut d = doc("[store]\npartition = { primary = { path = \"a\" } }\n");
        set_in(
            &mut d,
            &parse_key("store.partition.primary.path").unwrap(),
            "\"b\"".parse().unwrap(),
        )
        .unwrap();
        set_in(
            &mut d,
            &parse_key("store.partition.more.path").unwrap(),
            "\"c\"".parse().unwrap(),
        )
        .unwrap();
        let back = toml_parse(&d.to_string());
        assert_eq!(
            back["store"]["partition"]["primary"]["path"].as_str(),
            Some("b")
        );
        assert_eq!(
            back["store"]["partition"]["more"]["path"].as_str(),
            Some("c")
        );
    }

    #[test]
    fn value_type_follows_the_schema() {
        let s = Json::String("x".into());
        let n = serde_json::json!(5);
        let b = serde_json::json!(true);
        let a = serde_json::json!(["127.0.0.1:143"]);
        let e = serde_json::json!([]);
        let first = |raw: &str, h: Option<&Json>| typed_candidates(raw, h)[0].to_string();
        assert_eq!(first("123", Some(&s)), "\"123\"");
        assert_eq!(first("\"quoted\"", Some(&s)), "\"quoted\"");
        assert_eq!(first("123", Some(&n)), "123");
        assert!(typed_candidates("lots", Some(&n)).is_empty());
        assert_eq!(first("false", Some(&b)), "false");
        assert_eq!(
            first("127.0.0.1:143, [::1]:143", Some(&a)),
            "[\"127.0.0.1:143\", \"[::1]:143\"]"
        );
        assert_eq!(first("[\"a\", \"b\"]", Some(&a)), "[\"a\", \"b\"]");
        assert_eq!(first("", Some(&a)), "[]");
        assert_eq!(first("10.0.0.0/8", Some(&e)), "[\"10.0.0.0/8\"]");
        assert_eq!(first("7", None), "7");
        assert_eq!(first("/srv/p2", None), "\"/srv/p2\"");
    }

    #[test]
    fn keys_with_dots_are_quoted() {
        assert_eq!(
            parse_key("mta.tls_policy.\"example.com\"").unwrap(),
            vec!["mta", "tls_policy", "example.com"]
        );
        assert_eq!(
            join_key(&parse_key("mta.tls_policy.\"example.com\"").unwrap()),
            "mta.tls_policy.\"example.com\""
        );
        assert!(parse_key("store..x").is_err());
        assert!(parse_key("store.").is_err());
        assert!(parse_key("\"open").is_err());
    }

    #[test]
    fn secrets_are_masked_but_password_files_are_not() {
        let p = |s: &str| parse_key(s).unwrap();
        assert!(is_secret(&p("directory.ldap.bind_password")));
        assert!(is_secret(&p("mem.cookie_secret")));
        assert!(!is_secret(&p("directory.ldap.bind_password_file")));
        assert!(!is_secret(&p("store.dbcachesize")));
        let j = Json::String("hunter2".into());
        assert_eq!(
            shown(&p("directory.ldap.bind_password"), &j),
            format!("\"{MASK}\"")
        );
        assert_eq!(
            shown(
                &p("directory.ldap.bind_password"),
                &Json::String(String::new())
            ),
            "\"\""
        );
    }

    #[test]
    fn a_reload_keeps_the_keys_read_at_start() {
        let old = Config::default();
        let mut new = Config::default();
        new.server.hostname = "mx2".into();
        new.server.data_dir = "/elsewhere".into();
        new.listener.insert("imap".into(), Default::default());
        new.imap.max_literal += 1;
        let kept = keep_start_only(&old, &new).unwrap();
        assert_eq!(kept.server.hostname, "mx2");
        assert_eq!(kept.imap.max_literal, new.imap.max_literal);
        assert_eq!(kept.server.data_dir, old.server.data_dir);
        assert!(kept.listener.is_empty());
        assert!(changed_keys(&old, &kept).iter().all(|k| !needs_restart(k)));
    }

    #[test]
    fn changed_keys_name_leaves_and_restart_only_keys() {
        let a = Config::default();
        let mut b = Config::default();
        b.server.hostname = "mx2".into();
        b.store.dbcachesize += 1;
        let keys = changed_keys(&a, &b);
        assert_eq!(keys, vec!["server.hostname", "store.dbcachesize"]);
        assert!(!needs_restart("server.hostname"));
        assert!(needs_restart("store.dbcachesize"));
        assert!(needs_restart("listener.imap.bind"));
        assert!(!needs_restart("imap.max_literal"));
        assert!(!needs_restart("tls.cert"));
        assert!(!needs_restart("storex"));
        // Applied in place by a reload.
        for live in [
            "limits.max_connections_per_ip",
            "limits.max_login_failures_per_client",
            "log.level",
            "directory.cache_ttl",
            "auth.cache_ttl",
        ] {
            assert!(!needs_restart(live), "{live}");
        }
        for later in ["log.format", "directory.ldap.urls", "auth.hash_threads"] {
            assert!(needs_restart(later), "{later}");
        }
    }
}
