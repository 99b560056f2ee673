//! Spooling of large message bodies to disk (`limits.spool_threshold`).
//!
//! A body's first `threshold` bytes stay in memory (header checks read
//! them there); the rest is written to a temporary file under
//! `<data_dir>/spool` that is never linked into the folder (O_TMPFILE) or
//! unlinked right after creation, mode 0600 in a 0700 folder: nothing is
//! left behind by a crash, and no other user can read it. The file is read
//! back once, when the message is delivered.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Where and from which size bodies are spooled.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// Bytes kept in memory before the body goes to disk.
    pub threshold: usize,
    /// The spool folder (created 0700 when first needed).
    pub dir: PathBuf,
}

/// Bytes written to the file are collected in memory up to this size
/// first, so a body arriving in small reads costs few system calls.
const WRITE_CHUNK: usize = 64 * 1024;

/// The on-disk part of one body.
#[derive(Debug)]
pub struct SpoolFile {
    file: File,
    /// Bytes not written yet.
    pending: Vec<u8>,
    /// Bytes in the file.
    written: u64,
}

impl SpoolFile {
    /// A new anonymous 0600 file in `dir`.
    pub fn create(dir: &Path) -> io::Result<SpoolFile> {
        ensure_dir(dir)?;
        Ok(SpoolFile {
            file: anonymous_file(dir)?,
            pending: Vec::new(),
            written: 0,
        })
    }

    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= WRITE_CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            self.file.write_all(&self.pending)?;
            self.written += self.pending.len() as u64;
            self.pending.clear();
        }
        Ok(())
    }

    /// Bytes held (written or pending).
    pub fn len(&self) -> u64 {
        self.written + self.pending.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the whole content to `out`.
    pub fn read_into(mut self, out: &mut Vec<u8>) -> io::Result<()> {
        self.flush()?;
        self.file.seek(SeekFrom::Start(0))?;
        out.reserve(usize::try_from(self.written).unwrap_or(0));
        let n = (&mut self.file).take(self.written).read_to_end(out)?;
        if n as u64 != self.written {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "spool file shorter than written",
            ));
        }
        Ok(())
    }
}

fn ensure_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    // Independent of the umask and of who created it first.
    let meta = std::fs::metadata(dir)?;
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

fn anonymous_file(dir: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    #[cfg(target_os = "linux")]
    {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE)
            .open(dir);
        if let Ok(f) = f {
            return Ok(f);
        }
        // Filesystems without O_TMPFILE: a named file, unlinked at once.
    }
    for _ in 0..16 {
        let name = format!(
            "body.{}.{}.{}",
            std::process::id(),
            rand::random::<u64>(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        );
        let path = dir.join(name);
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => {
                std::fs::remove_file(&path)?;
                return Ok(f);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "cannot create a spool file",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spool_file_is_invisible_and_reads_back() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("spool");
        let mut f = SpoolFile::create(&dir).unwrap();
        let chunk = vec![b'x'; 10_000];
        for _ in 0..20 {
            f.write(&chunk).unwrap();
        }
        f.write(b"end").unwrap();
        assert_eq!(f.len(), 200_003);
        // Nothing named in the folder: a crash leaves nothing behind.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let mut out = b"head".to_vec();
        f.read_into(&mut out).unwrap();
        assert_eq!(out.len(), 200_007);
        assert!(out.starts_with(b"headxxx"));
        assert!(out.ends_with(b"xend"));
    }
}
