fn main() {
    tune_allocator();
    // Data, queue and directory files readable by msgd's user only,
    // whatever umask it was started with (src/fsutil.rs).
    msgd::fsutil::restrict_umask();
    std::process::exit(msgd::cli::main());
}

/// glibc raises its mmap threshold after the first large block is freed;
/// from then on the 19 MiB Argon2 buffers of password checks come from the
/// heap arenas and are never given back, so a server's memory grows with
/// its logins (measured: 6 GB after 400 logins). A fixed threshold keeps
/// large blocks in mmap, returned to the system when freed.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}
