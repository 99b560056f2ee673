//! Outbound DKIM signing (RFC 6376; ed25519-sha256 RFC 8463) with
//! mail-auth, and the key files `msgd dkim keygen|show` manage
//! (src/ops/dkim.rs, docs/hygiene.md "DKIM signing").
//!
//! Where: once, when submission (SMTP submission and JMAP
//! EmailSubmission, both `Delivery::for_submission`) hands the message to
//! the queue. The queue file holds the signed bytes, so every retry, MX or
//! relay, sends the same signature and no key is needed on the queue
//! runner's path. Mail relayed by the MTAs (`Mode::Accept`) is not signed:
//! it was not written here.
//!
//! Which domain: the RFC 5322 From domain (the one DMARC aligns with), not
//! the envelope sender. A message is signed only when it has exactly one
//! From field whose mailboxes are all in one domain with a key; otherwise
//! it goes unsigned (logged at debug).
//!
//! Keys: `<key_dir>/<domain>/<selector>.<rsa|ed25519>.key`, PKCS#8 PEM
//! (PKCS#1 `RSA PRIVATE KEY` is read too), mode 0600. Every key in the
//! domain's folder signs: with an RSA and an Ed25519 key the message gets
//! two DKIM-Signature fields (RFC 8463 3). A folder is read again when its
//! modification time changes, so a new key takes effect without restart.
//!
//! Signature: relaxed/relaxed, `[dkim] headers` (lower case), From
//! over-signed (listed once more than present, RFC 6376 8.15), and every
//! listed header the message lacks is listed too, so none can be added
//! after signing (mail-auth does this). No `l=`, no `x=`.
//!
//! Hostile input: the domain comes from the message and names a folder,
//! so it must be a plain DNS name (`valid_domain`): no `/`, no `..`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::config::Config;

/// Key files larger than this are not read (a 8192-bit RSA PEM is ~6 KiB).
const MAX_KEY_FILE: u64 = 64 * 1024;

/// Keys per domain folder that are used (the rest are ignored, logged).
const MAX_KEYS: usize = 8;

/// The two DKIM algorithms msgd signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Alg {
    /// rsa-sha256 (RFC 6376).
    Rsa,
    /// ed25519-sha256 (RFC 8463).
    Ed25519,
}

impl Alg {
    /// The file name suffix and the DNS `k=` tag.
    pub fn name(self) -> &'static str {
        match self {
            Alg::Rsa => "rsa",
            Alg::Ed25519 => "ed25519",
        }
    }

    pub fn parse(s: &str) -> Option<Alg> {
        match s {
            "rsa" => Some(Alg::Rsa),
            "ed25519" => Some(Alg::Ed25519),
            _ => None,
        }
    }
}

/// One key file of a domain.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyFile {
    pub selector: String,
    pub alg: Alg,
    pub path: PathBuf,
}

/// The folder holding all domains' keys.
pub fn key_dir(config: &Config) -> PathBuf {
    config.data_path(&config.dkim.key_dir, "dkim")
}

/// A DNS name usable as a folder name: letters, digits, `-`, `.` between
/// labels of 1..=63, at most 253 in all.
pub fn valid_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A selector (RFC 6376 3.1: dot-separated sub-domain labels).
pub fn valid_selector(s: &str) -> bool {
    valid_domain(s) && s.len() <= 63
}

/// The key files in `<key_dir>/<domain>`, sorted (selector, algorithm).
/// Names that do not read `<selector>.<rsa|ed25519>.key` are skipped.
pub fn key_files(dir: &Path, domain: &str) -> std::io::Result<Vec<KeyFile>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir.join(domain)) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for e in entries {
        let e = e?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(".key") else {
            continue;
        };
        let Some((selector, alg)) = stem.rsplit_once('.') else {
            continue;
        };
        let (Some(alg), true) = (Alg::parse(alg), valid_selector(selector)) else {
            continue;
        };
        out.push(KeyFile {
            selector: selector.to_string(),
            alg,
            path: e.path(),
        });
    }
    out.sort();
    Ok(out)
}

/// Reads a key file (bounded).
pub fn read_key_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let mut buf = Vec::new();
    f.take(MAX_KEY_FILE + 1).read_to_end(&mut buf)?;
    anyhow::ensure!(
        buf.len() as u64 <= MAX_KEY_FILE,
        "{}: larger than {MAX_KEY_FILE} bytes",
        path.display()
    );
    Ok(buf)
}

/// A key ready to sign for one domain and selector.
enum Prepared {
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
    Ed25519(DkimSigner<Ed25519Key, Done>),
}

/// The header list given to the signer: the configured fields with From
/// once more (over-signing; mail-auth lists a name it cannot find again
/// as present-but-empty).
fn header_list(configured: &[String]) -> Vec<String> {
    let mut h: Vec<String> = configured
        .iter()
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty() && s != "from" && s != "dkim-signature")
        .collect();
    h.dedup();
    h.insert(0, "from".into());
    h.push("from".into());
    h
}

fn prepare(k: &KeyFile, domain: &str, headers: &[String]) -> anyhow::Result<Prepared> {
    let pem = read_key_file(&k.path)?;
    let der = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| anyhow::anyhow!("{}: not a PEM private key: {e}", k.path.display()))?;
    let relaxed = Canonicalization::Relaxed;
    Ok(match k.alg {
        Alg::Rsa => {
            let key = RsaKey::<Sha256>::from_key_der(der)
                .map_err(|e| anyhow::anyhow!("{}: {e}", k.path.display()))?;
            Prepared::Rsa(
                DkimSigner::from_key(key)
                    .domain(domain)
                    .selector(&k.selector)
                    .headers(headers.iter().cloned())
                    .header_canonicalization(relaxed)
                    .body_canonicalization(relaxed),
            )
        }
        Alg::Ed25519 => {
            let PrivateKeyDer::Pkcs8(p8) = der else {
                anyhow::bail!("{}: an Ed25519 key must be PKCS#8", k.path.display());
            };
            let key = Ed25519Key::from_pkcs8_maybe_unchecked_der(p8.secret_pkcs8_der())
                .map_err(|e| anyhow::anyhow!("{}: {e}", k.path.display()))?;
            Prepared::Ed25519(
                DkimSigner::from_key(key)
                    .domain(domain)
                    .selector(&k.selector)
                    .headers(headers.iter().cloned())
                    .header_canonicalization(relaxed)
                    .body_canonicalization(relaxed),
            )
        }
    })
}

/// A domain's keys as last read, with the folder's modification time.
struct Cached {
    stamp: Option<SystemTime>,
    keys: Arc<Vec<Prepared>>,
}

/// The process's one DKIM signer (`Services::dkim`), so its parsed keys
/// outlive a submission session or a JMAP send. Built on first use from
/// the session's config snapshot and built again only when a reload
/// changed `[dkim]` (key folder or header list); the keys themselves are
/// read again when a domain's folder changes (`Signer::keys`).
#[derive(Default)]
pub struct Signers {
    current: Mutex<Option<Arc<Signer>>>,
}

impl Signers {
    /// The signer for `config`, or None when signing is off.
    pub fn for_config(&self, config: &Config) -> Option<Arc<Signer>> {
        if !config.dkim.enabled {
            return None;
        }
        let (dir, headers) = (key_dir(config), header_list(&config.dkim.headers));
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = cur.as_ref() {
            if s.dir == dir && s.headers == headers {
                return Some(s.clone());
            }
        }
        let s = Arc::new(Signer::new(dir, headers));
        *cur = Some(s.clone());
        Some(s)
    }
}

/// Signs submitted messages with the keys under `[dkim] key_dir`.
pub struct Signer {
    dir: PathBuf,
    headers: Vec<String>,
    /// Domains looked up so far (bounded: cleared when it grows past
    /// `MAX_CACHED`, as a From domain is chosen by the sender).
    cache: Mutex<HashMap<String, Cached>>,
}

const MAX_CACHED: usize = 1024;

impl Signer {
    /// None when signing is off (`[dkim] enabled = false`).
    pub fn from_config(config: &Config) -> Option<Arc<Signer>> {
        config.dkim.enabled.then(|| {
            Arc::new(Signer::new(
                key_dir(config),
                header_list(&config.dkim.headers),
            ))
        })
    }

    fn new(dir: PathBuf, headers: Vec<String>) -> Signer {
        Signer {
            dir,
            headers,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The domain's keys, read again when its folder changed.
    fn keys(&self, domain: &str) -> Arc<Vec<Prepared>> {
        let folder = self.dir.join(domain);
        let stamp = std::fs::metadata(&folder).and_then(|m| m.modified()).ok();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.get(domain) {
            if c.stamp == stamp {
                return c.keys.clone();
            }
        }
        let mut keys = Vec::new();
        if stamp.is_some() {
            match key_files(&self.dir, domain) {
                Ok(files) => {
                    if files.len() > MAX_KEYS {
                        tracing::warn!(
                            domain,
                            n = files.len(),
                            "dkim: too many keys; using {MAX_KEYS}"
                        );
                    }
                    for k in files.iter().take(MAX_KEYS) {
                        match prepare(k, domain, &self.headers) {
                            Ok(p) => keys.push(p),
                            Err(e) => tracing::error!(domain, "dkim: key not usable: {e:#}"),
                        }
                    }
                }
                Err(e) => tracing::error!(domain, "dkim: cannot list keys: {e}"),
            }
        }
        let keys = Arc::new(keys);
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(
            domain.to_string(),
            Cached {
                stamp,
                keys: keys.clone(),
            },
        );
        keys
    }

    /// The DKIM-Signature fields for `message` (CRLF-terminated, to go
    /// before it), or None when it is not to be signed (no single From
    /// domain, no key) or signing failed (logged).
    pub fn signatures(&self, id: &str, message: &[u8]) -> Option<Vec<u8>> {
        let Some(domain) = from_domain(message) else {
            tracing::debug!(id, "dkim: not signed: no single From domain");
            return None;
        };
        let keys = self.keys(&domain);
        if keys.is_empty() {
            tracing::debug!(id, domain, "dkim: not signed: no key for the From domain");
            return None;
        }
        let mut out = Vec::new();
        for k in keys.iter() {
            let sig = match k {
                Prepared::Rsa(s) => s.sign(message),
                Prepared::Ed25519(s) => s.sign(message),
            };
            match sig {
                Ok(sig) => out.extend_from_slice(sig.to_header().as_bytes()),
                Err(e) => tracing::error!(id, domain, "dkim: signing failed: {e}"),
            }
        }
        if !out.is_empty() {
            tracing::info!(id, domain, n = keys.len(), "dkim: signed");
        }
        (!out.is_empty()).then_some(out)
    }

    /// `message` with its signatures in front (the same bytes when not
    /// signed). Runs the hashing off the async threads.
    pub async fn sign(self: &Arc<Self>, id: &str, message: Arc<Vec<u8>>) -> Arc<Vec<u8>> {
        let (me, id, m) = (self.clone(), id.to_string(), message.clone());
        let got = tokio::task::spawn_blocking(move || me.signatures(&id, &m)).await;
        match got {
            Ok(Some(sigs)) => {
                let mut out = Vec::with_capacity(sigs.len() + message.len());
                out.extend_from_slice(&sigs);
                out.extend_from_slice(&message);
                Arc::new(out)
            }
            Ok(None) => message,
            Err(e) => {
                tracing::error!("dkim: signing task failed: {e}");
                message
            }
        }
    }
}

/// The domain of the message's From mailboxes (lower case) when there is
/// exactly one From field and all its mailboxes share one valid domain.
pub fn from_domain(message: &[u8]) -> Option<String> {
    use crate::smtp::trace::{originators, Originators};
    // originators() also reads Sender:; only From's domain matters here.
    let end = crate::smtp::trace::header_section_len(message).unwrap_or(message.len());
    let header = &message[..end];
    let parsed = mail_parser::MessageParser::default().parse_headers(header)?;
    let from = parsed
        .headers()
        .iter()
        .filter(|h| h.name == mail_parser::HeaderName::From)
        .count();
    if from != 1 {
        return None;
    }
    let addrs = parsed.from()?;
    let mut domain: Option<String> = None;
    for a in addrs.iter() {
        let d = a.address()?.rsplit_once('@')?.1.to_ascii_lowercase();
        match &domain {
            Some(prev) if *prev != d => return None,
            Some(_) => {}
            None => domain = Some(d),
        }
    }
    // The same checks as the session's From rules (duplicates, unreadable).
    if !matches!(originators(message), Originators::Addresses(_)) {
        return None;
    }
    domain.filter(|d| valid_domain(d))
}

/// Base64 of `der` in 64-column PEM lines with `label`.
pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(chunk).unwrap_or(""));
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

/// The public key of a key file as the DNS `p=` wants it: for RSA the
/// SubjectPublicKeyInfo DER (what openssl and dkimpy use), for Ed25519
/// the raw 32 bytes (RFC 8463 4).
pub fn public_key(alg: Alg, pem_bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    match alg {
        Alg::Rsa => {
            use rsa::pkcs1::DecodeRsaPrivateKey;
            use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
            let text = std::str::from_utf8(pem_bytes)?;
            let key = rsa::RsaPrivateKey::from_pkcs8_pem(text)
                .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(text))
                .map_err(|e| anyhow::anyhow!("not an RSA private key: {e}"))?;
            let spki = key
                .to_public_key()
                .to_public_key_der()
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(spki.as_bytes().to_vec())
        }
        Alg::Ed25519 => {
            use ring::signature::KeyPair;
            let p8 = PrivatePkcs8KeyDer::from_pem_slice(pem_bytes)
                .map_err(|e| anyhow::anyhow!("not a PKCS#8 PEM key: {e}"))?;
            let kp =
                ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(p8.secret_pkcs8_der())
                    .map_err(|e| anyhow::anyhow!("not an Ed25519 key: {e}"))?;
            Ok(kp.public_key().as_ref().to_vec())
        }
    }
}

/// The TXT record value to publish at `<selector>._domainkey.<domain>`.
pub fn txt_value(alg: Alg, public: &[u8]) -> String {
    use base64::Engine;
    let p = base64::engine::general_purpose::STANDARD.encode(public);
    format!("v=DKIM1; k={}; p={p}", alg.name())
}

/// A new private key, PKCS#8 PEM.
pub fn generate(alg: Alg, bits: usize) -> anyhow::Result<String> {
    match alg {
        Alg::Rsa => {
            use rsa::pkcs8::{EncodePrivateKey, LineEnding};
            anyhow::ensure!(
                (2048..=8192).contains(&bits),
                "RSA key size {bits}: choose 2048..=8192 (ring signs with 2048 bits or more)"
            );
            let mut rng = rand::rngs::OsRng;
            let key = rsa::RsaPrivateKey::new(&mut rng, bits)?;
            let pem = key
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(pem.to_string())
        }
        Alg::Ed25519 => {
            let rng = ring::rand::SystemRandom::new();
            let doc = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(pem("PRIVATE KEY", doc.as_ref()))
        }
    }
}

#[cfg(test)]
mod tests;
