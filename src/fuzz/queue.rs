//! The queue record reader (`queue::record::load`): a queue file is read
//! back after a crash, so torn, truncated or corrupted files must be
//! refused or trimmed, never panic or allocate what a length field claims.
//!
//! The input is used twice: as the file itself, and re-framed (split at
//! NUL bytes into records with valid lengths and checksums) so mutations
//! also reach the JSON inside the records.

use std::cell::RefCell;
use std::path::PathBuf;

use rand::Rng as _;

use super::gen::{number, pick, word};
use super::{Rng, Target};
use crate::queue::record::{self, MAGIC};

pub(crate) static QUEUE_RECORD: Target = Target {
    name: "queue_record",
    check: check_queue,
    generate: gen_queue,
    deep: deep_queue,
    cases: 300,
    dict: &[
        b"\0",
        b"\xff\xff\xff\xff",
        b"\x00\x00\x00\x40",
        b"{\"rcpt\":18446744073709551615,\"status\":\"Delivered\",\"attempts\":1,\"next_attempt\":0}",
        b"[[[[[[[[",
        b"\"\\ud800\"",
        b"MSGDQ1\n",
    ],
};

thread_local! {
    static DIR: RefCell<Option<tempfile::TempDir>> = const { RefCell::new(None) };
}

fn scratch() -> PathBuf {
    DIR.with(|d| {
        let mut d = d.borrow_mut();
        let dir = d.get_or_insert_with(|| tempfile::tempdir().expect("tempdir"));
        dir.path().join("q")
    })
}

fn framed(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn load_bytes(bytes: &[u8]) {
    let path = scratch();
    std::fs::write(&path, bytes).expect("write scratch file");
    if let Ok(Some(l)) = record::load(&path) {
        assert!(l.data.len() <= bytes.len());
        for c in &l.changes {
            assert!(
                c.rcpt < l.envelope.recipients.len(),
                "state change for a missing recipient"
            );
        }
    }
}

fn check_queue(input: &[u8]) {
    load_bytes(input);
    let mut file = MAGIC.to_vec();
    for payload in input.split(|&b| b == 0) {
        file.extend(framed(payload));
    }
    load_bytes(&file);
    // Any truncation of the re-framed file loads or is refused.
    let h = super::fnv(input);
    load_bytes(&file[..(h as usize) % (file.len() + 1)]);
}

fn envelope_json(rng: &mut Rng) -> String {
    let n = rng.gen_range(0..4);
    let rcpts: Vec<String> = (0..n)
        .map(|_| {
            format!(
                "{{\"address\":\"{}@x\",\"orcpt\":{},\"notify\":{{\"success\":true,\"failure\":false,\"delay\":true}},\"route\":\"{}\"}}",
                word(rng),
                pick(rng, &["null", "\"rfc822;a@b\"", "1"]),
                word(rng)
            )
        })
        .collect();
    format!(
        "{{\"sender\":\"{}\",\"recipients\":[{}],\"received\":{},\"envid\":{},\"ret_full\":{}}}",
        pick(rng, &["", "a@b", "\\u0000"]),
        rcpts.join(","),
        number(rng),
        pick(rng, &["null", "\"e\""]),
        pick(rng, &["true", "false", "0"])
    )
}

fn change_json(rng: &mut Rng) -> String {
    format!(
        "{{\"rcpt\":{},\"status\":\"{}\",\"attempts\":{},\"next_attempt\":{},\"last_error\":{},\"warned\":{}}}",
        pick(rng, &["0", "1", "2", "18446744073709551615", "-1"]),
        pick(rng, &["Pending", "Delivered", "Failed", "Other"]),
        number(rng),
        number(rng),
        pick(rng, &["null", "\"550 x\""]),
        pick(rng, &["true", "false"])
    )
}

/// Payloads separated by NUL (re-framed by the check), sometimes a whole
/// file with real framing.
fn gen_queue(rng: &mut Rng) -> Vec<u8> {
    let mut payloads = vec![envelope_json(rng).into_bytes(), super::gen::bytes(rng, 200)];
    for _ in 0..rng.gen_range(0..5) {
        payloads.push(change_json(rng).into_bytes());
    }
    if rng.gen() {
        payloads.join(&0u8)
    } else {
        let mut file = MAGIC.to_vec();
        for p in &payloads {
            file.extend(framed(p));
        }
        let cut = rng.gen_range(0..=file.len());
        if rng.gen_ratio(1, 3) {
            file.truncate(cut);
        }
        file
    }
}

fn deep_queue() -> Vec<Vec<u8>> {
    let env =
        b"{\"sender\":\"a@b\",\"recipients\":[{\"address\":\"c@d\"}],\"received\":1}".to_vec();
    let mut v = Vec::new();
    // Lengths claiming up to 4 GiB with no bytes behind them.
    for len in [u32::MAX, 1 << 30, (1 << 30) + 1, 0] {
        let mut f = MAGIC.to_vec();
        f.extend(framed(&env));
        f.extend_from_slice(&len.to_le_bytes());
        f.extend_from_slice(&[0; 4]);
        v.push(f);
    }
    // Every truncation of a good file (as one input each would be slow:
    // the longest, which the check truncates again).
    let mut good = MAGIC.to_vec();
    good.extend(framed(&env));
    good.extend(framed(b"message\r\n"));
    for _ in 0..1000 {
        good.extend(framed(
            b"{\"rcpt\":0,\"status\":\"Pending\",\"attempts\":1,\"next_attempt\":5}",
        ));
    }
    v.push(good);
    // Deep JSON inside valid frames.
    let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes();
    v.push([env.clone(), b"m".to_vec(), deep.clone()].join(&0u8));
    v.push([deep.clone(), b"m".to_vec()].join(&0u8));
    let deep_obj = "{\"a\":".repeat(100_000).into_bytes();
    v.push([env.clone(), b"m".to_vec(), deep_obj].join(&0u8));
    // 100,000 state changes.
    let mut many = vec![env, b"m".to_vec()];
    for _ in 0..100_000 {
        many.push(
            b"{\"rcpt\":0,\"status\":\"Delivered\",\"attempts\":1,\"next_attempt\":0}".to_vec(),
        );
    }
    v.push(many.join(&0u8));
    v
}
