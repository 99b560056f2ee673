//! Where a backup lives (docs/backup.md): a folder, or the same layout as
//! object keys under `s3://bucket/prefix` in an S3-compatible object store
//! (`object_store`, `[backup.s3]` in the config, AWS_* variables on top).
//!
//! Keys are `/`-separated and relative to the backup's root
//! (`msgd-backup.json`, `users/<user folder>/manifest-<run>.json`,
//! `users/<user folder>/blobs/<ab>/<sha256>`).
//!
//! Every method blocks: call it from a blocking thread
//! (`tokio::task::spawn_blocking`); the S3 target runs its requests on the
//! runtime it was opened on.
//!
//! Invariants:
//! - durability: a blob is durable when `put` returns (folder: temporary
//!   file, fsync, rename; its folder is fsynced by `sync`), and
//!   `put_durable` (the manifest, written last) also fsyncs its folders; an
//!   S3 PUT (or a completed multipart upload) is atomic and durable when
//!   acknowledged;
//! - hostile input: a key named by a manifest goes through [`blob_key`]
//!   (relative, plain segments, below the user's `blobs/`), the folder
//!   target also refuses a link leading out of the root, and `get` never
//!   reads more than its caller's bound;
//! - every S3 request has a deadline (`[backup.s3] timeout`), retries
//!   included.

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt as _};

use crate::config::Config;

/// Scheme of an object-store location.
pub const S3_SCHEME: &str = "s3://";
/// Blobs above this go up as a multipart upload, in parts of this size.
const MULTIPART_ABOVE: usize = 16 << 20;
const PART_SIZE: usize = 8 << 20;
/// Most entries one listing returns (a user's blobs, the users).
const MAX_LISTING: usize = 10_000_000;
/// Longest secret key file read.
const MAX_SECRET_FILE: u64 = 4096;
/// Largest CA bundle read.
const MAX_CA_FILE: u64 = 1 << 20;

/// True if `loc` names an object store (`s3://bucket/prefix`).
pub fn is_remote(loc: &Path) -> bool {
    loc.to_str().is_some_and(|s| s.starts_with(S3_SCHEME))
}

/// Where a backup is written to or read from.
pub enum Target {
    Folder(Folder),
    S3(S3),
}

/// A backup folder (an absolute path).
pub struct Folder {
    root: PathBuf,
    /// Folders that gained or lost an entry since the last `sync`.
    dirty: Mutex<BTreeSet<PathBuf>>,
}

/// A prefix in a bucket of an S3-compatible object store.
pub struct S3 {
    store: Arc<dyn ObjectStore>,
    bucket: String,
    /// Without a trailing `/`; empty for the bucket's root.
    prefix: String,
    rt: tokio::runtime::Handle,
    /// Deadline of one whole operation (a request with its retries).
    deadline: Duration,
    /// Sizes of the objects below the folders given to `index` (folder
    /// -> key -> size), so an incremental run asks once per user instead
    /// of once per message; dropped with the `Indexed` guard.
    known: Mutex<HashMap<String, HashMap<String, u64>>>,
}

/// Keeps a listing made by [`Target::index`] until dropped.
pub struct Indexed<'a> {
    target: &'a Target,
    dir: String,
}

impl Drop for Indexed<'_> {
    fn drop(&mut self) {
        if let Target::S3(s) = self.target {
            s.known
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&self.dir);
        }
    }
}

impl std::fmt::Debug for S3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The store's own Debug may show its credentials: never print it.
        f.debug_struct("S3")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// A secret read from a file: never shown by Debug.
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The key of a blob named by a manifest of the user in `user_dir`
/// (`users/<user folder>`): `rel` must be relative, plain segments only
/// (no `.`, `..`, empty segment, backslash or control character), and
/// below `blobs/`.
pub fn blob_key(user_dir: &str, rel: &str) -> anyhow::Result<String> {
    let segments: Vec<&str> = rel.split('/').collect();
    let ok = segments.len() >= 2
        && segments[0] == "blobs"
        && segments.iter().all(|s| {
            !s.is_empty()
                && *s != "."
                && *s != ".."
                && !s.contains('\\')
                && !s.chars().any(|c| c.is_control())
        });
    anyhow::ensure!(ok, "manifest names a path outside the backup: {rel:?}");
    Ok(format!("{user_dir}/{rel}"))
}

fn ensure_key(key: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !key.is_empty()
            && key
                .split('/')
                .all(|s| !s.is_empty() && s != "." && s != ".." && !s.contains('\\')),
        "bad key {key:?}"
    );
    Ok(())
}

impl Target {
    /// Opens `loc`: `s3://bucket/prefix` (with `[backup.s3]`) or an
    /// absolute folder path. Call inside the tokio runtime.
    pub fn open(loc: &Path, config: &Config) -> anyhow::Result<Target> {
        if is_remote(loc) {
            return Ok(Target::S3(S3::open(
                loc.to_str().unwrap_or_default(),
                config,
            )?));
        }
        anyhow::ensure!(
            loc.is_absolute(),
            "{} is not an absolute path",
            loc.display()
        );
        Ok(Target::Folder(Folder {
            root: loc.to_path_buf(),
            dirty: Mutex::new(BTreeSet::new()),
        }))
    }

    /// The folder of a folder target (resolved), for messages and results.
    pub fn describe(&self) -> String {
        match self {
            Target::Folder(f) => f.root.display().to_string(),
            Target::S3(s) if s.prefix.is_empty() => format!("{S3_SCHEME}{}", s.bucket),
            Target::S3(s) => format!("{S3_SCHEME}{}/{}", s.bucket, s.prefix),
        }
    }

    /// Where `key` is, for messages and results.
    pub fn describe_key(&self, key: &str) -> String {
        format!("{}/{key}", self.describe())
    }

    /// A folder root resolved through links (restore checks blob paths
    /// against it); nothing for S3.
    pub fn canonicalize(self) -> anyhow::Result<Target> {
        match self {
            Target::Folder(f) => {
                let root = f
                    .root
                    .canonicalize()
                    .with_context(|| format!("backup folder {}", f.root.display()))?;
                Ok(Target::Folder(Folder { root, ..f }))
            }
            s => Ok(s),
        }
    }

    /// The size of the object at `key`, None if absent.
    pub fn size(&self, key: &str) -> anyhow::Result<Option<u64>> {
        ensure_key(key)?;
        match self {
            Target::Folder(f) => match std::fs::metadata(f.root.join(key)) {
                Ok(m) if m.is_file() => Ok(Some(m.len())),
                Ok(_) => Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e).with_context(|| self.describe_key(key)),
            },
            Target::S3(s) => s.size(key),
        }
    }

    /// Learns the sizes of every object below `dir` in one listing (S3),
    /// so `size` below it needs no request of its own while the returned
    /// guard lives.
    pub fn index(&self, dir: &str) -> anyhow::Result<Indexed<'_>> {
        if let Target::S3(s) = self {
            s.index(dir)?;
        }
        Ok(Indexed {
            target: self,
            dir: dir.to_string(),
        })
    }

    /// Writes a blob: durable once `sync` has returned (folder) or at once
    /// (S3).
    pub fn put(&self, key: &str, data: &[u8]) -> anyhow::Result<()> {
        ensure_key(key)?;
        match self {
            Target::Folder(f) => f.put(key, data),
            Target::S3(s) => s.put(key, data),
        }
    }

    /// Makes the blobs written so far durable (fsyncs their folders).
    pub fn sync(&self) -> anyhow::Result<()> {
        match self {
            Target::Folder(f) => {
                let dirty = std::mem::take(&mut *f.dirty.lock().unwrap_or_else(|e| e.into_inner()));
                for d in dirty.iter().rev() {
                    crate::fsutil::sync_dir(d)?;
                }
                Ok(())
            }
            Target::S3(_) => Ok(()),
        }
    }

    /// Writes a manifest or marker: durable, with its folders, when it
    /// returns.
    pub fn put_durable(&self, key: &str, data: &[u8]) -> anyhow::Result<()> {
        ensure_key(key)?;
        match self {
            Target::Folder(f) => {
                let path = f.root.join(key);
                let parent = path.parent().unwrap_or(&f.root).to_path_buf();
                crate::fsutil::create_private_dir_all(&parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
                crate::fsutil::write_durable(&path, data)
                    .with_context(|| format!("writing {}", path.display()))?;
                // The file's folder and every folder up to the root.
                let mut d = Some(parent.as_path());
                while let Some(dir) = d.filter(|d| d.starts_with(&f.root)) {
                    crate::fsutil::sync_dir(dir)?;
                    d = dir.parent();
                }
                Ok(())
            }
            Target::S3(s) => s.put(key, data),
        }
    }

    /// Reads the object at `key`, refusing one larger than `max` bytes
    /// (without reading more than `max + 1`).
    pub fn get(&self, key: &str, max: u64) -> anyhow::Result<Vec<u8>> {
        ensure_key(key)?;
        match self {
            Target::Folder(f) => read_file_bounded(&f.root.join(key), max),
            Target::S3(s) => s.get(key, max),
        }
    }

    /// Reads the blob `rel` named by a manifest of the user in `user_dir`,
    /// confined to that user's `blobs/` (and, for a folder, to the root
    /// after resolving links).
    pub fn get_blob(&self, user_dir: &str, rel: &str, max: u64) -> anyhow::Result<Vec<u8>> {
        let key = blob_key(user_dir, rel)?;
        match self {
            Target::Folder(f) => {
                let path = super::backup::safe_blob_path(&f.root, &f.root.join(user_dir), rel)?;
                read_file_bounded(&path, max)
            }
            Target::S3(s) => s.get(&key, max),
        }
    }

    /// Names of the objects directly inside `dir` (not below).
    pub fn list_files(&self, dir: &str) -> anyhow::Result<Vec<String>> {
        Ok(self.list(dir)?.0)
    }

    /// Names of the folders (common prefixes) directly inside `dir`.
    pub fn list_dirs(&self, dir: &str) -> anyhow::Result<Vec<String>> {
        Ok(self.list(dir)?.1)
    }

    fn list(&self, dir: &str) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        ensure_key(dir)?;
        match self {
            Target::Folder(f) => {
                let path = f.root.join(dir);
                let rd = match std::fs::read_dir(&path) {
                    Ok(rd) => rd,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Ok((Vec::new(), Vec::new()))
                    }
                    Err(e) => return Err(e).with_context(|| format!("listing {}", path.display())),
                };
                let (mut files, mut dirs) = (Vec::new(), Vec::new());
                for e in rd {
                    let e = e?;
                    anyhow::ensure!(
                        files.len() + dirs.len() < MAX_LISTING,
                        "{}: too many entries",
                        path.display()
                    );
                    let name = e.file_name().to_string_lossy().into_owned();
                    if e.file_type()?.is_dir() {
                        dirs.push(name);
                    } else {
                        files.push(name);
                    }
                }
                files.sort();
                dirs.sort();
                Ok((files, dirs))
            }
            Target::S3(s) => s.list(dir),
        }
    }
}

fn read_file_bounded(path: &Path, max: u64) -> anyhow::Result<Vec<u8>> {
    let f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let len = f.metadata()?.len();
    anyhow::ensure!(len <= max, "{} is larger than {max} bytes", path.display());
    let mut data = Vec::with_capacity(len.min(max) as usize);
    f.take(max + 1).read_to_end(&mut data)?;
    anyhow::ensure!(
        data.len() as u64 <= max,
        "{} is larger than {max} bytes",
        path.display()
    );
    Ok(data)
}

impl Folder {
    fn put(&self, key: &str, data: &[u8]) -> anyhow::Result<()> {
        let path = self.root.join(key);
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        let mut dirty = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
        if !dir.is_dir() {
            crate::fsutil::create_private_dir_all(&dir)
                .with_context(|| format!("creating {}", dir.display()))?;
            // New folders: their parents changed too.
            let mut d = dir.parent();
            while let Some(p) = d.filter(|p| p.starts_with(&self.root)) {
                dirty.insert(p.to_path_buf());
                d = p.parent();
            }
        }
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let tmp = dir.join(format!("{name}.tmp"));
        {
            let mut f = crate::fsutil::private_file()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .with_context(|| format!("writing {}", tmp.display()))?;
            f.write_all(data)?;
            f.sync_data()?;
        }
        std::fs::rename(&tmp, &path)?;
        dirty.insert(dir);
        Ok(())
    }
}

/// `s3://bucket/prefix` split and checked.
fn parse_url(url: &str) -> anyhow::Result<(String, String)> {
    let rest = url
        .strip_prefix(S3_SCHEME)
        .ok_or_else(|| anyhow::anyhow!("not an s3:// location: {url}"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    anyhow::ensure!(
        (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-'),
        "{url}: bad bucket name {bucket:?}"
    );
    let prefix = prefix.trim_end_matches('/');
    if !prefix.is_empty() {
        ensure_key(prefix).with_context(|| format!("{url}: bad prefix"))?;
        Key::parse(prefix).with_context(|| format!("{url}: bad prefix"))?;
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

/// True for `http://127.0.0.1:9000`, `http://[::1]`, `http://localhost`.
fn is_loopback_url(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn read_secret(config: &Config, file: &str) -> anyhow::Result<Secret> {
    let path = config.server.data_dir.join(file);
    let f = std::fs::File::open(&path)
        .with_context(|| format!("backup.s3.secret_access_key_file {}", path.display()))?;
    let mut s = String::new();
    f.take(MAX_SECRET_FILE)
        .read_to_string(&mut s)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(Secret(s.trim().to_string()))
}

impl S3 {
    fn open(url: &str, config: &Config) -> anyhow::Result<S3> {
        use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
        use object_store::{BackoffConfig, ClientOptions, RetryConfig};
        // reqwest's rustls has no provider of its own: ring, as everywhere.
        crate::tls::install_provider();
        let (bucket, prefix) = parse_url(url)?;
        let c = &config.backup.s3;
        let timeout = Duration::from_secs(if c.timeout == 0 { 60 } else { c.timeout });
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with("AWS_"))
            .collect();
        let env_get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let endpoint = env_get("AWS_ENDPOINT_URL")
            .or_else(|| env_get("AWS_ENDPOINT"))
            .unwrap_or_else(|| c.endpoint.clone());
        let mut client = ClientOptions::new()
            .with_timeout(timeout)
            .with_connect_timeout(Duration::from_secs(10));
        if !c.ca_file.is_empty() {
            let path = config.server.data_dir.join(&c.ca_file);
            let pem = read_file_bounded(&path, MAX_CA_FILE)
                .with_context(|| format!("backup.s3.ca_file {}", path.display()))?;
            for cert in object_store::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("backup.s3.ca_file {}", path.display()))?
            {
                client = client.with_root_certificate(cert);
            }
        }
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&bucket)
            .with_client_options(client)
            // A failed request is retried a few times, all within the
            // operation's deadline.
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(5),
                    base: 2.0,
                },
                max_retries: 3,
                retry_timeout: timeout * 3,
            })
            .with_region(&c.region)
            .with_virtual_hosted_style_request(c.virtual_hosted_style)
            .with_allow_http(c.allow_http || is_loopback_url(&endpoint));
        if !c.endpoint.is_empty() {
            b = b.with_endpoint(&c.endpoint);
        }
        if !c.access_key_id.is_empty() {
            b = b.with_access_key_id(&c.access_key_id);
        }
        if !c.secret_access_key_file.is_empty() {
            let secret = read_secret(config, &c.secret_access_key_file)?;
            b = b.with_secret_access_key(secret.0);
        }
        // The standard variables override the file (as `from_env` would).
        for (k, v) in &env {
            if let Ok(key) = k.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                b = b.with_config(key, v.clone());
            }
        }
        let store = b.build().context("backup.s3: bad settings")?;
        Ok(S3 {
            store: Arc::new(store),
            bucket,
            prefix,
            rt: tokio::runtime::Handle::current(),
            // A request's own timeout, times its tries.
            deadline: timeout * 4,
            known: Mutex::new(HashMap::new()),
        })
    }

    fn key(&self, key: &str) -> anyhow::Result<Key> {
        let full = if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        };
        Key::parse(&full).with_context(|| format!("bad key {full:?}"))
    }

    /// Runs one operation on the runtime, with its deadline.
    fn run<T>(
        &self,
        what: &str,
        deadline: Duration,
        f: impl std::future::Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        self.rt.block_on(async {
            match tokio::time::timeout(deadline, f).await {
                Ok(r) => r.with_context(|| format!("s3://{}: {what}", self.bucket)),
                Err(_) => anyhow::bail!("s3://{}: {what}: no answer in {deadline:?}", self.bucket),
            }
        })
    }

    /// The listing `key` is below, if any: Some(its size there or None).
    fn known_size(&self, key: &str) -> Option<Option<u64>> {
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known
            .iter()
            .find(|(dir, _)| {
                key.strip_prefix(dir.as_str())
                    .is_some_and(|r| r.starts_with('/'))
            })
            .map(|(_, sizes)| sizes.get(key).copied())
    }

    fn size(&self, key: &str) -> anyhow::Result<Option<u64>> {
        if let Some(known) = self.known_size(key) {
            return Ok(known);
        }
        let k = self.key(key)?;
        self.run(&format!("HEAD {key}"), self.deadline, async {
            match self.store.head(&k).await {
                Ok(m) => Ok(Some(m.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e.into()),
            }
        })
    }

    fn index(&self, dir: &str) -> anyhow::Result<()> {
        ensure_key(dir)?;
        let k = self.key(dir)?;
        let strip = format!("{}/", k.as_ref());
        let found: HashMap<String, u64> =
            self.run(&format!("listing {dir}"), self.deadline * 16, async {
                let mut out = HashMap::new();
                let mut s = self.store.list(Some(&k));
                while let Some(m) = s.next().await {
                    let m = m?;
                    anyhow::ensure!(out.len() < MAX_LISTING, "too many objects below {dir}");
                    if let Some(rel) = m.location.as_ref().strip_prefix(&strip) {
                        out.insert(format!("{dir}/{rel}"), m.size);
                    }
                }
                Ok(out)
            })?;
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(dir.to_string(), found);
        Ok(())
    }

    fn put(&self, key: &str, data: &[u8]) -> anyhow::Result<()> {
        let k = self.key(key)?;
        let parts = data.len().div_ceil(PART_SIZE).max(1) as u32;
        self.run(&format!("PUT {key}"), self.deadline * parts, async {
            if data.len() <= MULTIPART_ABOVE {
                let payload = object_store::PutPayload::from(bytes::Bytes::copy_from_slice(data));
                self.store.put(&k, payload).await?;
            } else {
                // Parts of PART_SIZE, two in flight: memory stays bounded
                // by the message itself.
                // A failed upload is aborted (one cut by the deadline is
                // left to the bucket's lifecycle rule for incomplete ones).
                let upload = self.store.put_multipart(&k).await?;
                let mut w = object_store::WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
                for chunk in data.chunks(PART_SIZE) {
                    if let Err(e) = w.wait_for_capacity(2).await {
                        let _ = w.abort().await;
                        return Err(e.into());
                    }
                    w.write(chunk);
                }
                w.finish().await?;
            }
            Ok(())
        })?;
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, sizes)) = known.iter_mut().find(|(dir, _)| {
            key.strip_prefix(dir.as_str())
                .is_some_and(|r| r.starts_with('/'))
        }) {
            sizes.insert(key.to_string(), data.len() as u64);
        }
        Ok(())
    }

    fn get(&self, key: &str, max: u64) -> anyhow::Result<Vec<u8>> {
        let k = self.key(key)?;
        let parts = (max as usize).div_ceil(PART_SIZE).max(1) as u32;
        self.run(&format!("GET {key}"), self.deadline * parts, async {
            let r = match self.store.get(&k).await {
                Ok(r) => r,
                Err(object_store::Error::NotFound { .. }) => {
                    anyhow::bail!("{key}: no such object")
                }
                Err(e) => return Err(e.into()),
            };
            anyhow::ensure!(
                r.meta.size <= max,
                "{key} is larger than {max} bytes ({})",
                r.meta.size
            );
            let mut data = Vec::with_capacity(r.meta.size.min(max) as usize);
            let mut s = r.into_stream();
            while let Some(chunk) = s.next().await {
                let chunk = chunk?;
                anyhow::ensure!(
                    (data.len() + chunk.len()) as u64 <= max,
                    "{key} is larger than {max} bytes"
                );
                data.extend_from_slice(&chunk);
            }
            Ok(data)
        })
    }

    fn list(&self, dir: &str) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        let k = self.key(dir)?;
        self.run(&format!("listing {dir}"), self.deadline * 16, async {
            let r = self.store.list_with_delimiter(Some(&k)).await?;
            anyhow::ensure!(
                r.objects.len() + r.common_prefixes.len() < MAX_LISTING,
                "too many objects in {dir}"
            );
            let last = |p: &Key| p.filename().unwrap_or_default().to_string();
            let mut files: Vec<String> = r.objects.iter().map(|o| last(&o.location)).collect();
            let mut dirs: Vec<String> = r.common_prefixes.iter().map(last).collect();
            files.sort();
            dirs.sort();
            Ok((files, dirs))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_keys_stay_below_the_users_blobs() {
        let u = "users/a@x";
        assert_eq!(
            blob_key(u, "blobs/ab/abcd").unwrap(),
            "users/a@x/blobs/ab/abcd"
        );
        for bad in [
            "",
            "blobs",
            "blobs/",
            "/blobs/ab/x",
            "blobs//x",
            "blobs/../../b@x/blobs/ab/x",
            "blobs/ab/..",
            "blobs/./x",
            "manifest-1.json",
            "../b@x/blobs/ab/x",
            "blobs\\..\\x",
            "blobs/ab/x\n",
            "x/blobs/ab",
        ] {
            assert!(blob_key(u, bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn s3_urls_are_checked() {
        assert_eq!(
            parse_url("s3://bkt/p/q/").unwrap(),
            ("bkt".into(), "p/q".into())
        );
        assert_eq!(parse_url("s3://bkt").unwrap(), ("bkt".into(), "".into()));
        for bad in [
            "s3://",
            "s3://B/x",
            "s3://b/x",
            "s3://bkt/../x",
            "s3://bkt/a//b",
            "/x",
        ] {
            assert!(parse_url(bad).is_err(), "{bad} accepted");
        }
        assert!(is_remote(Path::new("s3://bkt/p")));
        assert!(!is_remote(Path::new("/s3/bkt")));
    }

    #[test]
    fn plain_http_is_only_implied_for_loopback() {
        assert!(is_loopback_url("http://127.0.0.1:9000"));
        assert!(is_loopback_url("http://[::1]:9000/"));
        assert!(is_loopback_url("http://localhost"));
        assert!(!is_loopback_url("http://s3.example.net"));
        assert!(!is_loopback_url("http://127.0.0.1.example.net"));
        assert!(!is_loopback_url("https://127.0.0.1:9000"));
    }

    #[test]
    fn the_secret_is_not_in_debug_output() {
        assert_eq!(format!("{:?}", Secret("hunter2".into())), "Secret(***)");
    }

    /// An S3 target over object_store's in-memory store (same code path
    /// as a real bucket above the HTTP client).
    fn memory_target(rt: &tokio::runtime::Runtime, prefix: &str) -> Target {
        Target::S3(S3 {
            store: Arc::new(object_store::memory::InMemory::new()),
            bucket: "bkt".into(),
            prefix: prefix.into(),
            rt: rt.handle().clone(),
            deadline: Duration::from_secs(10),
            known: Mutex::new(HashMap::new()),
        })
    }

    #[test]
    fn object_store_target_round_trip_listing_and_bounds() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let t = memory_target(&rt, "p/q");
        assert_eq!(t.describe(), "s3://bkt/p/q");
        t.put_durable("msgd-backup.json", b"{}").unwrap();
        t.put("users/a@x/blobs/ab/abc", b"hello").unwrap();
        t.put("users/b@x/blobs/cd/cde", b"bob's").unwrap();
        // Above the single-PUT limit: a multipart upload.
        let big: Vec<u8> = (0..MULTIPART_ABOVE + PART_SIZE + 7)
            .map(|i| (i % 251) as u8)
            .collect();
        t.put("users/a@x/blobs/ff/big", &big).unwrap();
        t.put_durable("users/a@x/manifest-1.json", b"[]").unwrap();
        assert_eq!(
            t.get("users/a@x/blobs/ff/big", big.len() as u64).unwrap(),
            big
        );
        assert!(t
            .get("users/a@x/blobs/ff/big", big.len() as u64 - 1)
            .is_err());
        assert_eq!(t.size("users/a@x/blobs/ab/abc").unwrap(), Some(5));
        assert_eq!(t.size("users/a@x/blobs/ab/zzz").unwrap(), None);
        assert_eq!(t.list_dirs("users").unwrap(), vec!["a@x", "b@x"]);
        assert_eq!(t.list_files("users/a@x").unwrap(), vec!["manifest-1.json"]);
        // Confinement: another user's blob is not reachable by a manifest.
        assert_eq!(
            t.get_blob("users/a@x", "blobs/ab/abc", 5).unwrap(),
            b"hello"
        );
        assert!(t
            .get_blob("users/a@x", "blobs/../../b@x/blobs/cd/cde", 5)
            .is_err());
        assert!(t.get_blob("users/a@x", "blobs/ab/abc", 4).is_err());
        assert!(t.get("../x", 10).is_err());
        // The listing answers while its guard lives, and learns new puts.
        {
            let _g = t.index("users/a@x/blobs").unwrap();
            let Target::S3(s) = &t else { unreachable!() };
            assert_eq!(s.known_size("users/a@x/blobs/ab/abc"), Some(Some(5)));
            assert_eq!(s.known_size("users/a@x/blobs/ab/new"), Some(None));
            assert_eq!(s.known_size("users/b@x/blobs/cd/cde"), None);
            t.put("users/a@x/blobs/ab/new", b"n").unwrap();
            assert_eq!(s.known_size("users/a@x/blobs/ab/new"), Some(Some(1)));
        }
        let Target::S3(s) = &t else { unreachable!() };
        assert!(s.known.lock().unwrap().is_empty());
    }

    #[test]
    fn folder_target_round_trip_and_bounds() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().canonicalize().unwrap();
        let t = Target::Folder(Folder {
            root: root.clone(),
            dirty: Mutex::new(BTreeSet::new()),
        });
        t.put("users/a@x/blobs/ab/abc", b"hello").unwrap();
        t.sync().unwrap();
        t.put_durable("users/a@x/manifest-1.json", b"{}").unwrap();
        assert_eq!(t.size("users/a@x/blobs/ab/abc").unwrap(), Some(5));
        assert_eq!(t.size("users/a@x/blobs/ab/nope").unwrap(), None);
        assert_eq!(
            t.get_blob("users/a@x", "blobs/ab/abc", 5).unwrap(),
            b"hello"
        );
        assert!(t.get_blob("users/a@x", "blobs/ab/abc", 4).is_err());
        assert!(t
            .get_blob("users/a@x", "blobs/../manifest-1.json", 99)
            .is_err());
        assert_eq!(t.list_dirs("users").unwrap(), vec!["a@x".to_string()]);
        assert_eq!(
            t.list_files("users/a@x").unwrap(),
            vec!["manifest-1.json".to_string()]
        );
        assert!(t.get("../etc/passwd", 10_000).is_err());
    }
}
