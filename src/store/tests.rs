use super::*;
use crate::config::{Config, PartitionConfig};

pub fn test_config(dir: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.server.data_dir = dir.to_path_buf();
    c.store.min_free_disk = 0;
    c.store.partition.insert(
        "primary".into(),
        PartitionConfig {
            path: "partition/primary".into(),
        },
    );
    c
}

fn msg(body: &str) -> NewMessage {
    NewMessage {
        data: Arc::new(format!("Subject: t\r\n\r\n{body}\r\n").into_bytes()),
        flags: Flags::default(),
        internal_date: None,
    }
}

#[tokio::test]
async fn new_user_gets_inbox_and_special_use_mailboxes() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(&test_config(d.path())).unwrap();
    s.ensure_user("a@x", None).await.unwrap();
    let l = s.list("a@x").await.unwrap();
    let names: Vec<_> = l.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, vec!["Drafts", "INBOX", "Junk", "Sent", "Trash"]);
    assert_eq!(
        l.iter().find(|m| m.name == "Sent").unwrap().special_use,
        Some(SpecialUse::Sent)
    );
    assert_eq!(s.subscriptions("a@x").await.unwrap().len(), 5);
}

#[tokio::test]
async fn append_is_readable_byte_identical_and_survives_reopen() {
    let d = tempfile::tempdir().unwrap();
    let cfg = test_config(d.path());
    let placed;
    let bytes = b"From: a\r\n\r\n\xff\xfe 8bit\r\n".to_vec();
    {
        let s = Store::open(&cfg).unwrap();
        placed = s
            .append(
                "a@x",
                "inbox",
                NewMessage {
                    data: Arc::new(bytes.clone()),
                    flags: Flags::from_names(&["\\Seen", "$Label"]),
                    internal_date: Some((1_700_000_000, 60)),
                },
                Quota::default(),
            )
            .await
            .unwrap();
        assert_eq!(placed.uid, 1);
    }
    // Reopen once the writer thread of the first store has exited (it
    // holds the database until its job channel closes).
    let mut tries = 0;
    let s = loop {
        match Store::open(&cfg) {
            Ok(s) => break s,
            Err(e) if tries < 100 => {
                tries += 1;
                let _ = e;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("{e}"),
        }
    };
    let snap = s.snapshot("a@x", "INBOX").await.unwrap();
    assert_eq!(snap.info.uidvalidity, placed.uidvalidity);
    assert_eq!(snap.info.exists, 1);
    assert_eq!(snap.info.unseen, 0);
    let m = &snap.messages[0];
    assert_eq!(m.internal_date, 1_700_000_000);
    assert_eq!(m.tz_offset_min, 60);
    assert_eq!(m.flags.names(), vec!["\\Seen", "$Label"]);
    assert_eq!(s.read(snap.info.id, m).await.unwrap(), bytes);
}

#[tokio::test]
async fn concurrent_appends_get_distinct_ascending_uids() {
    // In both `store.sync` modes: batches of several files each, every
    // file in place with its bytes once the append has answered.
    for mode in [
        crate::config::SyncMode::Files,
        crate::config::SyncMode::Filesystem,
    ] {
        let d = tempfile::tempdir().unwrap();
        let mut cfg = test_config(d.path());
        cfg.store.sync = mode;
        let s = Store::open(&cfg).unwrap();
        s.ensure_user("a@x", None).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..50 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let uid = s
                    .append("a@x", "INBOX", msg(&format!("m{i}")), Quota::default())
                    .await
                    .unwrap()
                    .uid;
                (uid, i)
            }));
        }
        let mut placed = Vec::new();
        for t in tasks {
            placed.push(t.await.unwrap());
        }
        placed.sort();
        let uids: Vec<Uid> = placed.iter().map(|p| p.0).collect();
        assert_eq!(uids, (1..=50).collect::<Vec<_>>(), "{mode:?}");
        let snap = s.snapshot("a@x", "INBOX").await.unwrap();
        assert_eq!(snap.messages.len(), 50);
        assert_eq!(snap.info.uidnext, 51);
        for (m, (_, i)) in snap.messages.iter().zip(&placed) {
            let want = format!("Subject: t\r\n\r\nm{i}\r\n").into_bytes();
            assert_eq!(s.read(snap.info.id, m).await.unwrap(), want, "{mode:?}");
        }
        // Nothing is left in the staging folder.
        let tmp = d.path().join("partition/primary/tmp");
        assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0, "{mode:?}");
    }
}

#[tokio::test]
async fn flags_expunge_and_changes_since_modseq() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(&test_config(d.path())).unwrap();
    for i in 0..3 {
        s.append("a@x", "INBOX", msg(&i.to_string()), Quota::default())
            .await
            .unwrap();
    }
    let snap = s.snapshot("a@x", "INBOX").await.unwrap();
    let id = snap.info.id;
    let base = snap.info.highestmodseq;
    let mut w = s.watch(id);
    let (metas, failed) = s
        .store_flags(
            id,
            vec![1, 2],
            FlagOp::Add,
            Flags::from_names(&["\\Deleted"]),
            None,
        )
        .await
        .unwrap();
    assert!(failed.is_empty());
    assert_eq!(metas.len(), 2);
    assert!(w.has_changed().unwrap());
    w.borrow_and_update();
    // CONDSTORE: message 1 changed after `base`, so UNCHANGEDSINCE base fails.
    let (_, failed) = s
        .store_flags(
            id,
            vec![1, 3],
            FlagOp::Add,
            Flags::from_names(&["\\Seen"]),
            Some(base),
        )
        .await
        .unwrap();
    assert_eq!(failed, vec![1]);
    let gone = s.expunge(id, Some(vec![2, 3])).await.unwrap();
    assert_eq!(gone, vec![2]);
    let ch = s.changes(id, base).await.unwrap();
    assert_eq!(ch.expunged, vec![2]);
    assert_eq!(
        ch.changed.iter().map(|m| m.uid).collect::<Vec<_>>(),
        vec![1, 3]
    );
    assert_eq!(ch.info.exists, 2);
    let gone = s.expunge(id, None).await.unwrap();
    assert_eq!(gone, vec![1]);
    assert_eq!(s.usage("a@x").await.unwrap().messages, 1);
}

#[tokio::test]
async fn copy_move_rename_delete() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(&test_config(d.path())).unwrap();
    s.append("a@x", "INBOX", msg("one"), Quota::default())
        .await
        .unwrap();
    let inbox = s.status("a@x", "INBOX").await.unwrap().id;
    s.create_mailbox("a@x", "Work/2024", None).await.unwrap();
    // Names are case-sensitive below INBOX.
    assert!(s.create_mailbox("a@x", "work/2024", None).await.is_ok());
    assert!(matches!(
        s.create_mailbox("a@x", "Work", None).await,
        Err(StoreError::MailboxExists)
    ));
    let (uv, pairs) = s
        .copy(inbox, vec![1], "a@x", "Work/2024", false, Quota::default())
        .await
        .unwrap();
    assert_eq!(pairs, vec![(1, 1)]);
    assert!(uv > 0);
    let (_, pairs) = s
        .copy(inbox, vec![1], "a@x", "Trash", true, Quota::default())
        .await
        .unwrap();
    assert_eq!(pairs, vec![(1, 1)]);
    assert_eq!(s.status("a@x", "INBOX").await.unwrap().exists, 0);
    let trash = s.snapshot("a@x", "Trash").await.unwrap();
    assert_eq!(
        s.read(trash.info.id, &trash.messages[0]).await.unwrap(),
        b"Subject: t\r\n\r\none\r\n"
    );
    s.rename_mailbox("a@x", "Work", "Archive/Old")
        .await
        .unwrap();
    let names: Vec<_> = s
        .list("a@x")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert!(names.contains(&"Archive/Old/2024".to_string()), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("Work")));
    s.delete_mailbox("a@x", "Archive/Old/2024").await.unwrap();
    assert!(matches!(
        s.status("a@x", "Archive/Old/2024").await,
        Err(StoreError::NoSuchMailbox)
    ));
    assert!(matches!(
        s.delete_mailbox("a@x", "INBOX").await,
        Err(StoreError::NotAllowed(_))
    ));
}

#[tokio::test]
async fn quota_refuses_before_writing() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(&test_config(d.path())).unwrap();
    let q = Quota {
        storage: Some(30),
        messages: None,
    };
    s.append("a@x", "INBOX", msg("x"), q).await.unwrap();
    assert!(matches!(
        s.append("a@x", "INBOX", msg("y"), q).await,
        Err(StoreError::OverQuota)
    ));
    assert_eq!(s.status("a@x", "INBOX").await.unwrap().exists, 1);
}

#[tokio::test]
async fn recent_is_claimed_by_one_session() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(&test_config(d.path())).unwrap();
    s.append("a@x", "INBOX", msg("x"), Quota::default())
        .await
        .unwrap();
    let id = s.status("a@x", "INBOX").await.unwrap().id;
    assert_eq!(s.claim_recent(id).await.unwrap(), 1);
    // Nothing left to claim (answered without a write): the next UID.
    assert_eq!(s.claim_recent(id).await.unwrap(), 2);
    assert_eq!(s.claim_recent(id).await.unwrap(), 2);
    // A new message is recent to the one session that claims next.
    s.append("a@x", "INBOX", msg("y"), Quota::default())
        .await
        .unwrap();
    assert_eq!(s.claim_recent(id).await.unwrap(), 2);
    assert_eq!(s.claim_recent(id).await.unwrap(), 3);
    assert_eq!(s.mailbox_info(id).await.unwrap().recent_uid, 3);
    assert!(matches!(
        s.claim_recent(id + 1000).await,
        Err(StoreError::NoSuchMailbox)
    ));
}

#[test]
fn mailbox_names_are_normalized() {
    assert_eq!(normalize_name("inbox").unwrap(), "INBOX");
    assert_eq!(normalize_name("Inbox/Sub").unwrap(), "INBOX/Sub");
    assert!(normalize_name("a//b").is_err());
    assert!(normalize_name("/a").is_err());
    assert!(normalize_name("").is_err());
}

fn threaded(id: &str, extra: &str) -> NewMessage {
    NewMessage {
        data: Arc::new(
            format!("Message-ID: <{id}>\r\n{extra}Subject: t\r\n\r\nx\r\n").into_bytes(),
        ),
        flags: Flags::default(),
        internal_date: None,
    }
}

#[tokio::test]
async fn rfc8474_5_2_thread_ids_per_user_durable_and_lazy_for_old_messages() {
    let d = tempfile::tempdir().unwrap();
    let cfg = test_config(d.path());
    let inbox;
    {
        let s = Store::open(&cfg).unwrap();
        s.append("a@x", "INBOX", threaded("p@x", ""), Quota::default())
            .await
            .unwrap();
        s.append(
            "a@x",
            "INBOX",
            threaded("r@x", "In-Reply-To: <p@x>\r\n"),
            Quota::default(),
        )
        .await
        .unwrap();
        // Another user's reply to the same id starts its own thread.
        let b = s
            .append(
                "b@x",
                "INBOX",
                threaded("r2@x", "In-Reply-To: <p@x>\r\n"),
                Quota::default(),
            )
            .await
            .unwrap();
        inbox = s.status("a@x", "INBOX").await.unwrap().id;
        let t = s.thread_ids(inbox, vec![1, 2, 99]).await.unwrap();
        assert_ne!(t[0], 0);
        assert_eq!(t[0], t[1]);
        assert_eq!(t[2], 0, "no such message");
        let tb = s.thread_ids(b.mailbox, vec![1]).await.unwrap();
        assert_ne!(tb[0], t[0]);
    }
    // Durable: the same ids after reopening (once the first writer thread
    // has let go of the database, as above).
    let mut tries = 0;
    let s = loop {
        match Store::open(&cfg) {
            Ok(s) => break s,
            Err(_) if tries < 100 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("{e}"),
        }
    };
    let before = s.thread_ids(inbox, vec![1, 2]).await.unwrap();
    // Messages of an old database (no thread id yet) get one on first
    // need, from their header, and keep it.
    s.forget_thread_ids(inbox).await.unwrap();
    s.append(
        "a@x",
        "INBOX",
        threaded("r3@x", "References: <p@x>\r\n"),
        Quota::default(),
    )
    .await
    .unwrap();
    let after = s.thread_ids(inbox, vec![1, 2, 3]).await.unwrap();
    assert_eq!(after[0], before[0]);
    assert_eq!(after[1], before[1]);
    assert_eq!(after[2], before[0]);
    assert_eq!(s.thread_ids(inbox, vec![1, 2, 3]).await.unwrap(), after);
}

/// Summaries come back in the order asked for, whether read by one range
/// scan (ascending, dense UIDs) or one lookup each (any other list), with
/// None for messages without a cached summary, another mailbox's entries
/// never mixed in, and the same for read_many's message bytes.
#[tokio::test]
async fn summaries_by_range_scan_or_lookup_agree() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(&test_config(d.path())).unwrap();
    let mut uids = Vec::new();
    for i in 0..12 {
        let p = s
            .append("a@x", "inbox", msg(&format!("m{i}")), Quota::default())
            .await
            .unwrap();
        uids.push(p.uid);
    }
    let other = s
        .append("a@x", "Sent", msg("other"), Quota::default())
        .await
        .unwrap();
    let inbox = s.snapshot("a@x", "INBOX").await.unwrap();
    let id = inbox.info.id;
    // Every other message has a summary; the other mailbox has one too.
    let items: Vec<(Uid, Vec<u8>)> = uids
        .iter()
        .step_by(2)
        .map(|&u| (u, format!("s{u}").into_bytes()))
        .collect();
    s.put_summaries(id, items).await.unwrap();
    let sent = s.snapshot("a@x", "Sent").await.unwrap();
    s.put_summaries(sent.info.id, vec![(other.uid, b"x".to_vec())])
        .await
        .unwrap();
    let want = |list: &[Uid]| -> Vec<Option<Vec<u8>>> {
        list.iter()
            .map(|&u| {
                let i = uids.iter().position(|&x| x == u);
                i.filter(|i| i % 2 == 0)
                    .map(|_| format!("s{u}").into_bytes())
            })
            .collect()
    };
    let dense: Vec<Uid> = uids.clone();
    let gaps: Vec<Uid> = uids.iter().copied().filter(|u| u % 3 != 0).collect();
    let sparse = vec![uids[0], uids[11] + 1000];
    let unordered = vec![uids[4], uids[0], uids[6]];
    for list in [dense, gaps, sparse, unordered, Vec::new()] {
        assert_eq!(
            s.summaries(id, list.clone()).await.unwrap(),
            want(&list),
            "{list:?}"
        );
    }
    let read = s.read_many(id, inbox.messages.iter()).await.unwrap();
    assert_eq!(read.len(), 12);
    for (m, r) in inbox.messages.iter().zip(read) {
        assert_eq!(r, Some(s.read(id, m).await.unwrap()));
    }
}

#[tokio::test]
async fn message_caches_hold_rows_of_live_messages_only() {
    // Summaries and previews share one reader/writer (extra.rs): a row is
    // written only for a message that exists, and goes with it.
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(&test_config(d.path())).unwrap();
    for i in 0..2 {
        s.append("a@x", "INBOX", msg(&i.to_string()), Quota::default())
            .await
            .unwrap();
    }
    s.create_mailbox("a@x", "Work", None).await.unwrap();
    s.append("a@x", "Work", msg("w"), Quota::default())
        .await
        .unwrap();
    let inbox = s.status("a@x", "INBOX").await.unwrap().id;
    let work = s.status("a@x", "Work").await.unwrap().id;
    let rows = |n: &str| {
        vec![
            (1, n.as_bytes().to_vec()),
            (2, b"two".to_vec()),
            (99, b"x".to_vec()),
        ]
    };
    s.put_summaries(inbox, rows("one")).await.unwrap();
    s.put_summaries(work, rows("work")).await.unwrap();
    s.put_previews(inbox, vec![(2, "preview".into()), (99, "gone".into())])
        .await
        .unwrap();
    s.put_previews(work, vec![(1, "w".into())]).await.unwrap();
    assert_eq!(
        s.summaries(inbox, vec![2, 1, 99, 3]).await.unwrap(),
        vec![Some(b"two".to_vec()), Some(b"one".to_vec()), None, None]
    );
    assert_eq!(
        s.previews(inbox, vec![1, 2, 99]).await.unwrap(),
        vec![None, Some("preview".to_string()), None]
    );
    s.store_flags(
        inbox,
        vec![2],
        FlagOp::Add,
        Flags::from_names(&["\\Deleted"]),
        None,
    )
    .await
    .unwrap();
    assert_eq!(s.expunge(inbox, None).await.unwrap(), vec![2]);
    assert_eq!(
        s.summaries(inbox, vec![1, 2]).await.unwrap(),
        vec![Some(b"one".to_vec()), None]
    );
    assert_eq!(s.previews(inbox, vec![2]).await.unwrap(), vec![None]);
    s.delete_mailbox("a@x", "Work").await.unwrap();
    assert_eq!(s.summaries(work, vec![1]).await.unwrap(), vec![None]);
    assert_eq!(s.previews(work, vec![1]).await.unwrap(), vec![None]);
    assert_eq!(
        s.summaries(inbox, vec![1]).await.unwrap(),
        vec![Some(b"one".to_vec())]
    );
}

// Duplicate delivery suppression (Cyrus's duplicate delivery database;
// docs/delivery.md).

fn once(id: &str, at: i64) -> Once {
    Once {
        id: id.into(),
        window: 3600,
        max: 100,
        at,
    }
}

async fn inbox_count(s: &Store, user: &str) -> u32 {
    s.status(user, "INBOX").await.unwrap().exists
}

#[tokio::test]
async fn duplicate_delivery_repeat_id_stores_one_copy() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(&test_config(d.path())).unwrap();
    let q = Quota::default();
    let first = s
        .append_once("a@x", "INBOX", msg("one"), q, once("Q1.0@mta", 1000))
        .await
        .unwrap();
    assert!(first.is_some());
    let again = s
        .append_once("a@x", "INBOX", msg("one"), q, once("Q1.0@mta", 1010))
        .await
        .unwrap();
    assert_eq!(again, None, "a repeat is not stored");
    assert_eq!(inbox_count(&s, "a@x").await, 1);
    // Another mailbox, or another id, is a delivery of its own.
    let other_user = s
        .append_once("b@x", "INBOX", msg("one"), q, once("Q1.0@mta", 1010))
        .await
        .unwrap();
    assert!(other_user.is_some());
    let other_id = s
        .append_once("a@x", "INBOX", msg("two"), q, once("Q1.1@mta", 1010))
        .await
        .unwrap();
    assert!(other_id.is_some());
    assert_eq!(inbox_count(&s, "a@x").await, 2);
    assert_eq!(s.delivery_ids("a@x").await.unwrap(), 2);
}

#[tokio::test]
async fn duplicate_delivery_id_expires_after_the_window() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(&test_config(d.path())).unwrap();
    let q = Quota::default();
    let o = |at| Once {
        window: 100,
        ..once("Q2.0@mta", at)
    };
    assert!(s
        .append_once("a@x", "INBOX", msg("m"), q, o(1000))
        .await
        .unwrap()
        .is_some());
    // Inside the window: suppressed.
    assert!(s
        .append_once("a@x", "INBOX", msg("m"), q, o(1099))
        .await
        .unwrap()
        .is_none());
    // Past it the record no longer counts: stored again, recorded anew.
    assert!(s
        .append_once("a@x", "INBOX", msg("m"), q, o(1101))
        .await
        .unwrap()
        .is_some());
    assert!(s
        .append_once("a@x", "INBOX", msg("m"), q, o(1150))
        .await
        .unwrap()
        .is_none());
    assert_eq!(inbox_count(&s, "a@x").await, 2);
    assert_eq!(s.delivery_ids("a@x").await.unwrap(), 1);
    // Expired records of other ids are pruned by later deliveries.
    for (i, at) in [(1, 2000), (2, 2001)] {
        let o = Once {
            window: 100,
            ..once(&format!("Q3.{i}@mta"), at)
        };
        s.append_once("a@x", "INBOX", msg("n"), q, o).await.unwrap();
    }
    assert_eq!(s.delivery_ids("a@x").await.unwrap(), 2);
}

#[tokio::test]
async fn duplicate_delivery_record_is_bounded_by_count() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(&test_config(d.path())).unwrap();
    let q = Quota::default();
    let o = |i: usize| Once {
        max: 3,
        ..once(&format!("Q4.{i}@mta"), 1000 + i as i64)
    };
    for i in 0..5 {
        assert!(s
            .append_once("a@x", "INBOX", msg("m"), q, o(i))
            .await
            .unwrap()
            .is_some());
    }
    assert_eq!(s.delivery_ids("a@x").await.unwrap(), 3);
    // The newest three are remembered...
    for i in 2..5 {
        assert!(s
            .append_once("a@x", "INBOX", msg("m"), q, Once { at: 1010, ..o(i) })
            .await
            .unwrap()
            .is_none());
    }
    // ... the oldest were dropped first.
    assert!(s
        .append_once("a@x", "INBOX", msg("m"), q, Once { at: 1010, ..o(0) })
        .await
        .unwrap()
        .is_some());
    assert_eq!(s.delivery_ids("a@x").await.unwrap(), 3);
    assert_eq!(inbox_count(&s, "a@x").await, 6);
    // max 0 turns suppression off.
    let off = |at| Once {
        max: 0,
        ..once("Q5.0@mta", at)
    };
    for at in [1, 2] {
        assert!(s
            .append_once("b@x", "INBOX", msg("m"), q, off(at))
            .await
            .unwrap()
            .is_some());
    }
    assert_eq!(s.delivery_ids("b@x").await.unwrap(), 0);
}

#[tokio::test]
async fn duplicate_delivery_record_is_written_in_the_append_transaction() {
    let d = tempfile::tempdir().unwrap();
    let cfg = test_config(d.path());
    {
        let s = Store::open(&cfg).unwrap();
        // An append that fails (over quota) records nothing: the retry
        // with room is stored.
        let tight = Quota {
            storage: Some(5),
            messages: None,
        };
        let r = s
            .append_once("a@x", "INBOX", msg("big"), tight, once("Q6.0@mta", 1000))
            .await;
        assert!(matches!(r, Err(StoreError::OverQuota)), "{r:?}");
        assert_eq!(s.delivery_ids("a@x").await.unwrap(), 0);
        // Concurrent deliveries of one id (a slow store and a retry):
        // the writer's in-transaction check lets exactly one through.
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.append_once(
                    "a@x",
                    "INBOX",
                    msg("m"),
                    Quota::default(),
                    once("Q6.0@mta", 1001),
                )
                .await
                .unwrap()
            }));
        }
        let mut stored = 0;
        for t in tasks {
            stored += usize::from(t.await.unwrap().is_some());
        }
        assert_eq!(stored, 1);
        assert_eq!(inbox_count(&s, "a@x").await, 1);
    }
    // The message and its record are durable together.
    let s = loop {
        match Store::open(&cfg) {
            Ok(s) => break s,
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    };
    assert_eq!(inbox_count(&s, "a@x").await, 1);
    assert_eq!(s.delivery_ids("a@x").await.unwrap(), 1);
    let r = s
        .append_once(
            "a@x",
            "INBOX",
            msg("m"),
            Quota::default(),
            once("Q6.0@mta", 1002),
        )
        .await
        .unwrap();
    assert_eq!(r, None);
}
