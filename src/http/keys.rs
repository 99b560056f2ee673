//! Secret keys kept in files: the bearer-token key shared by mems and
//! stores (`http.token_key_file`) and the mem's cookie-sealing key
//! (`mem.session_key_file`). 32 random bytes written as hex, mode 0600,
//! created at first start when missing so that all-in-one needs no setup;
//! a multi-machine site copies the same file to every mem and store.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};

pub const KEY_LEN: usize = 32;

/// Reads the key in `path`, creating it (atomically, 0600) when missing.
pub fn load_or_create(path: &Path) -> anyhow::Result<[u8; KEY_LEN]> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(text.trim()).with_context(|| format!("key file {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key: [u8; KEY_LEN] = rand::random();
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension("tmp");
            {
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)
                    .with_context(|| format!("creating key file {}", tmp.display()))?;
                f.write_all(format!("{hex}\n").as_bytes())?;
                f.sync_all()?;
            }
            // A concurrent first start may have made one already: keep it.
            match std::fs::hard_link(&tmp, path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e).with_context(|| format!("key file {}", path.display())),
            }
            let _ = std::fs::remove_file(&tmp);
            load_or_create(path)
        }
        Err(e) => Err(e).with_context(|| format!("reading key file {}", path.display())),
    }
}

fn parse(hex: &str) -> anyhow::Result<[u8; KEY_LEN]> {
    if hex.len() != KEY_LEN * 2 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("expected {} hex digits", KEY_LEN * 2);
    }
    let mut key = [0u8; KEY_LEN];
    for (i, k) in key.iter_mut().enumerate() {
        *k = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)?;
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.key");
        let a = load_or_create(&p).unwrap();
        let b = load_or_create(&p).unwrap();
        assert_eq!(a, b);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::write(&p, "nothex\n").unwrap();
        assert!(load_or_create(&p).is_err());
    }
}
