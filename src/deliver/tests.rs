//! The delivery contract: commit and abort per target, Return-Path once
//! at final delivery, one quota rule and one over-quota policy.

use std::sync::Arc;

use super::*;
use crate::config::OverQuota;
use crate::queue::Queue;
use crate::smtp::tests::e2e::{inbox, test_services};

fn env(sender: &str) -> Envelope {
    Envelope {
        sender: sender.into(),
        ..Envelope::default()
    }
}

fn data(s: &str) -> Arc<Vec<u8>> {
    Arc::new(s.as_bytes().to_vec())
}

fn with_queue(services: &mut Services, dir: &std::path::Path) -> Arc<Queue> {
    let q = Queue::open(
        &dir.join("queue"),
        services.config.queue.clone(),
        "mx.example.test",
    )
    .unwrap();
    services.queue = Some(q.clone());
    q
}

#[tokio::test]
async fn queue_target_commit_hands_the_durable_file_to_the_runner() {
    let dir = tempfile::tempdir().unwrap();
    let mut services = test_services(dir.path(), |_| {});
    let q = with_queue(&mut services, dir.path());
    let d = Delivery::for_submission(&services);
    let mut tx = d.start("T.1", env("alice@example.test"));
    tx.add_rcpt(Target::mailbox("bob@example.test".into()));
    tx.add_rcpt(Target::remote("x@far.example".into()));
    let out = tx.body(data("Subject: q\r\n\r\nx\r\n")).await;
    assert_eq!(out, vec![Outcome::Queued, Outcome::Queued]);
    // Durable (on disk, one file for both) but not yet the runner's.
    let on_disk = crate::queue::scan(q.dir());
    assert_eq!(on_disk.len(), 1);
    assert_eq!(on_disk[0].recipients.len(), 2);
    assert!(q.list().is_empty(), "not scheduled before commit");
    tx.commit().await;
    let listed = q.list();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, on_disk[0].id);
}

#[tokio::test]
async fn queue_target_abort_removes_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut services = test_services(dir.path(), |_| {});
    let q = with_queue(&mut services, dir.path());
    let d = Delivery::for_submission(&services);
    let mut tx = d.start("T.1", env("alice@example.test"));
    tx.add_rcpt(Target::remote("x@far.example".into()));
    assert_eq!(tx.body(data("x\r\n")).await, vec![Outcome::Queued]);
    assert_eq!(crate::queue::scan(q.dir()).len(), 1);
    tx.abort().await;
    assert!(crate::queue::scan(q.dir()).is_empty());
    assert!(q.list().is_empty());
}

#[tokio::test]
async fn queue_file_written_before_a_crash_is_loaded_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut services = test_services(dir.path(), |_| {});
    let q = with_queue(&mut services, dir.path());
    let d = Delivery::for_submission(&services);
    let mut tx = d.start("T.1", env("alice@example.test"));
    tx.add_rcpt(Target::remote("x@far.example".into()));
    assert_eq!(tx.body(data("x\r\n")).await, vec![Outcome::Queued]);
    // The process dies here: neither commit nor abort.
    drop(tx);
    drop(d);
    drop(q);
    services.queue = None;
    let q = with_queue(&mut services, dir.path());
    assert_eq!(q.list().len(), 1, "nothing acknowledged-or-not is lost");
}

#[tokio::test]
async fn local_target_abort_expunges_the_copies() {
    let dir = tempfile::tempdir().unwrap();
    let services = test_services(dir.path(), |_| {});
    let d = Delivery::from_services(&services);
    let mut tx = d.start("T.1", env("s@else.example"));
    tx.add_rcpt(Target::mailbox("alice@example.test".into()));
    assert_eq!(tx.body(data("x\r\n")).await, vec![Outcome::Delivered]);
    assert_eq!(inbox(&services, "alice@example.test").await.len(), 1);
    tx.abort().await;
    assert!(inbox(&services, "alice@example.test").await.is_empty());
    // Committed copies stay.
    let mut tx = d.start("T.2", env("s@else.example"));
    tx.add_rcpt(Target::mailbox("alice@example.test".into()));
    assert_eq!(tx.body(data("y\r\n")).await, vec![Outcome::Delivered]);
    tx.commit().await;
    assert_eq!(inbox(&services, "alice@example.test").await.len(), 1);
}

#[tokio::test]
async fn rfc5321_4_4_return_path_added_once_at_final_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let services = test_services(dir.path(), |_| {});
    let d = Delivery::from_services(&services);
    for (sender, msg, want) in [
        // A relay that should not have added one, folded.
        (
            "s@else.example",
            "Received: by mta\r\nReturn-Path:\r\n <relay@x>\r\nSubject: a\r\n\r\nReturn-Path: in the body\r\n",
            "Return-Path: <s@else.example>\r\nReceived: by mta\r\nSubject: a\r\n\r\nReturn-Path: in the body\r\n",
        ),
        // The null sender.
        ("", "Subject: b\r\n\r\nx\r\n", "Return-Path: <>\r\nSubject: b\r\n\r\nx\r\n"),
        // RFC 6531 addresses are kept as they are.
        ("jöran@s.example", "Subject: c\r\n\r\nx\r\n", "Return-Path: <jöran@s.example>\r\nSubject: c\r\n\r\nx\r\n"),
    ] {
        let mut tx = d.start("T", env(sender));
        tx.add_rcpt(Target::mailbox("alice@example.test".into()));
        assert_eq!(tx.body(data(msg)).await, vec![Outcome::Delivered]);
        tx.commit().await;
        let got = inbox(&services, "alice@example.test").await;
        assert_eq!(got.last().unwrap(), want);
    }
}

#[test]
fn rfc5321_4_4_return_path_removed_only_from_the_header_section() {
    let got = local::with_return_path(
        "a@b",
        data("Return-path: <x>\r\n\tmore\r\nX: 1\r\n\r\nReturn-Path: <y>\r\n"),
    );
    assert_eq!(
        got,
        b"Return-Path: <a@b>\r\nX: 1\r\n\r\nReturn-Path: <y>\r\n".to_vec()
    );
    // Header only, no body: still one.
    let got = local::with_return_path("a@b", data("Return-Path: <x>\r\n"));
    assert_eq!(got, b"Return-Path: <a@b>\r\n".to_vec());
}

#[tokio::test]
async fn relaying_targets_never_add_return_path() {
    // Queue, LMTP, relay and MX targets send the bytes they are given:
    // only `local` calls `with_return_path`. The queue file keeps the
    // message as accepted.
    let dir = tempfile::tempdir().unwrap();
    let mut services = test_services(dir.path(), |_| {});
    let q = with_queue(&mut services, dir.path());
    let d = Delivery::from_services(&services);
    let mut tx = d.start("T.1", env("s@else.example"));
    tx.add_rcpt(Target::remote("x@far.example".into()));
    assert_eq!(
        tx.body(data("Subject: f\r\n\r\nx\r\n")).await,
        vec![Outcome::Queued]
    );
    tx.commit().await;
    let id = &q.list()[0].id;
    let l = crate::queue::record::load(&q.dir().join(format!("{id}.q")))
        .unwrap()
        .unwrap();
    assert_eq!(l.data, b"Subject: f\r\n\r\nx\r\n");
}

#[test]
fn effective_quota_is_the_directory_value_else_the_store_default() {
    let mut store = crate::config::StoreConfig::default();
    assert_eq!(quota(None, &store), crate::store::Quota::default());
    store.default_quota = 1000;
    store.default_message_quota = 5;
    let q = quota(None, &store);
    assert_eq!((q.storage, q.messages), (Some(1000), Some(5)));
    let q = quota(Some(300), &store);
    assert_eq!((q.storage, q.messages), (Some(300), Some(5)));
}

#[tokio::test]
async fn over_quota_policy_is_applied_once_for_every_path() {
    for (policy, want) in [
        (
            OverQuota::Temporary,
            Outcome::OverQuota { permanent: false },
        ),
        (OverQuota::Permanent, Outcome::OverQuota { permanent: true }),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let services = test_services(dir.path(), |c| {
            c.store.over_quota = policy;
            c.store.default_quota = 200;
        });
        let big = data(&format!("Subject: big\r\n\r\n{}\r\n", "z".repeat(400)));
        // The SMTP/LMTP servers and the queue runner's local target.
        for d in [
            Delivery::from_services(&services),
            Delivery::new(
                Mode::Now,
                services.config.clone(),
                services.store.clone(),
                None,
            ),
        ] {
            let mut tx = d.start("T", env("s@else.example"));
            // alice has no directory quota: the store default applies;
            // bob's own (300) wins over it.
            tx.add_rcpt(Target::mailbox("alice@example.test".into()));
            tx.add_rcpt(Target {
                quota: Some(300),
                ..Target::mailbox("bob@example.test".into())
            });
            let out = tx.body(big.clone()).await;
            assert_eq!(out, vec![want.clone(), want.clone()], "{policy:?}");
            tx.abort().await;
        }
        assert_eq!(want.is_permanent(), policy == OverQuota::Permanent);
        assert!(want.text().starts_with(if want.is_permanent() {
            "552 5.2.2"
        } else {
            "452 4.2.2"
        }));
    }
}

#[test]
fn one_outcome_type_classes() {
    for (o, accepted, permanent) in [
        (Outcome::Delivered, true, false),
        (Outcome::Queued, true, false),
        (Outcome::Relayed { dsn_passed: false }, true, false),
        (Outcome::DiskFull, false, false),
        (Outcome::NoResources, false, false),
        (Outcome::Temporary("451 4.4.1 x".into()), false, false),
        (Outcome::Permanent("550 5.1.1 x".into()), false, true),
    ] {
        assert_eq!(o.accepted(), accepted, "{o:?}");
        assert_eq!(o.is_permanent(), permanent, "{o:?}");
        if !accepted {
            let t = o.text();
            assert!(t.starts_with(if permanent { '5' } else { '4' }), "{t}");
        }
    }
}

#[test]
fn dest_per_mode() {
    let dir = tempfile::tempdir().unwrap();
    let mut services = test_services(dir.path(), |c| {
        c.store.host = "store1.example.test".into();
    });
    let _q = with_queue(&mut services, dir.path());
    let here = Target::mailbox("a@example.test".into());
    let other = Target {
        mail_host: Some("store2.example.test".into()),
        ..Target::mailbox("b@example.test".into())
    };
    let far = Target::remote("c@far.example".into());
    let accept = Delivery::from_services(&services);
    assert_eq!(accept.dest(&here), Dest::Local);
    assert_eq!(accept.dest(&other), Dest::Queue);
    assert_eq!(accept.dest(&far), Dest::Queue);
    let sub = Delivery::for_submission(&services);
    assert_eq!(sub.dest(&here), Dest::Queue);
    let now = Delivery::new(
        Mode::Now,
        services.config.clone(),
        services.store.clone(),
        None,
    );
    assert_eq!(now.dest(&here), Dest::Local);
    assert_eq!(
        now.dest(&other),
        Dest::Lmtp("store2.example.test:24".into())
    );
    assert_eq!(now.dest(&far), Dest::Mx("far.example".into()));
    let none = Delivery::new(Mode::Accept, services.config.clone(), None, None);
    assert!(!none.available());
    assert_eq!(none.dest(&here), Dest::Nowhere);
}

#[test]
fn rfc5321_4_1_2_return_path_requotes_and_null_sender() {
    assert_eq!(local::return_path(""), "Return-Path: <>\r\n");
    assert_eq!(local::return_path("a.b@x"), "Return-Path: <a.b@x>\r\n");
    assert_eq!(
        local::return_path("john doe@x"),
        "Return-Path: <\"john doe\"@x>\r\n"
    );
}

#[test]
fn return_path_goes_into_an_unshared_buffer_without_a_second_allocation() {
    let mut v = Vec::with_capacity(local::RETURN_PATH_ROOM + 64);
    v.extend_from_slice(b"Subject: a\r\n\r\nbody\r\n");
    let cap = v.capacity();
    let got = local::with_return_path("s@x.example", Arc::new(v));
    assert_eq!(
        got,
        b"Return-Path: <s@x.example>\r\nSubject: a\r\n\r\nbody\r\n".to_vec()
    );
    assert_eq!(got.capacity(), cap, "changed in place");
    // Shared: copied, the other holder's bytes unchanged.
    let shared = data("Subject: b\r\n\r\nx\r\n");
    let got = local::with_return_path("", shared.clone());
    assert_eq!(got, b"Return-Path: <>\r\nSubject: b\r\n\r\nx\r\n".to_vec());
    assert_eq!(&shared[..], b"Subject: b\r\n\r\nx\r\n");
}

/// The queue runner's local target (all-in-one) uses the same delivery
/// id as LMTP: a repeat is `Delivered` without a second copy, and an
/// abort does not take back the copy an earlier delivery made.
#[tokio::test]
async fn local_target_with_a_repeated_delivery_id_stores_one_copy() {
    let dir = tempfile::tempdir().unwrap();
    let services = test_services(dir.path(), |_| {});
    let d = Delivery::for_queue(&services);
    let t = Target {
        delivery_id: Some(queue::delivery_id("0A1B", 0, "mx.example.test")),
        ..Target::mailbox("alice@example.test".into())
    };
    for _ in 0..2 {
        let mut tx = d.start("0A1B", env("s@else.example"));
        tx.add_rcpt(t.clone());
        let out = tx.body(data("Subject: once\r\n\r\nx\r\n")).await;
        assert_eq!(out, vec![Outcome::Delivered]);
        tx.commit().await;
    }
    let mut tx = d.start("0A1B", env("s@else.example"));
    tx.add_rcpt(t.clone());
    assert_eq!(
        tx.body(data("Subject: once\r\n\r\nx\r\n")).await,
        vec![Outcome::Delivered]
    );
    tx.abort().await;
    assert_eq!(inbox(&services, "alice@example.test").await.len(), 1);
    assert_eq!(
        queue::delivery_id("0A1B", 3, "mx.exa mple/test"),
        "0A1B.3@mx.exampletest"
    );
}

/// A queue runner's transport for the cut-through tests: answers each
/// address from its script (the last answer repeats; none: delivered)
/// and records (queue id, recipient index, address) of every try.
#[derive(Default)]
struct Stores {
    script: std::sync::Mutex<std::collections::HashMap<String, Vec<Outcome>>>,
    tried: std::sync::Mutex<Vec<(String, usize, String)>>,
}

impl crate::queue::Transport for Stores {
    fn deliver<'a>(
        &'a self,
        id: &'a str,
        env: &'a Envelope,
        rcpts: Vec<usize>,
        _data: Arc<Vec<u8>>,
    ) -> crate::queue::BoxFuture<'a, Vec<(usize, Outcome)>> {
        Box::pin(async move {
            let mut script = self.script.lock().unwrap();
            let mut out = Vec::new();
            for i in rcpts {
                let a = env.recipients[i].address.clone();
                self.tried
                    .lock()
                    .unwrap()
                    .push((id.to_string(), i, a.clone()));
                let list = script.entry(a).or_default();
                let o = match list.len() {
                    0 => Outcome::Delivered,
                    1 => list[0].clone(),
                    _ => list.remove(0),
                };
                out.push((i, o));
            }
            out
        })
    }
}

/// An mta-in's Accept delivery with its queue runner started on `stores`.
fn mta_in_with(
    dir: &std::path::Path,
    cut_through: bool,
    stores: Arc<Stores>,
) -> (Delivery, Arc<Queue>, tokio_util::sync::CancellationToken) {
    let mut services = test_services(dir, |c| {
        c.store.host = "store1.example.test".into();
        c.queue.cut_through = cut_through;
    });
    let q = with_queue(&mut services, dir);
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(q.clone().run(stores, stop.clone()));
    (Delivery::from_services(&services), q, stop)
}

fn on_store2(address: &str) -> Target {
    Target {
        mail_host: Some("store2.example.test".into()),
        ..Target::mailbox(address.into())
    }
}

async fn runner_started(q: &Queue) {
    for _ in 0..100 {
        if q.running() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the queue runner did not start");
}

async fn queue_empties(q: &Queue) {
    for _ in 0..100 {
        if q.is_empty() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("queue not empty: {:?}", q.list());
}

/// Cut-through: copies for mailboxes on stores are delivered before the
/// transaction's body returns, under a queue id and the delivery ids the
/// runner would use, and no queue file is written.
#[tokio::test]
async fn cut_through_delivers_to_the_stores_without_a_queue_file() {
    let dir = tempfile::tempdir().unwrap();
    let stores = Arc::new(Stores::default());
    let (d, q, stop) = mta_in_with(dir.path(), true, stores.clone());
    runner_started(&q).await;
    stores.tried.lock().unwrap().clear();
    let mut tx = d.start("T.1", env("s@else.example"));
    tx.add_rcpt(on_store2("a@example.test"));
    tx.add_rcpt(on_store2("b@example.test"));
    let out = tx.body(data("Subject: ct\r\n\r\nx\r\n")).await;
    assert_eq!(out, vec![Outcome::Delivered, Outcome::Delivered]);
    tx.commit().await;
    let tried = stores.tried.lock().unwrap().clone();
    assert_eq!(tried.len(), 2, "{tried:?}");
    assert_eq!(tried[0].0, tried[1].0, "one queue id for the message");
    assert!(crate::queue::valid_id(&tried[0].0), "{tried:?}");
    assert_eq!((tried[0].1, tried[1].1), (0, 1));
    assert!(crate::queue::scan(q.dir()).is_empty(), "no queue file");
    assert!(q.is_empty());
    stop.cancel();
}

/// What the stores did not take is queued under the same queue id with
/// the delivered recipients recorded: the runner tries only the rest,
/// with the same delivery ids, and never the delivered one again (not
/// even after a restart: the file says so).
#[tokio::test]
async fn cut_through_queues_only_what_the_stores_did_not_take() {
    let dir = tempfile::tempdir().unwrap();
    let stores = Arc::new(Stores::default());
    stores.script.lock().unwrap().insert(
        "b@example.test".into(),
        vec![
            Outcome::Temporary("421 4.3.0 store restarting".into()),
            Outcome::Delivered,
        ],
    );
    let (d, q, stop) = mta_in_with(dir.path(), true, stores.clone());
    runner_started(&q).await;
    stores.tried.lock().unwrap().clear();
    let mut tx = d.start("T.2", env("s@else.example"));
    tx.add_rcpt(on_store2("a@example.test"));
    tx.add_rcpt(on_store2("b@example.test"));
    let out = tx.body(data("Subject: ct\r\n\r\nx\r\n")).await;
    assert_eq!(out, vec![Outcome::Queued, Outcome::Queued]);
    let on_disk = crate::queue::scan(q.dir());
    assert_eq!(on_disk.len(), 1);
    let qid = stores.tried.lock().unwrap()[0].0.clone();
    assert_eq!(on_disk[0].id, qid, "queued under the cut-through's id");
    let status: Vec<_> = on_disk[0].recipients.iter().map(|r| r.1.clone()).collect();
    assert_eq!(
        status,
        vec![
            crate::queue::Status::Delivered,
            crate::queue::Status::Pending
        ]
    );
    // A restart would load the file with the same states.
    let reloaded = Queue::open(q.dir(), Default::default(), "mx.example.test").unwrap();
    assert_eq!(
        reloaded.list()[0].recipients[0].1,
        crate::queue::Status::Delivered
    );
    drop(reloaded);
    tx.commit().await;
    queue_empties(&q).await;
    let tried = stores.tried.lock().unwrap().clone();
    assert_eq!(
        tried,
        vec![
            (qid.clone(), 0, "a@example.test".to_string()),
            (qid.clone(), 1, "b@example.test".to_string()),
            (qid.clone(), 1, "b@example.test".to_string()),
        ]
    );
    // The store's 421 paused cut-through: the next message is queued
    // first (nothing tried before its file is written).
    stores.tried.lock().unwrap().clear();
    let mut tx = d.start("T.3", env("s@else.example"));
    tx.add_rcpt(on_store2("a@example.test"));
    let out = tx.body(data("Subject: after\r\n\r\nx\r\n")).await;
    assert_eq!(out, vec![Outcome::Queued]);
    assert!(
        stores.tried.lock().unwrap().is_empty(),
        "paused after the 421"
    );
    tx.commit().await;
    queue_empties(&q).await;
    stop.cancel();
}

/// A full mailbox is that mailbox's trouble, not the store's: the next
/// message still goes straight to the store.
#[tokio::test]
async fn a_full_mailbox_does_not_pause_cut_through() {
    let dir = tempfile::tempdir().unwrap();
    let stores = Arc::new(Stores::default());
    stores.script.lock().unwrap().insert(
        "full@example.test".into(),
        vec![Outcome::OverQuota { permanent: false }, Outcome::Delivered],
    );
    let (d, q, stop) = mta_in_with(dir.path(), true, stores.clone());
    runner_started(&q).await;
    let mut tx = d.start("T.4", env("s@else.example"));
    tx.add_rcpt(on_store2("full@example.test"));
    assert_eq!(
        tx.body(data("Subject: a\r\n\r\nx\r\n")).await,
        vec![Outcome::Queued]
    );
    tx.commit().await;
    queue_empties(&q).await;
    let mut tx = d.start("T.5", env("s@else.example"));
    tx.add_rcpt(on_store2("a@example.test"));
    assert_eq!(
        tx.body(data("Subject: b\r\n\r\nx\r\n")).await,
        vec![Outcome::Delivered]
    );
    tx.commit().await;
    assert!(crate::queue::scan(q.dir()).is_empty());
    stop.cancel();
}

/// Off (`queue.cut_through = false`), with a success notice asked for, or
/// with a copy for another server, the message is queued first.
#[tokio::test]
async fn without_cut_through_every_message_is_queued_first() {
    let notify = Target {
        notify: Some(Notify {
            success: true,
            failure: true,
            delay: false,
        }),
        ..on_store2("a@example.test")
    };
    for (cut_through, targets) in [
        (false, vec![on_store2("a@example.test")]),
        (true, vec![notify]),
        (
            true,
            vec![
                on_store2("a@example.test"),
                Target::remote("x@far.example".into()),
            ],
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let stores = Arc::new(Stores::default());
        let (d, q, stop) = mta_in_with(dir.path(), cut_through, stores.clone());
        runner_started(&q).await;
        stores.tried.lock().unwrap().clear();
        let mut tx = d.start("T.3", env("s@else.example"));
        let n = targets.len();
        for t in targets {
            tx.add_rcpt(t);
        }
        let out = tx.body(data("Subject: q\r\n\r\nx\r\n")).await;
        assert_eq!(out, vec![Outcome::Queued; n], "cut_through {cut_through}");
        assert!(
            stores.tried.lock().unwrap().is_empty(),
            "nothing tried before the file"
        );
        assert_eq!(crate::queue::scan(q.dir()).len(), 1);
        tx.commit().await;
        queue_empties(&q).await;
        stop.cancel();
    }
}
