//! `msgd dkim keygen|show DOMAIN`: the DKIM keys outbound mail is signed
//! with (src/deliver/dkim.rs) and the DNS TXT records to publish.
//!
//! - `keygen DOMAIN [--selector S] [--algorithm rsa|ed25519] [--bits N] [--force]`
//!   writes `<key_dir>/<domain>/<S>.<alg>.key` (PKCS#8 PEM, mode 0600,
//!   written to a temporary file, fsynced, renamed; the folder fsynced)
//!   and prints the record. An existing key of that selector (either
//!   algorithm: one selector is one DNS name) is kept unless `--force`.
//!   The default selector is `[dkim.selector] DOMAIN`, else
//!   `[dkim] default_selector`, followed by `-rsa` or `-ed25519` so both
//!   keys can exist side by side.
//! - `show DOMAIN` prints the record of every key the domain has.
//!
//! Works on files only: beside a running server too (the signer reads a
//! domain's folder again when it changes). Private keys are never printed.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use crate::config::Config;
use crate::deliver::dkim::{self, Alg};

#[derive(clap::Subcommand, Debug, Clone)]
pub enum DkimCmd {
    /// Make a signing key for DOMAIN and print its DNS TXT record.
    Keygen {
        domain: String,
        /// Selector (default: from [dkim], with -rsa / -ed25519 appended).
        #[arg(long)]
        selector: Option<String>,
        /// rsa or ed25519.
        #[arg(long, default_value = "rsa")]
        algorithm: String,
        /// RSA key size.
        #[arg(long, default_value_t = 2048)]
        bits: usize,
        /// Replace an existing key of this selector.
        #[arg(long)]
        force: bool,
    },
    /// Print the DNS TXT records of DOMAIN's keys.
    Show { domain: String },
}

pub fn cli(config: &Config, cmd: DkimCmd) -> anyhow::Result<()> {
    match cmd {
        DkimCmd::Keygen {
            domain,
            selector,
            algorithm,
            bits,
            force,
        } => {
            let domain = checked_domain(&domain)?;
            let alg = Alg::parse(&algorithm.to_ascii_lowercase())
                .ok_or_else(|| anyhow::anyhow!("--algorithm {algorithm}: rsa or ed25519"))?;
            let selector = match selector {
                Some(s) => s.to_ascii_lowercase(),
                None => format!("{}-{}", base_selector(config, &domain), alg.name()),
            };
            anyhow::ensure!(
                dkim::valid_selector(&selector),
                "selector '{selector}': letters, digits, '-' and '.' only"
            );
            let line = keygen(config, &domain, &selector, alg, bits, force)?;
            println!("{line}");
            Ok(())
        }
        DkimCmd::Show { domain } => {
            let domain = checked_domain(&domain)?;
            let lines = show(config, &domain)?;
            anyhow::ensure!(
                !lines.is_empty(),
                "no DKIM key for {domain} (msgd dkim keygen {domain})"
            );
            for l in lines {
                println!("{l}");
            }
            Ok(())
        }
    }
}

fn checked_domain(d: &str) -> anyhow::Result<String> {
    let d = d.trim_end_matches('.').to_ascii_lowercase();
    anyhow::ensure!(dkim::valid_domain(&d), "'{d}' is not a domain name");
    Ok(d)
}

/// The configured selector of `domain` without the algorithm suffix.
fn base_selector(config: &Config, domain: &str) -> String {
    config
        .dkim
        .selector
        .get(domain)
        .cloned()
        .unwrap_or_else(|| config.dkim.default_selector.clone())
}

/// One zone-file line: `S._domainkey.DOMAIN. IN TXT "..."` (split into
/// 255-byte strings as TXT requires).
pub fn record_line(domain: &str, selector: &str, value: &str) -> String {
    let parts: Vec<String> = value
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    format!("{selector}._domainkey.{domain}. IN TXT {}", parts.join(" "))
}

/// Writes a new key; returns its record line.
pub fn keygen(
    config: &Config,
    domain: &str,
    selector: &str,
    alg: Alg,
    bits: usize,
    force: bool,
) -> anyhow::Result<String> {
    let root = dkim::key_dir(config);
    let folder = root.join(domain);
    let existing = dkim::key_files(&root, domain)?;
    let taken: Vec<_> = existing.iter().filter(|k| k.selector == selector).collect();
    if !taken.is_empty() && !force {
        anyhow::bail!(
            "a key for selector '{selector}' of {domain} exists ({}); --force replaces it",
            taken[0].path.display()
        );
    }
    let pem = dkim::generate(alg, bits)?;
    let public = dkim::public_key(alg, pem.as_bytes())?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&folder)?;
    let path = folder.join(format!("{selector}.{}.key", alg.name()));
    write_private(&path, pem.as_bytes())?;
    // The other algorithm's key of the same selector would publish a
    // second record at one name: replaced means removed.
    for k in taken {
        if k.path != path {
            std::fs::remove_file(&k.path)?;
        }
    }
    sync_dir(&folder)?;
    Ok(record_line(
        domain,
        selector,
        &dkim::txt_value(alg, &public),
    ))
}

/// The record lines of `domain`'s keys.
pub fn show(config: &Config, domain: &str) -> anyhow::Result<Vec<String>> {
    let root = dkim::key_dir(config);
    let mut out = Vec::new();
    for k in dkim::key_files(&root, domain)? {
        let pem = dkim::read_key_file(&k.path)?;
        let public = dkim::public_key(k.alg, &pem)
            .map_err(|e| anyhow::anyhow!("{}: {e}", k.path.display()))?;
        out.push(record_line(
            domain,
            &k.selector,
            &dkim::txt_value(k.alg, &public),
        ));
    }
    Ok(out)
}

/// Mode 0600 from the start; temporary file, fsync, rename.
fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("key.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_refuses_to_overwrite_and_show_prints_every_record() {
        let tmp = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.server.data_dir = tmp.path().to_path_buf();
        let line = keygen(&config, "example.org", "s1", Alg::Ed25519, 0, false).unwrap();
        assert!(line.starts_with("s1._domainkey.example.org. IN TXT \"v=DKIM1; k=ed25519; p="));
        let err = keygen(&config, "example.org", "s1", Alg::Rsa, 2048, false).unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        keygen(&config, "example.org", "s2", Alg::Rsa, 2048, false).unwrap();
        let shown = show(&config, "example.org").unwrap();
        assert_eq!(shown.len(), 2);
        assert_eq!(shown[0], line);
        assert!(shown[1].contains("k=rsa; p=MI"), "{}", shown[1]);
        // --force with the other algorithm replaces the selector's key.
        keygen(&config, "example.org", "s1", Alg::Rsa, 2048, true).unwrap();
        let shown = show(&config, "example.org").unwrap();
        assert_eq!(shown.len(), 2);
        assert!(shown.iter().all(|l| l.contains("k=rsa")));
        use std::os::unix::fs::PermissionsExt;
        let key = dkim::key_dir(&config).join("example.org/s1.rsa.key");
        let mode = std::fs::metadata(key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn long_records_are_split_into_255_byte_strings() {
        let v = "x".repeat(600);
        let l = record_line("d.example", "s", &v);
        assert_eq!(l.matches('"').count(), 6);
    }
}
