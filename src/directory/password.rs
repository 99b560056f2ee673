//! Password hashes, and the pool that checks them.
//!
//! New hashes are Argon2id (PHC string `$argon2id$...`) with the
//! parameters of `[auth]` (`argon2_m_cost` KiB, `argon2_t_cost` passes,
//! `argon2_p_cost` lanes; defaults m=19456, t=2, p=1, the OWASP minimum).
//! A stored hash always verifies with the parameters written in it, so
//! changing them only affects hashes made afterwards.
//!
//! Accepted for migration from other servers' directories (Dovecot,
//! OpenLDAP), with or without the `{SCHEME}` prefix where the string says
//! what it is; scheme names are case-insensitive:
//! - `{ARGON2ID}` / `{ARGON2I}` / `{ARGON2}`: `$argon2id$` / `$argon2i$` PHC strings;
//! - `{BLF-CRYPT}`: bcrypt (`$2a$`, `$2b$`, `$2y$`);
//! - `{SHA512-CRYPT}` / `{SHA256-CRYPT}`: `$6$` / `$5$`;
//! - `{CRYPT}`: any of the crypt strings above (slapd's `{CRYPT}$6$...`);
//! - `{SSHA}`, `{SSHA256}`, `{SSHA512}`: base64 of digest(password ‖ salt) ‖ salt.
//!
//! Invariants:
//! - Unknown schemes and malformed strings never match.
//! - Every comparison of a computed digest with a stored one is
//!   constant-time (`subtle`; bcrypt and sha-crypt compare the same way).
//! - Passwords longer than [`MAX_PASSWORD_LEN`] bytes never match and
//!   are not hashed.
//! - Argon2 memory is bounded: a stored hash asking for more than
//!   [`MAX_ARGON2_M_COST`] KiB is refused, and the pool reuses one buffer
//!   per hashing thread instead of allocating per check.
//! - Verification runs only on the [`HashPool`]'s own `auth.hash_threads`
//!   threads, at a lower CPU priority (nice +10), so hashing never holds
//!   the reactor threads or the blocking pool that the store's I/O uses.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::PasswordHasher;
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::Engine;
use subtle::ConstantTimeEq;

use super::DirError;

/// The largest Argon2 memory a stored hash may ask for (1 GiB, in KiB):
/// a directory entry must not be able to make one check take the machine.
pub const MAX_ARGON2_M_COST: u32 = 1024 * 1024;

/// Longest password checked, in bytes. SHA-crypt's cost grows with the
/// password's length times its rounds: a client must not be able to buy
/// seconds of CPU with one long LOGIN literal. Longer ones never match.
pub const MAX_PASSWORD_LEN: usize = 4096;

/// Argon2id parameters for new hashes (`[auth]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Params {
    /// Memory in KiB.
    pub m_cost: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl Default for Argon2Params {
    fn default() -> Self {
        Argon2Params {
            m_cost: Params::DEFAULT_M_COST,
            t_cost: Params::DEFAULT_T_COST,
            p_cost: Params::DEFAULT_P_COST,
        }
    }
}

impl Argon2Params {
    fn params(&self) -> anyhow::Result<Params> {
        if self.m_cost > MAX_ARGON2_M_COST {
            anyhow::bail!("argon2 m_cost above {MAX_ARGON2_M_COST} KiB");
        }
        Params::new(self.m_cost, self.t_cost, self.p_cost, None)
            .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))
    }

    /// Why these parameters cannot hash, if they cannot (for check-config).
    pub fn check(&self) -> Result<(), String> {
        self.params().map(|_| ()).map_err(|e| e.to_string())
    }
}

/// Hashes a new password with Argon2id, the default parameters and a
/// random salt.
pub fn hash(password: &str) -> anyhow::Result<String> {
    hash_with(password, &Argon2Params::default())
}

/// Hashes a new password with Argon2id, `params` and a random salt.
pub fn hash_with(password: &str, params: &Argon2Params) -> anyhow::Result<String> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.params()?)
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing password: {e}"))
}

/// Memory kept between verifications on one hashing thread.
#[derive(Default)]
pub struct Scratch {
    /// Argon2 blocks, grown to the largest hash seen (see [`Scratch::trim`]).
    blocks: Vec<Block>,
}

impl Scratch {
    /// Drops the buffer if it grew beyond `keep_blocks` (a hash with more
    /// memory than the configured one), so a rare big hash does not keep
    /// its memory for ever.
    fn trim(&mut self, keep_blocks: usize) {
        if self.blocks.len() > keep_blocks {
            self.blocks = Vec::new();
        }
    }
}

/// Constant-time verification against any supported scheme, with a fresh
/// buffer. Unknown schemes never match.
pub fn verify(password: &str, stored: &str) -> bool {
    verify_with(password, stored, &mut Scratch::default())
}

/// The stored string without its `{SCHEME}` prefix, and the scheme
/// (uppercase; empty when there was none).
fn split_scheme(stored: &str) -> Option<(String, &str)> {
    let stored = stored.trim();
    match stored.strip_prefix('{') {
        None => Some((String::new(), stored)),
        Some(rest) => {
            let (scheme, value) = rest.split_once('}')?;
            Some((scheme.to_ascii_uppercase(), value))
        }
    }
}

/// The kinds of crypt string, by their `$id$`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Crypt {
    Argon2id,
    Argon2i,
    Bcrypt,
    Sha512,
    Sha256,
}

fn crypt_kind(s: &str) -> Option<Crypt> {
    if s.starts_with("$argon2id$") {
        Some(Crypt::Argon2id)
    } else if s.starts_with("$argon2i$") {
        Some(Crypt::Argon2i)
    } else if ["$2a$", "$2b$", "$2y$"].iter().any(|p| s.starts_with(p)) {
        Some(Crypt::Bcrypt)
    } else if s.starts_with("$6$") {
        Some(Crypt::Sha512)
    } else if s.starts_with("$5$") {
        Some(Crypt::Sha256)
    } else {
        None
    }
}

/// [`verify`] reusing `scratch`'s memory.
pub fn verify_with(password: &str, stored: &str, scratch: &mut Scratch) -> bool {
    if password.len() > MAX_PASSWORD_LEN {
        return false;
    }
    let Some((scheme, value)) = split_scheme(stored) else {
        return false;
    };
    let salted = |alg, digest_len| verify_salted(alg, digest_len, password, value);
    let kind = crypt_kind(value);
    // Which crypt strings each scheme name may carry.
    let allowed: &[Crypt] = match scheme.as_str() {
        "SSHA" => return salted(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, 20),
        "SSHA256" => return salted(&ring::digest::SHA256, 32),
        "SSHA512" => return salted(&ring::digest::SHA512, 64),
        "" | "CRYPT" => &[
            Crypt::Argon2id,
            Crypt::Argon2i,
            Crypt::Bcrypt,
            Crypt::Sha512,
            Crypt::Sha256,
        ],
        "ARGON2" => &[Crypt::Argon2id, Crypt::Argon2i],
        "ARGON2ID" => &[Crypt::Argon2id],
        "ARGON2I" => &[Crypt::Argon2i],
        "BLF-CRYPT" => &[Crypt::Bcrypt],
        "SHA512-CRYPT" => &[Crypt::Sha512],
        "SHA256-CRYPT" => &[Crypt::Sha256],
        _ => return false,
    };
    match kind {
        Some(k) if allowed.contains(&k) => match k {
            Crypt::Argon2id | Crypt::Argon2i => verify_argon2(password, value, scratch),
            Crypt::Bcrypt => bcrypt::verify(password, value).unwrap_or(false),
            Crypt::Sha512 | Crypt::Sha256 => {
                use argon2::password_hash::PasswordVerifier;
                sha_crypt::ShaCrypt::default()
                    .verify_password(password.as_bytes(), value)
                    .is_ok()
            }
        },
        _ => false,
    }
}

/// `{SSHA}`-style: base64(digest(password ‖ salt) ‖ salt), salt of any
/// non-zero length.
fn verify_salted(
    alg: &'static ring::digest::Algorithm,
    digest_len: usize,
    password: &str,
    value: &str,
) -> bool {
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(value.trim()) else {
        return false;
    };
    if raw.len() <= digest_len {
        return false;
    }
    let (want, salt) = raw.split_at(digest_len);
    let mut ctx = ring::digest::Context::new(alg);
    ctx.update(password.as_bytes());
    ctx.update(salt);
    let got = ctx.finish();
    got.as_ref().ct_eq(want).into()
}

/// Argon2 with the parameters of the PHC string, computed into the
/// reusable `scratch` blocks, compared in constant time.
fn verify_argon2(password: &str, value: &str, scratch: &mut Scratch) -> bool {
    let Ok(phc) = PasswordHash::new(value) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(phc.algorithm.as_str()) else {
        return false;
    };
    let version = match phc.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let Ok(params) = Params::try_from(&phc) else {
        return false;
    };
    let (Some(salt), Some(want)) = (&phc.salt, &phc.hash) else {
        return false;
    };
    if params.m_cost() > MAX_ARGON2_M_COST {
        tracing::warn!(
            m_cost = params.m_cost(),
            "stored Argon2 hash asks for more memory than msgd allows; refused"
        );
        return false;
    }
    let blocks = params.block_count();
    if scratch.blocks.len() < blocks {
        scratch.blocks.resize(blocks, Block::new());
    }
    let mut out = vec![0u8; want.len()];
    let ok = Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(
            password.as_bytes(),
            salt.as_ref(),
            &mut out,
            &mut scratch.blocks[..blocks],
        )
        .is_ok();
    ok && bool::from(out.as_slice().ct_eq(want.as_bytes()))
}

/// A hash of a random string, verified for unknown logins so that they
/// cost what a known one costs (one per pool, made on first use).
fn dummy_hash(params: &Argon2Params) -> String {
    hash_with(&generate(), params)
        .or_else(|_| hash(&generate()))
        .unwrap_or_default()
}

/// One verification waiting for a hashing thread.
struct Job {
    password: String,
    /// None: the pool's dummy hash (made on a hashing thread, once).
    stored: Option<Arc<str>>,
    reply: tokio::sync::oneshot::Sender<bool>,
}

/// The bounded pool that runs every password verification of the process
/// (`auth.hash_threads` threads, each with its own reusable Argon2
/// buffer). Threads start on first use and end when the pool is dropped.
/// Cheap to share (`Arc`); one per `Directory`, no process-wide static.
pub struct HashPool {
    threads: usize,
    params: Argon2Params,
    /// Sends jobs to the threads; set on first use.
    queue: OnceLock<tokio::sync::mpsc::Sender<Job>>,
    /// Verifications run since start (cache hits run none): a metric, and
    /// how tests see that a login skipped the hash.
    verifications: AtomicU64,
    /// A hash of a random string, for unknown logins.
    dummy: Arc<OnceLock<Arc<str>>>,
}

/// Jobs waiting beyond this many per thread make the caller wait to queue
/// (memory stays bounded whatever the login rate).
const QUEUE_PER_THREAD: usize = 64;

impl HashPool {
    /// `threads` 0: max(1, cores / 2).
    pub fn new(threads: usize, params: Argon2Params) -> HashPool {
        let threads = if threads == 0 {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            (cores / 2).max(1)
        } else {
            threads
        };
        HashPool {
            threads,
            params,
            queue: OnceLock::new(),
            verifications: AtomicU64::new(0),
            dummy: Arc::default(),
        }
    }

    /// How many verifications ran (each one a full hash).
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// The hashing threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    fn queue(&self) -> &tokio::sync::mpsc::Sender<Job> {
        self.queue.get_or_init(|| {
            let (tx, rx) = tokio::sync::mpsc::channel::<Job>(self.threads * QUEUE_PER_THREAD);
            let rx = Arc::new(Mutex::new(rx));
            // Keep the configured size between checks; anything larger
            // is released after use.
            let keep = self.params.params().map_or(0, |p| p.block_count());
            for i in 0..self.threads {
                let rx = rx.clone();
                let (dummy, params) = (self.dummy.clone(), self.params);
                let spawned = std::thread::Builder::new()
                    .name(format!("msgd-hash-{i}"))
                    .spawn(move || worker(rx, keep, dummy, params));
                if let Err(e) = spawned {
                    tracing::error!(error = %e, "cannot start a password hashing thread");
                }
            }
            tx
        })
    }

    /// Checks `password` against `stored` on a hashing thread.
    pub async fn verify(&self, password: &str, stored: Arc<str>) -> Result<bool, DirError> {
        self.run(password, Some(stored)).await
    }

    async fn run(&self, password: &str, stored: Option<Arc<str>>) -> Result<bool, DirError> {
        self.verifications.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job {
            password: password.to_string(),
            stored,
            reply,
        };
        self.queue()
            .send(job)
            .await
            .map_err(|_| DirError::Temporary("password hashing threads stopped".into()))?;
        answer
            .await
            .map_err(|_| DirError::Temporary("password hashing thread failed".into()))
    }

    /// Spends one verification on a hash nobody knows the password of
    /// (an unknown login costs what a known one does).
    pub async fn verify_dummy(&self, password: &str) -> Result<bool, DirError> {
        self.run(password, None).await.map(|_| false)
    }
}

/// A hashing thread: lower priority than protocol work, one buffer reused.
fn worker(
    rx: Arc<Mutex<tokio::sync::mpsc::Receiver<Job>>>,
    keep_blocks: usize,
    dummy: Arc<OnceLock<Arc<str>>>,
    params: Argon2Params,
) {
    lower_priority();
    let mut scratch = Scratch::default();
    loop {
        let job = {
            let mut rx = rx.lock().unwrap_or_else(|e| e.into_inner());
            rx.blocking_recv()
        };
        let Some(job) = job else { return };
        let stored = match job.stored {
            Some(s) => s,
            None => dummy.get_or_init(|| dummy_hash(&params).into()).clone(),
        };
        let ok = verify_with(&job.password, &stored, &mut scratch);
        scratch.trim(keep_blocks);
        let _ = job.reply.send(ok);
    }
}

/// nice +10 for the calling thread (Linux schedules threads separately;
/// elsewhere this is a no-op), so sessions' commands run first.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority on the calling thread's own id has no memory
    // effects; a failure only leaves the priority as it was.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let _ = libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}

/// A password that nobody can guess, for generated accounts.
pub fn generate() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::thread_rng();
    (0..20)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every vector below is for this password.
    const PW: &str = "correct horse";

    #[test]
    fn argon2_round_trip() {
        let h = hash("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify("s3cret", &h));
        assert!(!verify("s3creT", &h));
    }

    #[test]
    fn argon2_parameters_for_new_hashes_are_configurable_and_old_hashes_keep_theirs() {
        let small = Argon2Params {
            m_cost: 64,
            t_cost: 1,
            p_cost: 1,
        };
        let h = hash_with("s3cret", &small).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{h}");
        let old = hash("s3cret").unwrap();
        // One scratch buffer verifies both sizes, in either order.
        let mut scratch = Scratch::default();
        for stored in [&h, &old, &h] {
            assert!(verify_with("s3cret", stored, &mut scratch));
            assert!(!verify_with("s3creT", stored, &mut scratch));
        }
        assert!(Argon2Params { m_cost: 1, ..small }.check().is_err());
        assert!(Argon2Params {
            m_cost: MAX_ARGON2_M_COST + 1,
            ..small
        }
        .check()
        .is_err());
    }

    #[test]
    fn scratch_buffer_is_released_after_an_oversized_hash() {
        let mut s = Scratch::default();
        let h = hash_with(
            "pw",
            &Argon2Params {
                m_cost: 256,
                t_cost: 1,
                p_cost: 1,
            },
        )
        .unwrap();
        assert!(verify_with("pw", &h, &mut s));
        assert_eq!(s.blocks.len(), 256);
        s.trim(256);
        assert_eq!(s.blocks.len(), 256);
        s.trim(64);
        assert!(s.blocks.is_empty());
    }

    #[test]
    fn argon2_hash_asking_for_too_much_memory_is_refused_unhashed() {
        // m above the cap: refused before any memory is taken.
        let h = "$argon2id$v=19$m=4194304,t=1,p=1$c2FsdHNhbHQ$YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY";
        let mut s = Scratch::default();
        assert!(!verify_with("pw", h, &mut s));
        assert!(s.blocks.is_empty());
    }

    #[test]
    fn sha512_crypt_from_an_existing_directory_verifies() {
        // `mkpasswd -m sha-512 -S saltsalt password`
        let h = "$6$saltsalt$qFmFH.bQmmtXzyBY0s9v7Oicd2z4XSIecDzlB5KiA2/jctKu9YterLp8wwnSq.qc.eoxqOmSuNp2xS0ktL3nh/";
        assert!(verify("password", h));
        assert!(verify("password", &format!("{{CRYPT}}{h}")));
        assert!(!verify("passwore", h));
    }

    /// (stored, scheme) pairs made by other servers' tools for [`PW`].
    const VECTORS: &[&str] = &[
        // `doveadm pw -s SSHA -p 'correct horse'` (Dovecot 2.3)
        "{SSHA}lgyI4CSMUwYdbHZvgcryilRYQBeAPeeY",
        // `slappasswd -h '{SSHA}' -s 'correct horse'` (OpenLDAP 2.5)
        "{SSHA}qh/NrAc+/7o/Jyvqban6etTIwVlka1x5",
        // `doveadm pw -s SSHA256 -p 'correct horse'`
        "{SSHA256}YcrgLutShfTiU82LEYvpPFDr/b7Ehjq/tQqyYWuPQ5qoOYHQ",
        // `doveadm pw -s SSHA512 -p 'correct horse'`
        "{SSHA512}tMNORKkZn0WvZJjsqO5cMxFz7JMmNKT1gVqp4yqgBwsLDloOuzp23df5TCOOMMN6LYnT6drOJnBhtLkKhedijImMo7c=",
        // `doveadm pw -s BLF-CRYPT -p 'correct horse'`
        "{BLF-CRYPT}$2y$05$EDyf.WrqUqLoN3Fg7FLPYe76MlMQPdlcutAnfEklEngSCZ2U3c0Ri",
        // `doveadm pw -s CRYPT -p 'correct horse'` (bcrypt under {CRYPT})
        "{CRYPT}$2y$05$XUxegLfRIOwHSoRYTGuXtuHcI7pRJC64DWiGBB9Rnxq8yS9PYRBhS",
        // `doveadm pw -s SHA512-CRYPT -p 'correct horse'`
        "{SHA512-CRYPT}$6$UNlgKY2FCUvKj01l$g2S9QkLMkaOGnDIX4kgnEEDjFCj5pJLbgLgDcMuyj5RaAleJByzCCT1q5yAYs2CSKx8HWJa651ViF1//aoSvA/",
        // `doveadm pw -s SHA256-CRYPT -p 'correct horse'`
        "{SHA256-CRYPT}$5$TDz7.HQmfJVZojs6$hZPXrC9HVSaqW.6OrK81mMbBdSNSSQU5z4Wprpu1mC0",
        // `slappasswd -h '{CRYPT}' -c '$6$%.16s' -s 'correct horse'`
        "{CRYPT}$6$zObdlvwgV5weJhir$6VvsTB8ZMdryDt4UpZYC6uMLBcb/QQwZvq0NTBvmt/8z8P7eHbssoHzO7oaCBI39DqHT.G0KWD1swhQK6/GWi1",
        // `doveadm pw -s ARGON2ID -p 'correct horse'` (its own m=64 MiB, t=3)
        "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$BiLlxXa14Vw4JahltRITHA$9Bh9FyBDrCpmoJrTTyg0OhV7GuVsszjUB2YIIudG5Zg",
        // `doveadm pw -s ARGON2I -p 'correct horse'`
        "{ARGON2I}$argon2i$v=19$m=32768,t=4,p=1$aRGKM3Nm/rrUs/9IDa0Wmw$9/96EmI6i8OJ7dr16pYVJG/ojUWG8ZWnHLGynjL3Jr4",
    ];

    #[test]
    fn migration_schemes_verify_with_vectors_from_dovecot_and_slapd() {
        let mut scratch = Scratch::default();
        for v in VECTORS {
            assert!(verify_with(PW, v, &mut scratch), "{v}");
            assert!(!verify_with("correct horsE", v, &mut scratch), "{v}");
            assert!(!verify_with("", v, &mut scratch), "{v}");
            // Scheme names are case-insensitive, as in Dovecot.
            let lower = match v.split_once('}') {
                Some((s, rest)) => format!("{}}}{rest}", s.to_ascii_lowercase()),
                None => v.to_string(),
            };
            assert!(verify_with(PW, &lower, &mut scratch), "{lower}");
        }
    }

    #[test]
    fn scheme_name_must_match_the_crypt_string() {
        let bcrypt = "$2y$05$EDyf.WrqUqLoN3Fg7FLPYe76MlMQPdlcutAnfEklEngSCZ2U3c0Ri";
        assert!(verify(PW, bcrypt));
        assert!(!verify(PW, &format!("{{SHA512-CRYPT}}{bcrypt}")));
        assert!(!verify(PW, &format!("{{ARGON2ID}}{bcrypt}")));
        let argon2i = VECTORS[10].trim_start_matches("{ARGON2I}");
        assert!(!verify(PW, &format!("{{ARGON2ID}}{argon2i}")));
        assert!(verify(PW, &format!("{{ARGON2}}{argon2i}")));
    }

    #[test]
    fn malformed_salted_digests_never_match() {
        // Digest only, no salt; not base64; empty.
        let sha1_only = base64::engine::general_purpose::STANDARD.encode([0u8; 20]);
        for v in [
            format!("{{SSHA}}{sha1_only}"),
            "{SSHA}***".into(),
            "{SSHA}".into(),
            "{SSHA512}AAAA".into(),
            "{SSHA".into(),
        ] {
            assert!(!verify("", &v), "{v}");
            assert!(!verify(PW, &v), "{v}");
        }
    }

    #[test]
    fn overlong_password_is_refused_unhashed() {
        let long = "x".repeat(MAX_PASSWORD_LEN + 1);
        let fits = "x".repeat(MAX_PASSWORD_LEN);
        let h = sha_crypt_of(&fits);
        assert!(verify(&fits, &h));
        assert!(!verify(&long, &sha_crypt_of(&long)));
    }

    fn sha_crypt_of(pw: &str) -> String {
        use argon2::password_hash::PasswordHasher;
        sha_crypt::ShaCrypt::default()
            .hash_password(pw.as_bytes())
            .unwrap()
            .to_string()
    }

    #[test]
    fn unknown_scheme_never_matches() {
        assert!(!verify("x", "x"));
        assert!(!verify("", ""));
        assert!(!verify("x", "{PLAIN}x"));
        assert!(!verify("x", "{MD5}x"));
        assert!(!verify("x", "$1$salt$x"));
    }

    #[tokio::test]
    async fn pool_verifies_and_counts_each_check() {
        let pool = HashPool::new(1, Argon2Params::default());
        assert_eq!(pool.threads(), 1);
        let stored: Arc<str> = VECTORS[0].into();
        assert!(pool.verify(PW, stored.clone()).await.unwrap());
        assert!(!pool.verify("nope", stored).await.unwrap());
        assert!(!pool.verify_dummy(PW).await.unwrap());
        assert_eq!(pool.verifications(), 3);
        assert!(HashPool::new(0, Argon2Params::default()).threads() >= 1);
    }

    #[tokio::test]
    async fn pool_answers_each_caller_of_a_burst() {
        let pool = Arc::new(HashPool::new(2, Argon2Params::default()));
        let stored: Arc<str> = VECTORS[4].into();
        let mut tasks = Vec::new();
        for i in 0..20 {
            let (pool, stored) = (pool.clone(), stored.clone());
            let pw = if i % 2 == 0 { PW } else { "wrong" };
            tasks.push(tokio::spawn(async move {
                (i, pool.verify(pw, stored).await.unwrap())
            }));
        }
        for t in tasks {
            let (i, ok) = t.await.unwrap();
            assert_eq!(ok, i % 2 == 0);
        }
        assert_eq!(pool.verifications(), 20);
    }
}
