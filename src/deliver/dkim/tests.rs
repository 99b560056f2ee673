//! Signing checked by mail-auth's verifier (RFC 6376 6.1, RFC 8463), the
//! public keys served from a TXT cache instead of DNS.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Instant;

use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::{
    AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, ResolverCache, Txt,
};

use super::*;

/// TXT answers by name, standing in for DNS.
struct Records(Mutex<HashMap<Box<str>, Txt>>);

impl ResolverCache<Box<str>, Txt> for Records {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().get(name).cloned()
    }
    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().remove(name)
    }
    fn insert(&self, key: Box<str>, value: Txt, _valid_until: Instant) {
        self.0.lock().unwrap().insert(key, value);
    }
}

const MESSAGE: &[u8] = b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: hello\r\nDate: Wed, 2 Dec 2026 10:00:00 +0000\r\nMessage-ID: <1@example.org>\r\n\r\nHello  there.\r\n\r\n\r\n";

/// A config whose key folder is `dir`, with keys written for example.org.
fn setup(dir: &Path, algs: &[Alg]) -> (Config, Records) {
    let mut config = Config::default();
    config.server.data_dir = dir.to_path_buf();
    let records = Records(Mutex::new(HashMap::new()));
    let folder = key_dir(&config).join("example.org");
    std::fs::create_dir_all(&folder).unwrap();
    for &alg in algs {
        let pem = generate(alg, 2048).unwrap();
        let sel = format!("s-{}", alg.name());
        std::fs::write(folder.join(format!("{sel}.{}.key", alg.name())), &pem).unwrap();
        let txt = txt_value(alg, &public_key(alg, pem.as_bytes()).unwrap());
        let dk = DomainKey::parse(txt.as_bytes()).unwrap();
        records.0.lock().unwrap().insert(
            format!("{sel}._domainkey.example.org.").into_boxed_str(),
            Txt::from(dk),
        );
    }
    (config, records)
}

async fn verify(signed: &[u8], records: &Records) -> Vec<DkimResult> {
    let auth = MessageAuthenticator::new_cloudflare().unwrap();
    let msg = AuthenticatedMessage::parse(signed).unwrap();
    let out = auth
        .verify_dkim(Parameters::new(&msg).with_txt_cache(records))
        .await;
    out.iter().map(|o| o.result().clone()).collect()
}

#[tokio::test]
async fn rfc6376_rsa_and_rfc8463_ed25519_signatures_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let (config, records) = setup(tmp.path(), &[Alg::Rsa, Alg::Ed25519]);
    let signer = Signer::from_config(&config).unwrap();
    let signed = signer.sign("t", Arc::new(MESSAGE.to_vec())).await;
    let text = String::from_utf8_lossy(&signed);
    assert_eq!(text.matches("DKIM-Signature:").count(), 2, "{text}");
    assert!(text.contains("a=rsa-sha256") && text.contains("a=ed25519-sha256"));
    assert!(text.contains("c=relaxed/relaxed"));
    let results = verify(&signed, &records).await;
    assert_eq!(results, vec![DkimResult::Pass, DkimResult::Pass]);
}

#[tokio::test]
async fn rfc6376_8_15_from_is_over_signed() {
    let tmp = tempfile::tempdir().unwrap();
    let (config, records) = setup(tmp.path(), &[Alg::Ed25519]);
    let signer = Signer::from_config(&config).unwrap();
    let signed = signer.sign("t", Arc::new(MESSAGE.to_vec())).await;
    let text = String::from_utf8_lossy(&signed).to_ascii_lowercase();
    let h = text.split("h=").nth(1).unwrap().split(';').next().unwrap();
    let h: String = h.split_whitespace().collect();
    assert!(h.matches("from").count() >= 2, "{h}");
    // A second From added after signing breaks the signature.
    let mut forged = b"From: mallory@example.org\r\n".to_vec();
    forged.extend_from_slice(&signed);
    let results = verify(&forged, &records).await;
    assert!(
        results.iter().all(|r| *r != DkimResult::Pass),
        "{results:?}"
    );
    assert_eq!(verify(&signed, &records).await, vec![DkimResult::Pass]);
}

#[tokio::test]
async fn changed_body_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let (config, records) = setup(tmp.path(), &[Alg::Ed25519]);
    let signer = Signer::from_config(&config).unwrap();
    let signed = signer.sign("t", Arc::new(MESSAGE.to_vec())).await;
    let mut changed = signed.to_vec();
    let n = changed.len();
    changed[n - 8] = b'X';
    let results = verify(&changed, &records).await;
    assert!(
        matches!(
            results[..],
            [DkimResult::Neutral(_)] | [DkimResult::Fail(_)]
        ),
        "{results:?}"
    );
}

#[tokio::test]
async fn no_key_or_no_single_from_domain_is_not_signed() {
    let tmp = tempfile::tempdir().unwrap();
    let (config, _) = setup(tmp.path(), &[Alg::Ed25519]);
    let signer = Signer::from_config(&config).unwrap();
    let other = b"From: a@other.example\r\nSubject: x\r\n\r\nbody\r\n".to_vec();
    assert!(signer.signatures("t", &other).is_none());
    let two = b"From: a@example.org, b@other.example\r\n\r\nbody\r\n".to_vec();
    assert!(signer.signatures("t", &two).is_none());
    let dup = b"From: a@example.org\r\nFrom: b@example.org\r\n\r\nbody\r\n".to_vec();
    assert!(signer.signatures("t", &dup).is_none());
    let evil = b"From: a@../../etc\r\n\r\nbody\r\n".to_vec();
    assert!(signer.signatures("t", &evil).is_none());
    let mut off = config.clone();
    off.dkim.enabled = false;
    assert!(Signer::from_config(&off).is_none());
}

#[test]
fn one_signer_per_process_rebuilt_only_when_dkim_config_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let (config, _) = setup(tmp.path(), &[Alg::Ed25519]);
    let signers = Signers::default();
    let a = signers.for_config(&config).unwrap();
    let b = signers.for_config(&config.clone()).unwrap();
    assert!(
        Arc::ptr_eq(&a, &b),
        "the same signer (and parsed keys) is reused"
    );
    let m = b"From: a@example.org\r\nSubject: x\r\n\r\nbody\r\n".to_vec();
    assert!(b.signatures("t", &m).is_some());
    let mut off = config.clone();
    off.dkim.enabled = false;
    assert!(signers.for_config(&off).is_none());
    let mut other = config.clone();
    other.dkim.headers = vec!["From".into(), "To".into()];
    let c = signers.for_config(&other).unwrap();
    assert!(
        !Arc::ptr_eq(&a, &c),
        "a reload that changed [dkim] builds anew"
    );
    assert!(Arc::ptr_eq(&c, &signers.for_config(&other).unwrap()));
}

#[test]
fn domains_and_selectors_that_name_folders_are_plain_dns_names() {
    assert!(valid_domain("example.org") && valid_domain("a-b.example"));
    for bad in ["", "..", "a..b", "a/b", ".a", "a.", "x y", "é.example"] {
        assert!(!valid_domain(bad), "{bad}");
    }
}

#[test]
fn key_files_are_listed_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("example.org");
    std::fs::create_dir_all(&d).unwrap();
    for n in [
        "a.rsa.key",
        "b.ed25519.key",
        "c.dsa.key",
        "notes.txt",
        "..rsa.key",
    ] {
        std::fs::write(d.join(n), "x").unwrap();
    }
    let got: Vec<(String, Alg)> = key_files(tmp.path(), "example.org")
        .unwrap()
        .into_iter()
        .map(|k| (k.selector, k.alg))
        .collect();
    assert_eq!(
        got,
        vec![("a".into(), Alg::Rsa), ("b".into(), Alg::Ed25519)]
    );
}
