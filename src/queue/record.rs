//! The on-disk form of one queued message: an append-only file.
//!
//! ```text
//! "MSGDQ1\n"
//! record*   where record = u32 LE length | u32 LE crc32(payload) | payload
//! ```
//! Record 0 is the envelope (JSON), record 1 the message bytes, every later
//! record a recipient state change (JSON). A record whose length runs past
//! the end of the file or whose checksum does not match is a torn write: a
//! file torn inside records 0-1 was never acknowledged and is discarded; a
//! torn state record is ignored (the state before it stands, so a recipient
//! is at worst tried again, never skipped).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

pub const MAGIC: &[u8] = b"MSGDQ1\n";

/// Largest record accepted when reading (a corrupt length must not make us
/// allocate gigabytes).
const MAX_RECORD: u32 = 1 << 30;

// The envelope is delivery's own type (one for the SMTP server, the
// queue and the clients); its JSON form is record 0.
pub use crate::deliver::{Envelope, Notify, Recipient};

/// The outcome recorded for one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    Pending,
    Delivered,
    /// Permanently failed (bounced, or expired).
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChange {
    /// Index into `Envelope::recipients`.
    pub rcpt: usize,
    pub status: Status,
    pub attempts: u32,
    /// Unix seconds of the next attempt (Pending only).
    pub next_attempt: i64,
    /// The last reply or error, as the remote side said it.
    #[serde(default)]
    pub last_error: Option<String>,
    /// A delay warning was sent.
    #[serde(default)]
    pub warned: bool,
    /// The DSN this final status owes the sender (`delivered`, `relayed`,
    /// `failed`); None: none (not asked for, or a null sender).
    #[serde(default)]
    pub dsn: Option<String>,
    /// That DSN is in the queue: it is never sent twice, and a restart
    /// sends it if this is still false.
    #[serde(default)]
    pub notified: bool,
}

fn frame(payload: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&record_head(payload)?);
    out.extend_from_slice(payload);
    Ok(out)
}

/// The 8-byte head of a record: length and checksum.
fn record_head(payload: &[u8]) -> io::Result<[u8; 8]> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|l| *l <= MAX_RECORD)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "record too large"))?;
    let mut head = [0u8; 8];
    head[..4].copy_from_slice(&len.to_le_bytes());
    head[4..].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    Ok(head)
}

/// Writes a new queue file (envelope + message) and fsyncs it. The caller
/// fsyncs the folder.
pub fn create(path: &Path, env: &Envelope, data: &[u8]) -> io::Result<()> {
    create_unsynced(path, env, data)?.sync_data()
}

/// Writes a new queue file (envelope + message) without fsync and returns
/// it open, for the group commit (`commit.rs`) to make durable. The
/// message goes to the kernel as it is (no framed copy of it).
pub fn create_unsynced(path: &Path, env: &Envelope, data: &[u8]) -> io::Result<File> {
    let mut f = crate::fsutil::private_file()
        .write(true)
        .create_new(true)
        .open(path)?;
    write_content(&mut f, env, data)?;
    Ok(f)
}

/// Writes magic, envelope record and message record from the file's
/// current offset; returns the bytes written.
fn write_content(f: &mut File, env: &Envelope, data: &[u8]) -> io::Result<u64> {
    let mut buf = MAGIC.to_vec();
    buf.extend(frame(&serde_json::to_vec(env).map_err(io::Error::other)?)?);
    buf.extend_from_slice(&record_head(data)?);
    f.write_all(&buf)?;
    f.write_all(data)?;
    Ok((buf.len() + data.len()) as u64)
}

/// Writes a new queue file's content over a spare file (a finished
/// entry's inode, `Queue::recycle`) without fsync and returns it open:
/// the content starts at offset 0 and the file is cut to its length. The
/// caller makes it durable under the spare's name and only then renames
/// it into the queue (`commit::GroupSync::durable_renamed`), so a spare
/// half overwritten is never found under a queue name.
pub fn overwrite_unsynced(spare: &Path, env: &Envelope, data: &[u8]) -> io::Result<File> {
    let mut f = OpenOptions::new().write(true).open(spare)?;
    let len = write_content(&mut f, env, data)?;
    f.set_len(len)?;
    Ok(f)
}

/// Appends a state change and fsyncs it.
pub fn append_state(path: &Path, change: &StateChange) -> io::Result<()> {
    append_states_unsynced(path, std::slice::from_ref(change))?.sync_data()
}

/// Appends state changes in one write, without fsync; returns the file
/// for the group commit.
pub fn append_states_unsynced(path: &Path, changes: &[StateChange]) -> io::Result<File> {
    let mut f = OpenOptions::new().append(true).open(path)?;
    let mut buf = Vec::new();
    for c in changes {
        buf.extend(frame(&serde_json::to_vec(c).map_err(io::Error::other)?)?);
    }
    f.write_all(&buf)?;
    Ok(f)
}

/// A queue file as read back.
pub struct Loaded {
    pub envelope: Envelope,
    pub data: Vec<u8>,
    pub changes: Vec<StateChange>,
    /// A torn or corrupt state record was found (and ignored).
    pub torn_tail: bool,
}

/// Reads a queue file. `Ok(None)`: the file is torn in its envelope or
/// message (never acknowledged): the caller discards it.
pub fn load(path: &Path) -> io::Result<Option<Loaded>> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let Some(mut rest) = bytes.strip_prefix(MAGIC) else {
        return Ok(None);
    };
    let mut records = Vec::new();
    let mut torn = false;
    while !rest.is_empty() {
        if rest.len() < 8 {
            torn = true;
            break;
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len > MAX_RECORD || rest.len() - 8 < len as usize {
            torn = true;
            break;
        }
        let payload = &rest[8..8 + len as usize];
        if crc32fast::hash(payload) != crc {
            torn = true;
            break;
        }
        records.push(payload);
        rest = &rest[8 + len as usize..];
    }
    if records.len() < 2 {
        return Ok(None);
    }
    let Ok(envelope) = serde_json::from_slice::<Envelope>(records[0]) else {
        return Ok(None);
    };
    let data = records[1].to_vec();
    let mut changes = Vec::new();
    for r in &records[2..] {
        match serde_json::from_slice::<StateChange>(r) {
            Ok(c) if c.rcpt < envelope.recipients.len() => changes.push(c),
            _ => torn = true,
        }
    }
    Ok(Some(Loaded {
        envelope,
        data,
        changes,
        torn_tail: torn,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Envelope {
        Envelope {
            sender: "a@x".into(),
            recipients: vec![
                Recipient {
                    address: "b@y".into(),
                    orcpt: None,
                    notify: Notify::default(),
                    route: String::new(),
                },
                Recipient {
                    address: "c@y".into(),
                    orcpt: None,
                    notify: Notify::default(),
                    route: String::new(),
                },
            ],
            received: 1,
            envid: None,
            ret_full: false,
            junk: false,
        }
    }

    #[test]
    fn record_round_trip_with_state_changes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("q");
        create(&p, &env(), b"data\r\n").unwrap();
        let ch = StateChange {
            rcpt: 1,
            status: Status::Delivered,
            attempts: 1,
            next_attempt: 0,
            last_error: None,
            warned: false,
            dsn: None,
            notified: false,
        };
        append_state(&p, &ch).unwrap();
        let l = load(&p).unwrap().unwrap();
        assert_eq!(l.envelope, env());
        assert_eq!(l.data, b"data\r\n");
        assert_eq!(l.changes, vec![ch]);
        assert!(!l.torn_tail);
    }

    #[test]
    fn torn_writes_are_detected_at_every_length() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("q");
        create(&p, &env(), b"data\r\n").unwrap();
        let full_msg = std::fs::read(&p).unwrap();
        append_state(
            &p,
            &StateChange {
                rcpt: 0,
                status: Status::Delivered,
                attempts: 1,
                next_attempt: 0,
                last_error: None,
                warned: false,
                dsn: None,
                notified: false,
            },
        )
        .unwrap();
        let full = std::fs::read(&p).unwrap();
        for cut in 0..full.len() {
            std::fs::write(&p, &full[..cut]).unwrap();
            let l = load(&p).unwrap();
            if cut < full_msg.len() {
                assert!(l.is_none(), "cut at {cut} must discard the message");
            } else {
                let l = l.unwrap();
                assert!(l.changes.is_empty());
                assert_eq!(l.torn_tail, cut > full_msg.len());
            }
        }
        // A flipped bit in the message is a corrupt record, never delivered.
        let mut bad = full_msg.clone();
        let n = bad.len() - 3;
        bad[n] ^= 1;
        std::fs::write(&p, &bad).unwrap();
        assert!(load(&p).unwrap().is_none());
    }
}
