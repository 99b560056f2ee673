//! MTA-STS (RFC 8461) for outbound delivery: the `_mta-sts.DOMAIN` TXT
//! record, the policy fetched from
//! `https://mta-sts.DOMAIN/.well-known/mta-sts.txt`, a durable cache, and
//! the policy in force for a domain (`MtaSts::policy`), which
//! `deliver::mx` enforces.
//!
//! Order (RFC 8461 5.1): the TXT record is looked up before each MX
//! delivery; a cached, unexpired policy with the same id is used as it
//! is; otherwise the policy is fetched (verified certificate: the
//! system's roots plus `mta.tls_ca_file`; no redirects; `[mta_sts]
//! timeout`; at most `MAX_BODY` bytes). A failed fetch, a missing TXT
//! record or a DNS failure keep a cached policy in force until its
//! max_age ends (RFC 8461 5, 10.3); with nothing cached the domain has no
//! policy.
//!
//! The cache is one JSON file per domain under `[mta_sts] cache_dir`
//! (written to a temporary file, synced, renamed), so a restart keeps the
//! policies; a small map in memory saves reading it at every delivery.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_resolver::proto::rr::RData;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::dns::Resolver;

/// Largest policy body read (RFC 8461 3.2 suggests 64 KiB is plenty).
pub const MAX_BODY: usize = 64 * 1024;
/// Longest max_age honoured (RFC 8461 3.2: 31557600 seconds, a year).
pub const MAX_AGE_CAP: u64 = 31_557_600;
/// Most `mx:` lines kept from one policy.
const MAX_MX: usize = 100;
/// Longest TXT id (RFC 8461 3.1: 1 to 32 alphanumerics).
const MAX_ID: usize = 32;

/// A policy's mode (RFC 8461 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Enforce,
    Testing,
    None,
}

/// A parsed policy and when it was fetched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// The TXT record's id the policy was fetched under.
    pub id: String,
    pub mode: Mode,
    /// `mx:` patterns, lowercased, without a trailing dot.
    pub mx: Vec<String>,
    /// Seconds, already capped at `MAX_AGE_CAP`.
    pub max_age: u64,
    /// Unix seconds of the fetch.
    pub fetched: u64,
}

impl Policy {
    /// Still in force at `now` (unix seconds).
    pub fn fresh(&self, now: u64) -> bool {
        now < self.fetched.saturating_add(self.max_age)
    }

    /// Some `mx:` pattern covers `host`.
    pub fn allows(&self, host: &str) -> bool {
        self.mx.iter().any(|p| mx_matches(p, host))
    }
}

/// The id of a `_mta-sts` TXT record (RFC 8461 3.1), `None` if the text
/// is not a valid STSv1 record.
pub fn parse_txt(record: &str) -> Option<String> {
    let mut fields = record.split(';').map(str::trim);
    if fields.next()? != "v=STSv1" {
        return None;
    }
    let mut id = None;
    for f in fields {
        if f.is_empty() {
            continue;
        }
        let (k, v) = f.split_once('=')?;
        if k.trim() == "id" {
            let v = v.trim();
            if v.is_empty() || v.len() > MAX_ID || !v.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return None;
            }
            id = Some(v.to_string());
        }
    }
    id
}

/// Parses a policy body (RFC 8461 3.2): `version: STSv1`, `mode`,
/// `max_age`, and for enforce/testing at least one `mx`. Unknown keys are
/// ignored; a repeated version/mode/max_age or a bad value is an error.
pub fn parse_policy(text: &str, id: &str, now: u64) -> Result<Policy, String> {
    let (mut version, mut mode, mut max_age) = (None, None, None);
    let mut mx = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            return Err("a line without a key".into());
        };
        let (k, v) = (k.trim(), v.trim());
        match k {
            "version" => once(&mut version, v, "version")?,
            "mode" => {
                let m = match v {
                    "enforce" => Mode::Enforce,
                    "testing" => Mode::Testing,
                    "none" => Mode::None,
                    _ => return Err("unknown mode".into()),
                };
                once(&mut mode, m, "mode")?;
            }
            "max_age" => {
                if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err("bad max_age".into());
                }
                let n: u64 = v.parse().map_err(|_| "bad max_age")?;
                once(&mut max_age, n.min(MAX_AGE_CAP), "max_age")?;
            }
            "mx" => {
                let p = v.trim_end_matches('.').to_ascii_lowercase();
                if !valid_pattern(&p) {
                    return Err("bad mx pattern".into());
                }
                if mx.len() >= MAX_MX {
                    return Err("too many mx lines".into());
                }
                mx.push(p);
            }
            _ => {}
        }
    }
    if version != Some("STSv1") {
        return Err("not an STSv1 policy".into());
    }
    let mode = mode.ok_or("no mode")?;
    let max_age = max_age.ok_or("no max_age")?;
    if mode != Mode::None && mx.is_empty() {
        return Err("no mx".into());
    }
    Ok(Policy {
        id: id.to_string(),
        mode,
        mx,
        max_age,
        fetched: now,
    })
}

/// Sets a key that may appear once.
fn once<T>(slot: &mut Option<T>, v: T, what: &str) -> Result<(), String> {
    match slot.replace(v) {
        Some(_) => Err(format!("{what} repeated")),
        None => Ok(()),
    }
}

/// A host name, or `*.` and a host name.
fn valid_pattern(p: &str) -> bool {
    let name = p.strip_prefix("*.").unwrap_or(p);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// RFC 8461 4.1: an exact name, or `*.rest` matching exactly one more
/// label on the left of `rest`.
pub fn mx_matches(pattern: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(rest) => match host.split_once('.') {
            Some((first, tail)) => !first.is_empty() && tail == rest,
            None => false,
        },
        None => host == pattern,
    }
}

/// A domain name usable as a cache file name (and in a URL).
fn safe_domain(domain: &str) -> Option<String> {
    let d = domain.trim_end_matches('.').to_ascii_lowercase();
    valid_pattern(&d)
        .then_some(d)
        .filter(|d| !d.starts_with('*') && d.contains('.'))
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What the TXT lookup found.
#[derive(Debug, PartialEq, Eq)]
enum Txt {
    Id(String),
    /// No (single valid) record: the domain has no MTA-STS now.
    Absent,
    /// DNS failed: keep what is cached.
    Failed,
}

/// The durable cache: one JSON file per domain, at most `max` files.
pub struct Cache {
    dir: PathBuf,
    max: usize,
    mem: Mutex<HashMap<String, Policy>>,
}

impl Cache {
    pub fn new(dir: PathBuf, max: usize) -> Cache {
        Cache {
            dir,
            max: max.max(1),
            mem: Mutex::new(HashMap::new()),
        }
    }

    fn file(&self, domain: &str) -> PathBuf {
        self.dir.join(format!("{domain}.json"))
    }

    /// The cached policy of `domain`, fresh or not.
    pub fn get(&self, domain: &str) -> Option<Policy> {
        if let Some(p) = self.lock().get(domain) {
            return Some(p.clone());
        }
        let bytes = std::fs::read(self.file(domain)).ok()?;
        if bytes.len() > 4 * MAX_BODY {
            return None;
        }
        let p: Policy = serde_json::from_slice(&bytes).ok()?;
        self.lock().insert(domain.to_string(), p.clone());
        Some(p)
    }

    /// Stores durably, then in memory.
    pub fn put(&self, domain: &str, p: &Policy) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        self.evict(domain);
        let tmp = self.dir.join(format!(".{domain}.tmp"));
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec(p).map_err(std::io::Error::other)?)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, self.file(domain))?;
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        self.lock().insert(domain.to_string(), p.clone());
        Ok(())
    }

    /// Makes room for one more domain: drops the oldest fetched policies
    /// while the folder holds `max` others.
    fn evict(&self, keep: &str) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(u128, PathBuf, String)> = Vec::new();
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(domain) = name.strip_suffix(".json") else {
                continue;
            };
            if domain == keep || domain.starts_with('.') {
                continue;
            }
            // The file's time is its fetch's (written once per fetch):
            // no need to read thousands of files.
            let written = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            files.push((written, e.path(), domain.to_string()));
        }
        if files.len() < self.max {
            return;
        }
        files.sort();
        let drop = files.len() + 1 - self.max;
        for (_, path, domain) in files.into_iter().take(drop) {
            let _ = std::fs::remove_file(path);
            self.lock().remove(&domain);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Policy>> {
        self.mem.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Decides the policy in force from the TXT answer, the cache and a
/// fetch (`fetch` is only called when needed). Pure apart from `fetch`,
/// for the unit tests.
async fn decide<F, Fut>(
    txt: Txt,
    cached: Option<Policy>,
    now: u64,
    fetch: F,
) -> (Option<Policy>, Option<Policy>)
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<Policy, String>>,
{
    let cached = cached.filter(|p| p.fresh(now));
    match txt {
        Txt::Id(id) => {
            if let Some(c) = cached.as_ref().filter(|c| c.id == id) {
                return (Some(c.clone()), None);
            }
            match fetch(id).await {
                Ok(p) => (Some(p.clone()), Some(p)),
                Err(_) => (cached, None),
            }
        }
        Txt::Absent | Txt::Failed => (cached, None),
    }
}

/// MTA-STS for one process (the queue runner's `MxDelivery`).
pub struct MtaSts {
    resolver: Arc<Resolver>,
    cache: Cache,
    timeout: Duration,
    port: u16,
    roots: Arc<rustls::RootCertStore>,
    /// TLS-RPT counters (`deliver::tlsrpt`).
    reports: super::tlsrpt::Reports,
}

impl MtaSts {
    /// `None` when `[mta_sts] enabled` is false.
    pub fn from_config(config: &Config, resolver: Arc<Resolver>) -> Option<Arc<MtaSts>> {
        let c = &config.mta_sts;
        if !c.enabled {
            return None;
        }
        Some(Arc::new(MtaSts {
            resolver,
            cache: Cache::new(config.data_path(&c.cache_dir, "mta-sts"), c.max_policies),
            timeout: Duration::from_secs(c.timeout.max(1)),
            port: c.policy_port,
            roots: roots(&config.mta.tls_ca_file),
            reports: super::tlsrpt::Reports::new(
                config.data_path("", "tlsrpt"),
                config.server.hostname.clone(),
            ),
        }))
    }

    /// Counts one session under `policy` for TLS-RPT.
    pub fn report(
        &self,
        domain: &str,
        policy: &Policy,
        result: Result<(), (super::tlsrpt::Failure, &str)>,
    ) {
        self.reports.record(now(), domain, policy, result);
    }

    /// Writes the TLS-RPT report files every `tlsrpt::FLUSH` while `me`
    /// lives (spawned by `deliver::mx`).
    pub async fn flush_reports(me: std::sync::Weak<MtaSts>) {
        loop {
            tokio::time::sleep(super::tlsrpt::FLUSH).await;
            let Some(s) = me.upgrade() else { return };
            if let Err(e) = s.reports.flush(now()) {
                warn!(error = %e, "cannot write the TLS-RPT report files");
            }
        }
    }

    /// The trust anchors for policy hosts and enforced MX hosts.
    pub fn roots(&self) -> Arc<rustls::RootCertStore> {
        self.roots.clone()
    }

    /// The policy in force for `domain`, if any (RFC 8461 5.1).
    pub async fn policy(&self, domain: &str) -> Option<Policy> {
        let domain = safe_domain(domain)?;
        let txt = self.txt(&domain).await;
        let cached = self.cache.get(&domain);
        let (p, fetched) = decide(txt, cached, now(), |id| self.fetch(&domain, id)).await;
        if let Some(f) = fetched {
            info!(domain, id = %f.id, mode = ?f.mode, max_age = f.max_age, "MTA-STS policy fetched");
            if let Err(e) = self.cache.put(&domain, &f) {
                warn!(domain, error = %e, "cannot store the MTA-STS policy");
            }
        }
        p
    }

    async fn txt(&self, domain: &str) -> Txt {
        let name = format!("_mta-sts.{domain}.");
        let lookup = tokio::time::timeout(
            self.timeout,
            self.resolver.hickory().txt_lookup(name.as_str()),
        )
        .await;
        let lookup = match lookup {
            Ok(Ok(l)) => l,
            Ok(Err(e)) if e.is_nx_domain() || e.is_no_records_found() => return Txt::Absent,
            Ok(Err(e)) => {
                debug!(domain, error = %e, "MTA-STS TXT lookup failed");
                return Txt::Failed;
            }
            Err(_) => return Txt::Failed,
        };
        // RFC 8461 3.1: records not starting with v=STSv1 are ignored;
        // more than one STSv1 record means none.
        let mut ids = Vec::new();
        for r in lookup.answers() {
            if let RData::TXT(t) = &r.data {
                let text: Vec<u8> = t.txt_data.iter().flat_map(|s| s.iter().copied()).collect();
                let text = String::from_utf8_lossy(&text);
                if text.starts_with("v=STSv1") {
                    ids.push(parse_txt(&text));
                }
            }
        }
        match ids.as_slice() {
            [Some(id)] => Txt::Id(id.clone()),
            _ => Txt::Absent,
        }
    }

    /// Fetches and parses the policy of `domain` (RFC 8461 3.3).
    async fn fetch(&self, domain: &str, id: String) -> Result<Policy, String> {
        let r = tokio::time::timeout(self.timeout, self.fetch_inner(domain, id))
            .await
            .unwrap_or_else(|_| Err("timed out".to_string()));
        if let Err(e) = &r {
            let cached = self.cache.get(domain).is_some_and(|p| p.fresh(now()));
            info!(domain, error = %e, cached, "MTA-STS policy fetch failed (a fresh cached policy stays in force)");
        }
        r
    }

    async fn fetch_inner(&self, domain: &str, id: String) -> Result<Policy, String> {
        let host = format!("mta-sts.{domain}");
        // Resolved through msgd's resolver, never the system's (crate::dns).
        let ips = self
            .resolver
            .addresses(&format!("{host}."))
            .await
            .map_err(|e| e.to_string())?;
        let mut tls = rustls::ClientConfig::builder()
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut b = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .https_only(true)
            .timeout(self.timeout);
        for ip in ips.iter().take(4) {
            b = b.resolve(&host, SocketAddr::new(*ip, self.port));
        }
        let client = b.build().map_err(|e| e.to_string())?;
        let url = if self.port == 443 {
            format!("https://{host}/.well-known/mta-sts.txt")
        } else {
            format!("https://{host}:{}/.well-known/mta-sts.txt", self.port)
        };
        let mut resp = client.get(&url).send().await.map_err(|e| e.to_string())?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(format!("HTTP status {}", resp.status().as_u16()));
        }
        let ctype = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if !ctype.starts_with("text/plain") {
            return Err("the policy is not text/plain".into());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err("the policy is larger than 64 KiB".into());
            }
            body.extend_from_slice(&chunk);
        }
        let text = std::str::from_utf8(&body).map_err(|_| "the policy is not UTF-8")?;
        parse_policy(text, &id, now())
    }
}

impl Drop for MtaSts {
    /// The TLS-RPT counts of the day so far are written at shutdown.
    fn drop(&mut self) {
        if let Err(e) = self.reports.flush(now()) {
            warn!(error = %e, "cannot write the TLS-RPT report files");
        }
    }
}

/// The system's roots (/etc/ssl/certs/ca-certificates.crt) plus
/// `mta.tls_ca_file` when set.
fn roots(ca_file: &str) -> Arc<rustls::RootCertStore> {
    let mut all = rustls::RootCertStore::empty();
    for path in ["", ca_file] {
        if path.is_empty() && !all.is_empty() {
            continue;
        }
        match super::client::load_roots(path) {
            Ok(r) => all.roots.extend(r.roots.iter().cloned()),
            Err(e) => warn!(file = %path, error = %e, "cannot load trust anchors for MTA-STS"),
        }
    }
    Arc::new(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 86400\r\n";

    #[test]
    fn txt_records() {
        assert_eq!(
            parse_txt("v=STSv1; id=20160831085700Z;"),
            Some("20160831085700Z".into())
        );
        assert_eq!(parse_txt("v=STSv1;id=abc"), Some("abc".into()));
        assert_eq!(parse_txt("v=STSv1; id=abc; ext=1"), Some("abc".into()));
        assert_eq!(parse_txt("v=STSv2; id=abc"), None);
        assert_eq!(parse_txt("v=STSv1"), None);
        assert_eq!(parse_txt("v=STSv1; id="), None);
        assert_eq!(parse_txt("v=STSv1; id=a-b"), None);
        assert_eq!(parse_txt(&format!("v=STSv1; id={}", "a".repeat(33))), None);
        assert_eq!(parse_txt("v=STSv1; garbage"), None);
    }

    #[test]
    fn rfc8461_policy() {
        let p = parse_policy(GOOD, "id1", 100).unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.mx, vec!["mail.example.com", "*.example.net"]);
        assert_eq!(p.max_age, 86400);
        assert_eq!(p.id, "id1");
        // LF endings, unknown keys and spaces are fine.
        let p = parse_policy(
            "version: STSv1\nmode:testing\nfoo: bar\nmx: MX.Example.\nmax_age:5\n",
            "x",
            0,
        )
        .unwrap();
        assert_eq!((p.mode, p.mx[0].as_str()), (Mode::Testing, "mx.example"));
        // mode none needs no mx.
        assert!(parse_policy("version: STSv1\nmode: none\nmax_age: 5", "x", 0).is_ok());
    }

    #[test]
    fn hostile_policies() {
        for bad in [
            "",
            "version: STSv2\nmode: enforce\nmx: a.b\nmax_age: 5",
            "mode: enforce\nmx: a.b\nmax_age: 5",
            "version: STSv1\nmode: enforced\nmx: a.b\nmax_age: 5",
            "version: STSv1\nmode: enforce\nmax_age: 5",
            "version: STSv1\nmode: enforce\nmx: a.b",
            "version: STSv1\nmode: enforce\nmx: a.b\nmax_age: -5",
            "version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 99999999999999999999",
            "version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 5\nmode: none",
            "version: STSv1\nmode: enforce\nmx: a..b\nmax_age: 5",
            "version: STSv1\nmode: enforce\nmx: *.*.b\nmax_age: 5",
            "version: STSv1\nmode: enforce\nmx: a.b/../c\nmax_age: 5",
            "version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 5\njunk line",
            "<html><body>not found</body></html>",
        ] {
            assert!(parse_policy(bad, "x", 0).is_err(), "accepted: {bad:?}");
        }
        let many: String = (0..200).map(|i| format!("mx: h{i}.example\n")).collect();
        assert!(parse_policy(
            &format!("version: STSv1\nmode: enforce\nmax_age: 5\n{many}"),
            "x",
            0
        )
        .is_err());
        // max_age is capped at a year.
        let p = parse_policy("version: STSv1\nmode: none\nmax_age: 9999999999", "x", 0).unwrap();
        assert_eq!(p.max_age, MAX_AGE_CAP);
    }

    #[test]
    fn rfc8461_4_1_mx_matching() {
        assert!(mx_matches("mail.example.com", "mail.example.com"));
        assert!(mx_matches("mail.example.com", "MAIL.example.com."));
        assert!(!mx_matches("mail.example.com", "mail2.example.com"));
        assert!(mx_matches("*.example.net", "mx1.example.net"));
        // The wildcard stands for exactly one label.
        assert!(!mx_matches("*.example.net", "a.b.example.net"));
        assert!(!mx_matches("*.example.net", "example.net"));
        assert!(!mx_matches("*.example.net", "evilexample.net"));
        assert!(!mx_matches("*.example.net", ".example.net"));
    }

    #[test]
    fn safe_domains() {
        assert_eq!(safe_domain("Example.COM."), Some("example.com".into()));
        assert_eq!(safe_domain("../etc"), None);
        assert_eq!(safe_domain("a/b.c"), None);
        assert_eq!(safe_domain("localhost"), None);
        assert_eq!(safe_domain("[127.0.0.1]"), None);
    }

    fn policy(id: &str, fetched: u64, max_age: u64) -> Policy {
        Policy {
            id: id.into(),
            mode: Mode::Enforce,
            mx: vec!["mx.example".into()],
            max_age,
            fetched,
        }
    }

    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn rfc8461_5_1_cache_decisions() {
        let never = |_id: String| async { panic!("no fetch expected") };
        let fails = |_id: String| async { Err::<Policy, _>("down".to_string()) };
        let gives = |id: String| async move { Ok(policy(&id, 1000, 50)) };
        // Same id, fresh: the cached policy, no fetch.
        let (p, f) = run(decide(
            Txt::Id("a".into()),
            Some(policy("a", 900, 200)),
            1000,
            never,
        ));
        assert_eq!((p.unwrap().id, f), ("a".to_string(), None));
        // New id: fetched and stored.
        let (p, f) = run(decide(
            Txt::Id("b".into()),
            Some(policy("a", 900, 200)),
            1000,
            gives,
        ));
        assert_eq!(p.unwrap().id, "b");
        assert!(f.is_some());
        // New id but the fetch fails: the fresh cached one stays.
        let (p, _) = run(decide(
            Txt::Id("b".into()),
            Some(policy("a", 900, 200)),
            1000,
            fails,
        ));
        assert_eq!(p.unwrap().id, "a");
        // Expired cache and the fetch fails: no policy.
        let (p, _) = run(decide(
            Txt::Id("b".into()),
            Some(policy("a", 0, 200)),
            1000,
            fails,
        ));
        assert!(p.is_none());
        // Expired, same id: fetched again.
        let (p, f) = run(decide(
            Txt::Id("a".into()),
            Some(policy("a", 0, 200)),
            1000,
            gives,
        ));
        assert!(p.is_some() && f.is_some());
        // TXT gone or DNS down: the fresh cached policy, until max_age.
        let (p, _) = run(decide(
            Txt::Absent,
            Some(policy("a", 900, 200)),
            1000,
            never,
        ));
        assert!(p.is_some());
        let (p, _) = run(decide(
            Txt::Failed,
            Some(policy("a", 900, 200)),
            1099,
            never,
        ));
        assert!(p.is_some());
        let (p, _) = run(decide(
            Txt::Failed,
            Some(policy("a", 900, 200)),
            1100,
            never,
        ));
        assert!(p.is_none());
        let (p, _) = run(decide(Txt::Absent, None, 1000, never));
        assert!(p.is_none());
    }

    #[test]
    fn durable_cache_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::new(dir.path().join("sts"), 2);
        c.put("a.example", &policy("1", 10, 100)).unwrap();
        c.put("b.example", &policy("2", 20, 100)).unwrap();
        // A new cache on the same folder (a restart) reads it back.
        let c2 = Cache::new(dir.path().join("sts"), 2);
        assert_eq!(c2.get("a.example").unwrap().id, "1");
        // A third domain drops the oldest fetched.
        c2.put("c.example", &policy("3", 30, 100)).unwrap();
        let c3 = Cache::new(dir.path().join("sts"), 2);
        assert!(c3.get("a.example").is_none());
        assert_eq!(c3.get("b.example").unwrap().id, "2");
        assert_eq!(c3.get("c.example").unwrap().id, "3");
        // Replacing a domain's policy does not evict another.
        c3.put("c.example", &policy("4", 40, 100)).unwrap();
        assert!(Cache::new(dir.path().join("sts"), 2)
            .get("b.example")
            .is_some());
    }
}
