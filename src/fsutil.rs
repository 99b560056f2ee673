//! Small durable-file helpers, and private file modes.
//!
//! Everything msgd writes under its data folder (messages, queue records,
//! the directory file, redb databases, TLS keys) is readable by msgd's user
//! only: files 0600, folders 0700, whatever umask msgd was started with.
//! Two layers: `restrict_umask` at start (covers files created by
//! libraries, e.g. redb), and explicit modes where msgd creates files
//! itself (`private_file`, `create_private_dir_all`), so a path that
//! bypasses main (tests, library use) is private too.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Mode of every file msgd creates.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every folder msgd creates.
pub const DIR_MODE: u32 = 0o700;

/// Sets the process umask to 077, so that files created by libraries
/// (redb, log files) are private too. Returns the previous umask.
pub fn restrict_umask() -> u32 {
    // SAFETY: umask only changes the process's file-creation mask.
    unsafe { libc::umask(0o077) as u32 }
}

/// OpenOptions that create files with mode 0600 (set at creation, not
/// after: there is no window in which the file is readable by others).
pub fn private_file() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE);
    o
}

/// `create_dir_all` with mode 0700 for every folder it creates.
pub fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// fsyncs a directory so that entries created or renamed in it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Starts writing `f`'s dirty pages to the disk (Linux
/// `sync_file_range`), so that the sync that makes it durable later finds
/// them written or on their way. With `wait`, also waits until they are
/// written (a large file: its bytes go out here, on the caller's thread,
/// not while a batch's sync waits). Advisory: it makes nothing durable,
/// and a failure is left to that sync to report. Elsewhere a no-op.
pub fn start_writeback(f: &File, wait: bool) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let flags = if wait {
            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER
        } else {
            libc::SYNC_FILE_RANGE_WRITE
        };
        // SAFETY: the descriptor is open for the call's duration; the
        // result is advisory (see above).
        let _ = unsafe { libc::sync_file_range(f.as_raw_fd(), 0, 0, flags) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (f, wait);
}

/// Replaces `path` atomically with `data`: write a temporary file, fsync it,
/// rename it over `path`, fsync the directory.
pub fn write_durable(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    create_private_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    {
        // The mode is that of the new file: the rename keeps it.
        let mut f = private_file()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// Free bytes available to unprivileged users on the filesystem of `path`.
pub fn free_space(path: &Path) -> io::Result<u64> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path has a NUL byte"))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid NUL-terminated path and st a valid out pointer.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    /// Modes are explicit at creation, not left to the umask (the test
    /// process keeps its own, usually 022, which would give 0755 / 0644;
    /// tests/integration/test_hostile_auth.py runs the binary with 000).
    #[test]
    fn files_and_folders_are_private_whatever_the_umask() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("a/b/c");
        let file = dir.join("f");
        create_private_dir_all(&dir).unwrap();
        write_durable(&file, b"x").unwrap();
        write_durable(&file, b"y").unwrap();
        private_file()
            .write(true)
            .create_new(true)
            .open(dir.join("g"))
            .unwrap();
        for p in [d.path().join("a"), d.path().join("a/b"), dir.clone()] {
            assert_eq!(mode(&p), DIR_MODE, "{}", p.display());
        }
        assert_eq!(mode(&file), FILE_MODE);
        assert_eq!(mode(&dir.join("g")), FILE_MODE);
    }
}
