//! Fuzzing of every parser, on stable Rust, as ordinary `cargo test` tests.
//!
//! Design: a small in-crate harness rather than cargo-fuzz (nightly only,
//! libFuzzer) or a new dependency (`arbitrary` would only turn random bytes
//! into values; the structure that matters here, IMAP commands or MIME
//! trees, still needs hand-written generators). `rand 0.8` is already a
//! dependency and gives a seeded, reproducible stream. Being a `#[cfg(test)]`
//! module, it costs default builds nothing. A target is three functions:
//!
//! - `check(&[u8])`: runs one input through the parser and panics if a
//!   property fails (no panic is the first property; most targets check a
//!   cheap second one: the same result whatever the input split, a round
//!   trip, or output bounded by k x input);
//! - `generate(&mut Rng)`: a structure-aware generator (commands, MIME
//!   trees, sequence sets, PROXY headers, TOML ...), because random bytes
//!   almost never get past a parser's first token;
//! - `deep()`: the hostile extremes, run once per test before any random
//!   case: 10,000-deep MIME nesting and 50,000-long References chains (see
//!   the switch below), 100,000 nested `NOT`/parentheses, 100,000 sequence
//!   ranges, 1 MB lines, literals claiming 2^63 bytes, PROXY v2 lengths at
//!   the limits, 100,000-deep TOML and environment values, truncated queue
//!   records.
//!
//! Streams reach the framers in reads of at most 16 KiB, as from a socket:
//! the framers drain line by line, so one multi-megabyte push would measure
//! a quadratic cost no connection can cause.
//!
//! Random cases are a mix of fresh generator output and mutations of the
//! target's corpus (`tests/fuzz-corpus/<target>/`) and of earlier cases:
//! bit flips, interesting bytes, dictionary tokens, deletions, repeats,
//! splices, truncation and huge numbers.
//!
//! Reproducibility: everything derives from one seed (`MSGD_FUZZ_SEED`,
//! default: a hash of the target name, so `cargo test` is deterministic).
//! `MSGD_FUZZ_ITERS` and `MSGD_FUZZ_SECS` run longer (`scripts/fuzz.sh`).
//! Every case runs on a thread with a 2 MiB stack, tokio's worker size, so
//! a recursion that would take down a server thread fails here too.
//!
//! Crash corpus: a failing input is written to
//! `tests/fuzz-corpus/<target>/crash-<hash>` and the panic names it and the
//! seed. Each target's test replays its whole corpus directory first, so a
//! committed crash file is a regression test forever. An input that aborts
//! the process (stack overflow) cannot be caught: the case being run is
//! always in `target/fuzz/<target>.current` for that.
//!
//! The first crashes found (issue 9): deep MIME nesting overflowed the
//! stack in FETCH ENVELOPE/BODYSTRUCTURE, huge References chains in THREAD,
//! and base-subject extraction was quadratic. Their deep cases (50,000
//! levels, 50,000-message chains, 400 KB subjects) run in every `cargo test`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng};

mod config;
mod imap;
mod mime;
mod pop3;
mod proxy;
mod queue;
mod smtp;
mod url;

/// Stack of the thread each target runs on (tokio's worker default).
const STACK: usize = 2 << 20;

/// Largest input a mutation may produce.
const MAX_INPUT: usize = 2 << 20;

pub(crate) type Rng = StdRng;

/// One fuzz target.
pub(crate) struct Target {
    /// Also the corpus folder name and the test name.
    pub name: &'static str,
    /// Runs one input; panics when a property fails.
    pub check: fn(&[u8]),
    /// A structure-aware input.
    pub generate: fn(&mut Rng) -> Vec<u8>,
    /// Hostile extremes, run once before the random cases.
    pub deep: fn() -> Vec<Vec<u8>>,
    /// Random cases in `cargo test` (kept small: debug build, busy cores).
    pub cases: u32,
    /// Tokens the mutator inserts.
    pub dict: &'static [&'static [u8]],
}

/// Every target, for the corpus check and the script's listing.
pub(crate) fn targets() -> Vec<&'static Target> {
    vec![
        &smtp::CODEC,
        &smtp::SESSION,
        &imap::FRAMER,
        &imap::MMP_FRAMER,
        &imap::STRESS_WIRE,
        &imap::COMMAND,
        &imap::SEQUENCE_SET,
        &imap::SEARCH,
        &imap::UTF7,
        &url::IMAP_URL,
        &pop3::POP3,
        &proxy::PROXY,
        &mime::MIME_SUMMARY,
        &mime::THREAD_SORT,
        &config::CONFIG,
        &queue::QUEUE_RECORD,
    ]
}

fn corpus_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-corpus")
        .join(name)
}

fn current_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/fuzz")
        .join(format!("{name}.current"))
}

/// The files of a target's corpus, sorted by name.
fn corpus(name: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir(name))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
        .into_iter()
        .filter(|p| p.is_file())
        .filter_map(|p| std::fs::read(&p).ok().map(|b| (p, b)))
        .collect()
}

/// FNV-1a: names crash files and derives per-input split points.
pub(crate) fn fnv(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Runs a target: its corpus, its deep cases, then random cases.
pub(crate) fn run(t: &'static Target) {
    let handle = std::thread::Builder::new()
        .name(format!("fuzz-{}", t.name))
        .stack_size(STACK)
        .spawn(move || run_on_this_thread(t))
        .expect("spawn fuzz thread");
    if let Err(e) = handle.join() {
        std::panic::resume_unwind(e);
    }
}

fn run_on_this_thread(t: &'static Target) {
    let seed = env_u64("MSGD_FUZZ_SEED").unwrap_or_else(|| fnv(t.name.as_bytes()));
    let cases = env_u64("MSGD_FUZZ_ITERS").unwrap_or(u64::from(t.cases));
    let deadline = env_u64("MSGD_FUZZ_SECS").map(|s| Instant::now() + Duration::from_secs(s));
    let verbose = std::env::var_os("MSGD_FUZZ_VERBOSE").is_some();
    let current = current_file(t.name);
    if let Some(dir) = current.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let started = Instant::now();

    let corpus = corpus(t.name);
    for (path, input) in &corpus {
        one(
            t,
            seed,
            &format!("corpus file {}", path.display()),
            input,
            &current,
        );
    }
    for (i, input) in (t.deep)().iter().enumerate() {
        let at = Instant::now();
        one(t, seed, &format!("deep case {i}"), input, &current);
        if verbose {
            eprintln!(
                "fuzz {}: deep case {i} ({} bytes) {:?}",
                t.name,
                input.len(),
                at.elapsed()
            );
        }
    }

    let mut rng = Rng::seed_from_u64(seed);
    // Earlier inputs, for mutation and splicing.
    let mut pool: Vec<Vec<u8>> = corpus.into_iter().map(|(_, b)| b).collect();
    let mut i: u64 = 0;
    loop {
        let out_of_time = deadline.is_some_and(|d| Instant::now() >= d);
        let out_of_cases = deadline.is_none() || env_u64("MSGD_FUZZ_ITERS").is_some();
        if out_of_time || (out_of_cases && i >= cases) {
            break;
        }
        let input = if pool.is_empty() || rng.gen_ratio(1, 3) {
            (t.generate)(&mut rng)
        } else {
            let mut base = pool[rng.gen_range(0..pool.len())].clone();
            mutate(&mut rng, &mut base, &pool, t.dict);
            base
        };
        one(t, seed, &format!("case {i}"), &input, &current);
        if input.len() <= 64 << 10 {
            if pool.len() < 256 {
                pool.push(input);
            } else {
                let k = rng.gen_range(0..pool.len());
                pool[k] = input;
            }
        }
        i += 1;
        if verbose && i.is_multiple_of(10_000) {
            eprintln!("fuzz {}: {i} cases, {:?}", t.name, started.elapsed());
        }
    }
    if verbose {
        eprintln!(
            "fuzz {}: seed {seed}, {i} random cases in {:?}",
            t.name,
            started.elapsed()
        );
    }
}

/// Runs one input; on a panic saves it to the corpus and fails loudly.
fn one(t: &Target, seed: u64, what: &str, input: &[u8], current: &Path) {
    // Kept until the next case: the input of a case that aborts.
    let _ = std::fs::write(current, input);
    let r = catch_unwind(AssertUnwindSafe(|| (t.check)(input)));
    if let Err(e) = r {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        let dir = corpus_dir(t.name);
        let path = if what.starts_with("corpus file") {
            what.trim_start_matches("corpus file ").to_string()
        } else {
            let _ = std::fs::create_dir_all(&dir);
            let p = dir.join(format!("crash-{:016x}", fnv(input)));
            let _ = std::fs::write(&p, input);
            p.display().to_string()
        };
        panic!(
            "fuzz target {}: {what} failed (seed {seed}): {msg}\n  input ({} bytes) saved as {path}\n  \
             replay: cargo test --lib fuzz::{} (the corpus is replayed first)",
            t.name,
            input.len(),
            t.name
        );
    }
}

/// Bytes that parsers treat specially.
const INTERESTING: &[u8] = b"\0\r\n \t.{}()[]\"\\*:,+-=<>@;&%$#0123456789\xff\x80";

/// Numbers at the edges of integer types.
const HUGE: &[&[u8]] = &[
    b"0",
    b"1",
    b"4294967295",
    b"4294967296",
    b"9223372036854775807",
    b"9223372036854775808",
    b"18446744073709551615",
    b"18446744073709551616",
    b"99999999999999999999999",
];

/// Applies 1 to 4 random mutations.
pub(crate) fn mutate(rng: &mut Rng, data: &mut Vec<u8>, pool: &[Vec<u8>], dict: &[&[u8]]) {
    for _ in 0..rng.gen_range(1..=4) {
        let len = data.len();
        let at = if len == 0 { 0 } else { rng.gen_range(0..=len) };
        match rng.gen_range(0..10) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                data[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.gen_range(0..len);
                data[i] = INTERESTING[rng.gen_range(0..INTERESTING.len())];
            }
            2 if !dict.is_empty() => {
                let tok = dict[rng.gen_range(0..dict.len())];
                data.splice(at..at, tok.iter().copied());
            }
            3 if len > 0 => {
                let end = (at + rng.gen_range(1..=16.min(len))).min(len);
                data.drain(at.min(end)..end);
            }
            4 if len > 0 => {
                // Repeat a slice many times (huge counts, deep nesting).
                let start = rng.gen_range(0..len);
                let end = (start + rng.gen_range(1..=32)).min(len);
                let piece = data[start..end].to_vec();
                let times = *[2usize, 10, 100, 1000, 10_000]
                    .get(rng.gen_range(0..5))
                    .unwrap_or(&2);
                let times = times.min(MAX_INPUT / piece.len().max(1) / 2);
                let rep: Vec<u8> = piece
                    .iter()
                    .copied()
                    .cycle()
                    .take(piece.len() * times)
                    .collect();
                data.splice(end..end, rep);
            }
            5 if !pool.is_empty() => {
                let other = &pool[rng.gen_range(0..pool.len())];
                if !other.is_empty() {
                    let s = rng.gen_range(0..other.len());
                    let e = rng.gen_range(s..=other.len());
                    let cut = rng.gen_range(0..=len);
                    data.truncate(cut);
                    data.extend_from_slice(&other[s..e]);
                }
            }
            6 if len > 0 => data.truncate(rng.gen_range(0..len)),
            7 => {
                let n = rng.gen_range(1..=8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                data.splice(at..at, bytes);
            }
            8 => {
                // Replace a run of digits (or insert) with an edge number.
                let huge = HUGE[rng.gen_range(0..HUGE.len())];
                let start = data
                    .iter()
                    .skip(at)
                    .position(u8::is_ascii_digit)
                    .map(|p| p + at);
                match start {
                    Some(s) => {
                        let e = data[s..]
                            .iter()
                            .position(|b| !b.is_ascii_digit())
                            .map_or(data.len(), |p| p + s);
                        data.splice(s..e, huge.iter().copied());
                    }
                    None => {
                        data.splice(at..at, huge.iter().copied());
                    }
                }
            }
            _ => {
                // Duplicate a line.
                if let Some(lf) = data.iter().skip(at).position(|&b| b == b'\n') {
                    let start = data[..at]
                        .iter()
                        .rposition(|&b| b == b'\n')
                        .map_or(0, |p| p + 1);
                    let line = data[start..=at + lf].to_vec();
                    data.splice(start..start, line);
                }
            }
        }
        if data.len() > MAX_INPUT {
            data.truncate(MAX_INPUT);
        }
    }
}

/// What a driver's socket reads deliver: each piece in reads of at most
/// 16 KiB (the framers drain line by line, so one huge push would measure
/// a cost no connection can cause).
pub(crate) fn reads<'a>(parts: &[&'a [u8]]) -> Vec<&'a [u8]> {
    parts
        .iter()
        .flat_map(|p| {
            let v: Vec<&[u8]> = if p.is_empty() {
                vec![*p]
            } else {
                p.chunks(16 << 10).collect()
            };
            v
        })
        .collect()
}

/// Cut points derived from the input itself, so a saved input replays the
/// same splits: a few random ones, sorted.
pub(crate) fn splits(input: &[u8]) -> Vec<usize> {
    if input.is_empty() {
        return Vec::new();
    }
    let mut rng = Rng::seed_from_u64(fnv(input));
    let n = rng.gen_range(1..=8.min(input.len()));
    let mut cuts: Vec<usize> = (0..n).map(|_| rng.gen_range(0..=input.len())).collect();
    cuts.sort_unstable();
    cuts
}

/// `input` cut at `cuts` (empty pieces included).
pub(crate) fn pieces<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for &c in cuts {
        out.push(&input[start..c]);
        start = c;
    }
    out.push(&input[start..]);
    out
}

/// Small generator helpers shared by the targets.
pub(crate) mod gen {
    use super::Rng;
    use rand::Rng as _;

    pub fn pick<T: Copy>(rng: &mut Rng, items: &[T]) -> T {
        items[rng.gen_range(0..items.len())]
    }

    /// A short atom-ish word, sometimes with odd bytes.
    pub fn word(rng: &mut Rng) -> String {
        const CH: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._";
        let n = rng.gen_range(1..=12);
        (0..n).map(|_| pick(rng, CH) as char).collect()
    }

    /// A number, sometimes at an integer edge.
    pub fn number(rng: &mut Rng) -> String {
        if rng.gen_ratio(1, 8) {
            String::from_utf8_lossy(pick(rng, super::HUGE)).into_owned()
        } else {
            rng.gen_range(0..2000u32).to_string()
        }
    }

    /// Random bytes, biased to printable text.
    pub fn bytes(rng: &mut Rng, max: usize) -> Vec<u8> {
        let n = rng.gen_range(0..=max);
        (0..n)
            .map(|_| {
                if rng.gen_ratio(7, 8) {
                    rng.gen_range(0x20..0x7f)
                } else {
                    rng.gen()
                }
            })
            .collect()
    }
}

#[test]
fn every_corpus_folder_names_a_target() {
    let names: Vec<&str> = targets().iter().map(|t| t.name).collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-corpus");
    for e in std::fs::read_dir(&root).expect("tests/fuzz-corpus exists") {
        let e = e.unwrap();
        if e.path().is_dir() {
            let n = e.file_name().to_string_lossy().into_owned();
            assert!(
                names.contains(&n.as_str()),
                "{n}: no fuzz target of that name"
            );
        }
    }
}

#[test]
fn mutations_are_reproducible_from_the_seed() {
    let run = || {
        let mut rng = Rng::seed_from_u64(7);
        let mut d = b"A1 FETCH 1:* (BODY[1.2])\r\n".to_vec();
        for _ in 0..50 {
            mutate(&mut rng, &mut d, &[b"x".to_vec()], &[b"{5}\r\n"]);
        }
        d
    };
    assert_eq!(run(), run());
}

/// One `#[test]` per target, named after it (`cargo test --lib fuzz::NAME`).
macro_rules! fuzz_tests {
    ($($name:ident => $target:path,)*) => {
        $(
            #[test]
            fn $name() {
                run(&$target);
            }
        )*
        #[test]
        fn every_target_has_a_test() {
            let tested = [$(stringify!($name)),*];
            for t in targets() {
                assert!(tested.contains(&t.name), "{}: no test", t.name);
            }
        }
    };
}

fuzz_tests! {
    smtp_codec => smtp::CODEC,
    smtp_session => smtp::SESSION,
    imap_framer => imap::FRAMER,
    mmp_framer => imap::MMP_FRAMER,
    stress_wire => imap::STRESS_WIRE,
    imap_command => imap::COMMAND,
    sequence_set => imap::SEQUENCE_SET,
    search_keys => imap::SEARCH,
    utf7 => imap::UTF7,
    imap_url => url::IMAP_URL,
    pop3 => pop3::POP3,
    proxy_protocol => proxy::PROXY,
    mime_summary => mime::MIME_SUMMARY,
    thread_sort => mime::THREAD_SORT,
    config => config::CONFIG,
    queue_record => queue::QUEUE_RECORD,
}
