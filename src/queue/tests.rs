use super::*;
use crate::queue::record::Notify;

/// A transport that answers from a script: per address, a list of outcomes
/// for successive attempts (the last one repeats).
struct Scripted {
    script: Mutex<std::collections::HashMap<String, Vec<Outcome>>>,
    delivered: Mutex<Vec<(String, Vec<u8>)>>,
}

impl Transport for Scripted {
    fn deliver<'a>(
        &'a self,
        _id: &'a str,
        env: &'a Envelope,
        rcpts: Vec<usize>,
        data: Arc<Vec<u8>>,
    ) -> BoxFuture<'a, Vec<(usize, Outcome)>> {
        Box::pin(async move {
            let mut out = Vec::new();
            let mut script = self.script.lock().unwrap();
            for i in rcpts {
                let a = &env.recipients[i].address;
                let list = script.entry(a.clone()).or_insert(vec![Outcome::Delivered]);
                let o = if list.len() > 1 {
                    list.remove(0)
                } else {
                    list[0].clone()
                };
                if o == Outcome::Delivered {
                    self.delivered
                        .lock()
                        .unwrap()
                        .push((a.clone(), data.to_vec()));
                }
                out.push((i, o));
            }
            out
        })
    }
}

fn cfg() -> QueueConfig {
    QueueConfig {
        dir: String::new(),
        retry_base: 1,
        retry_max: 1,
        lifetime: 3600,
        delay_warning: 3600,
        concurrency: 4,
        cut_through: true,
    }
}

fn env(sender: &str, rcpts: &[&str]) -> Envelope {
    Envelope {
        sender: sender.into(),
        recipients: rcpts
            .iter()
            .map(|r| Recipient {
                address: r.to_string(),
                orcpt: None,
                notify: Notify::default(),
                route: String::new(),
            })
            .collect(),
        received: unix_now(),
        envid: None,
        ret_full: false,
        junk: false,
    }
}

/// The names in a queue folder other than spare files (`Queue::recycle`).
fn queue_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".spare"))
        .collect();
    names.sort();
    names
}

async fn wait_until(q: &Queue, f: impl Fn(&Queue) -> bool) {
    for _ in 0..100 {
        if f(q) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("condition not reached; queue: {:?}", q.list());
}

#[tokio::test]
async fn temporary_failure_is_retried_then_delivered_once() {
    let (d, q, t, stop) = running(Arc::new(Scripted {
        script: Mutex::new(
            [(
                "b@y".to_string(),
                vec![
                    Outcome::Temporary("451 4.3.0 later".into()),
                    Outcome::Delivered,
                ],
            )]
            .into(),
        ),
        delivered: Mutex::default(),
    }));
    q.enqueue(env("a@x", &["b@y", "c@y"]), Arc::new(b"hello\r\n".to_vec()))
        .await
        .unwrap();
    wait_until(&q, |q| q.is_empty()).await;
    stop.cancel();
    let got = t.delivered.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.iter().all(|(_, d)| d == b"hello\r\n"));
    assert_eq!(queue_names(d.path()), Vec::<String>::new());
}

#[tokio::test]
async fn permanent_failure_bounces_to_the_sender_but_never_to_null() {
    let (_d, q, t, stop) = running(Arc::new(Scripted {
        script: Mutex::new(
            [(
                "b@y".to_string(),
                vec![Outcome::Permanent("550 5.1.1 no such user".into())],
            )]
            .into(),
        ),
        delivered: Mutex::default(),
    }));
    q.enqueue(
        env("a@x", &["b@y"]),
        Arc::new(b"Subject: s\r\n\r\nx\r\n".to_vec()),
    )
    .await
    .unwrap();
    q.enqueue(
        env("", &["b@y"]),
        Arc::new(b"Subject: s\r\n\r\nx\r\n".to_vec()),
    )
    .await
    .unwrap();
    wait_until(&q, |q| q.is_empty()).await;
    stop.cancel();
    let got = t.delivered.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "exactly one DSN, to a@x: {got:?}");
    assert_eq!(got[0].0, "a@x");
    let text = String::from_utf8_lossy(&got[0].1);
    assert!(text.contains("Status: 5.1.1"), "{text}");
}

#[tokio::test]
async fn restart_resumes_without_repeating_delivered_recipients() {
    let d = tempfile::tempdir().unwrap();
    {
        let q = Queue::open(d.path(), cfg(), "mx.test").unwrap();
        let t = Arc::new(Scripted {
            script: Mutex::new(
                [(
                    "c@y".to_string(),
                    vec![Outcome::Temporary("421 4.4.2 down".into())],
                )]
                .into(),
            ),
            delivered: Mutex::default(),
        });
        let stop = CancellationToken::new();
        tokio::spawn(q.clone().run(t.clone(), stop.clone()));
        q.enqueue(env("a@x", &["b@y", "c@y"]), Arc::new(b"m\r\n".to_vec()))
            .await
            .unwrap();
        wait_until(&q, |_| t.delivered.lock().unwrap().len() == 1).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.cancel();
    }
    // "Restart": a new Queue over the same folder, a transport that accepts all.
    let q = Queue::open(d.path(), cfg(), "mx.test").unwrap();
    assert_eq!(q.len(), 1);
    let t = Arc::new(Scripted {
        script: Mutex::default(),
        delivered: Mutex::default(),
    });
    let stop = CancellationToken::new();
    tokio::spawn(q.clone().run(t.clone(), stop.clone()));
    q.flush();
    wait_until(&q, |q| q.is_empty()).await;
    stop.cancel();
    let got = t.delivered.lock().unwrap().clone();
    assert_eq!(
        got.iter().map(|g| g.0.as_str()).collect::<Vec<_>>(),
        vec!["c@y"],
        "b@y was delivered before the restart and must not be sent again"
    );
}

#[tokio::test]
async fn rfc3461_notify_success_sends_delivered_and_relayed_reports() {
    let (_d, q, t, stop) = running(Arc::new(Scripted {
        script: Mutex::new(
            [
                (
                    "far@z".to_string(),
                    vec![Outcome::Relayed { dsn_passed: false }],
                ),
                (
                    "dsn@z".to_string(),
                    vec![Outcome::Relayed { dsn_passed: true }],
                ),
            ]
            .into(),
        ),
        delivered: Mutex::default(),
    }));
    let mut e = env("a@x", &["b@y", "far@z", "dsn@z", "quiet@y"]);
    for r in &mut e.recipients[..3] {
        r.notify = Notify {
            success: true,
            failure: true,
            delay: false,
        };
    }
    e.envid = Some("E1".into());
    q.enqueue(e, Arc::new(b"Subject: s\r\n\r\nx\r\n".to_vec()))
        .await
        .unwrap();
    wait_until(&q, |q| q.is_empty()).await;
    stop.cancel();
    let got = t.delivered.lock().unwrap().clone();
    let reports: Vec<String> = got
        .iter()
        .filter(|(a, _)| a == "a@x")
        .map(|(_, m)| String::from_utf8_lossy(m).into_owned())
        .collect();
    assert_eq!(reports.len(), 2, "delivered + relayed: {reports:?}");
    let all = reports.join("\n");
    assert!(all.contains("Action: delivered\r\nStatus: 2.0.0"), "{all}");
    assert!(all.contains("Action: relayed\r\nStatus: 2.0.0"), "{all}");
    assert!(all.contains("Final-Recipient: rfc822; b@y"), "{all}");
    assert!(!all.contains("dsn@z"), "the next hop reports for dsn@z");
    assert!(!all.contains("quiet@y"), "no NOTIFY=SUCCESS for quiet@y");
    assert!(all.contains("Original-Envelope-Id: E1"), "{all}");
}

#[tokio::test]
async fn hold_release_delete_at_runtime_and_over_the_control_folder() {
    let d = tempfile::tempdir().unwrap();
    let q = Queue::open(d.path(), cfg(), "mx.test").unwrap();
    let t = Arc::new(Scripted {
        script: Mutex::new(
            [(
                "b@y".to_string(),
                vec![Outcome::Temporary("451 4.4.1 later".into())],
            )]
            .into(),
        ),
        delivered: Mutex::default(),
    });
    let stop = CancellationToken::new();
    // Hold before the runner starts: the message is not tried.
    let id = q
        .enqueue(env("a@x", &["b@y"]), Arc::new(b"m\r\n".to_vec()))
        .await
        .unwrap();
    assert!(q.hold(&id).unwrap());
    assert!(d.path().join(format!("{id}.hold")).exists());
    tokio::spawn(q.clone().run(t.clone(), stop.clone()));
    let lock = control::lock(d.path()).unwrap();
    assert!(
        control::lock(d.path()).is_err(),
        "one server per queue folder"
    );
    tokio::spawn(control::serve(q.clone(), lock, stop.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(q.list()[0].recipients[0].2, 0, "held: no attempt");
    // The CLI path: the server is running, so commands go through files.
    let dir = d.path().to_path_buf();
    assert!(control::server_running(&dir));
    let send = |c: control::Command| {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || control::send(&dir, &c).unwrap())
    };
    let r = send(control::Command::Release(id.clone())).await.unwrap();
    assert!(r.ends_with("released"), "{r}");
    wait_until(&q, |q| q.list()[0].recipients[0].2 >= 1).await;
    assert!(!d.path().join(format!("{id}.hold")).exists());
    let listed = scan(d.path());
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].recipients[0].0, "b@y");
    let r = send(control::Command::Retry("NOPE".into())).await.unwrap();
    assert!(r.contains("no such message"), "{r}");
    let r = send(control::Command::Delete(id.clone())).await.unwrap();
    assert!(r.ends_with("deleted"), "{r}");
    assert!(q.is_empty());
    assert!(!d.path().join(format!("{id}.q")).exists());
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!control::server_running(&dir), "lock released at shutdown");
    // Offline: the CLI edits the folder itself.
    let id2 = q
        .enqueue(env("a@x", &["b@y"]), Arc::new(b"m\r\n".to_vec()))
        .await
        .unwrap();
    let r = control::send(&dir, &control::Command::Hold(id2.clone())).unwrap();
    assert!(r.ends_with("held"), "{r}");
    let q2 = Queue::open(d.path(), cfg(), "mx.test").unwrap();
    assert!(q2.list()[0].held, "hold marker survives a restart");
}

fn scripted() -> Arc<Scripted> {
    Arc::new(Scripted {
        script: Mutex::default(),
        delivered: Mutex::default(),
    })
}

/// A queue file whose only recipient is recorded delivered, as the
/// runner leaves it when it is killed before removing the file (`dsn`:
/// the notice that status owes; `notified`: it was queued).
fn finished_file(dir: &Path, id: &str, notified: bool) {
    let mut e = env("a@x", &["b@y"]);
    e.recipients[0].notify = Notify {
        success: true,
        failure: true,
        delay: false,
    };
    let p = dir.join(format!("{id}.q"));
    record::create(&p, &e, b"Subject: s\r\n\r\nx\r\n").unwrap();
    record::append_state(
        &p,
        &StateChange {
            rcpt: 0,
            status: Status::Delivered,
            attempts: 1,
            next_attempt: 0,
            last_error: None,
            warned: false,
            dsn: Some("delivered".into()),
            notified,
        },
    )
    .unwrap();
}

/// The DSNs the transport delivered to the sender a@x.
fn notices(t: &Scripted) -> Vec<String> {
    t.delivered
        .lock()
        .unwrap()
        .iter()
        .filter(|(a, _)| a == "a@x")
        .map(|(_, d)| String::from_utf8_lossy(d).into_owned())
        .collect()
}

#[tokio::test]
async fn finished_entry_on_load_sends_the_owed_success_dsn_and_is_removed() {
    let d = tempfile::tempdir().unwrap();
    finished_file(d.path(), "0000000000AA", false);
    let q = Queue::open(d.path(), cfg(), "mx.test").unwrap();
    let t = scripted();
    let stop = CancellationToken::new();
    tokio::spawn(q.clone().run(t.clone(), stop.clone()));
    wait_until(&q, |q| q.is_empty()).await;
    stop.cancel();
    // The recipient was not tried again; the sender got its notice once.
    let all = t.delivered.lock().unwrap().clone();
    assert!(all.iter().all(|(a, _)| a == "a@x"), "{all:?}");
    let n = notices(&t);
    assert_eq!(n.len(), 1);
    assert!(n[0].contains("Action: delivered"), "{}", n[0]);
    assert!(scan(d.path()).is_empty(), "msgd queue list shows nothing");
    assert_eq!(queue_names(d.path()), Vec::<String>::new());
}

#[tokio::test]
async fn finished_entry_on_load_with_its_dsn_sent_is_removed_without_another() {
    let d = tempfile::tempdir().unwrap();
    finished_file(d.path(), "0000000000AB", true);
    let q = Queue::open(d.path(), cfg(), "mx.test").unwrap();
    let t = scripted();
    let stop = CancellationToken::new();
    tokio::spawn(q.clone().run(t.clone(), stop.clone()));
    wait_until(&q, |q| q.is_empty()).await;
    stop.cancel();
    assert!(t.delivered.lock().unwrap().is_empty());
    assert!(scan(d.path()).is_empty());
}

/// Killed after the notice was queued and before that was recorded: the
/// notice's name is derived from the entry, so the restart finds it and
/// does not queue a second one.
#[tokio::test]
async fn finished_entry_on_load_does_not_queue_a_notice_twice() {
    let d = tempfile::tempdir().unwrap();
    let id = "0000000000AC";
    finished_file(d.path(), id, false);
    let notice = env("", &["a@x"]);
    record::create(
        &d.path().join(format!("{id}ND0.q")),
        &notice,
        b"Subject: the notice\r\n\r\nx\r\n",
    )
    .unwrap();
    let q = Queue::open(d.path(), cfg(), "mx.test").unwrap();
    assert_eq!(q.len(), 2);
    let t = scripted();
    let stop = CancellationToken::new();
    tokio::spawn(q.clone().run(t.clone(), stop.clone()));
    wait_until(&q, |q| q.is_empty()).await;
    stop.cancel();
    let n = notices(&t);
    assert_eq!(n, vec!["Subject: the notice\r\n\r\nx\r\n".to_string()]);
    assert!(scan(d.path()).is_empty());
}

/// The queue runner gives the transport the queue id, from which the
/// delivery id (stable over retries) is made.
#[tokio::test]
async fn transport_gets_the_same_queue_id_on_every_retry() {
    struct Ids(Mutex<Vec<String>>);
    impl Transport for Ids {
        fn deliver<'a>(
            &'a self,
            id: &'a str,
            _env: &'a Envelope,
            rcpts: Vec<usize>,
            _data: Arc<Vec<u8>>,
        ) -> BoxFuture<'a, Vec<(usize, Outcome)>> {
            Box::pin(async move {
                let mut ids = self.0.lock().unwrap();
                ids.push(id.to_string());
                let o = if ids.len() < 3 {
                    Outcome::Temporary("451 4.3.0 later".into())
                } else {
                    Outcome::Delivered
                };
                rcpts.into_iter().map(|i| (i, o.clone())).collect()
            })
        }
    }
    let (_d, q, t, stop) = running(Arc::new(Ids(Mutex::default())));
    let qid = q
        .enqueue(env("", &["b@y"]), Arc::new(b"x\r\n".to_vec()))
        .await
        .unwrap();
    wait_until(&q, |q| q.is_empty()).await;
    stop.cancel();
    assert_eq!(*t.0.lock().unwrap(), vec![qid.clone(), qid.clone(), qid]);
}

#[tokio::test]
async fn concurrent_enqueues_are_made_durable_by_shared_flush_rounds_and_load_back() {
    let d = tempfile::tempdir().unwrap();
    let q = Queue::open(d.path(), cfg(), "mx.test").unwrap();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let q = q.clone();
        tasks.push(tokio::spawn(async move {
            q.write(
                &env("a@x", &["b@y"]),
                Arc::new(format!("m{i}\r\n").into_bytes()),
            )
            .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    // Every file was flushed (alone or in a shared round) before `write`
    // returned, and each is whole on disk.
    let s = q.sync_stats();
    assert_eq!(s.files, 16);
    assert!(s.rounds >= 1 && s.rounds <= 16, "{s:?}");
    let again = Queue::open(d.path(), cfg(), "mx.test").unwrap();
    assert_eq!(again.len(), 16);
}

#[tokio::test]
async fn an_attempt_that_finishes_the_entry_removes_it_without_a_state_record() {
    let (d, q, t, stop) = running(scripted());
    q.enqueue(env("a@x", &["b@y"]), Arc::new(b"hello\r\n".to_vec()))
        .await
        .unwrap();
    wait_until(&q, |q| q.is_empty()).await;
    stop.cancel();
    assert_eq!(t.delivered.lock().unwrap().len(), 1);
    assert_eq!(queue_names(d.path()), Vec::<String>::new());
    // Only the new file was flushed: its removal records the delivery.
    assert_eq!(q.sync_stats().files, 1);
}

/// A queue in a new folder with its runner started on `t`.
fn running<T: Transport + 'static>(
    t: Arc<T>,
) -> (tempfile::TempDir, Arc<Queue>, Arc<T>, CancellationToken) {
    let d = tempfile::tempdir().unwrap();
    let q = Queue::open(d.path(), cfg(), "mx.test").unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(q.clone().run(t.clone(), stop.clone()));
    (d, q, t, stop)
}

fn always_delivers() -> Arc<Scripted> {
    Arc::new(Scripted {
        script: Mutex::default(),
        delivered: Mutex::default(),
    })
}

#[tokio::test]
async fn first_attempt_uses_the_bytes_written_without_reading_the_file() {
    let d = tempfile::tempdir().unwrap();
    let q = Queue::open(d.path(), cfg(), "mx.test").unwrap();
    let id = q
        .enqueue(env("a@x", &["b@y"]), Arc::new(b"hello\r\n".to_vec()))
        .await
        .unwrap();
    assert_eq!(q.kept_bytes(), 7);
    // Change the file behind the queue's back: only a read would see it
    // (and find its checksum wrong).
    let p = d.path().join(format!("{id}.q"));
    let mut raw = std::fs::read(&p).unwrap();
    let at = raw.windows(5).position(|w| w == b"hello").unwrap();
    raw[at..at + 5].copy_from_slice(b"HELLO");
    std::fs::write(&p, raw).unwrap();
    let t = always_delivers();
    let stop = CancellationToken::new();
    tokio::spawn(q.clone().run(t.clone(), stop.clone()));
    wait_until(&q, |q| q.is_empty()).await;
    stop.cancel();
    let got = t.delivered.lock().unwrap().clone();
    assert_eq!(got, vec![("b@y".to_string(), b"hello\r\n".to_vec())]);
    assert_eq!(q.kept_bytes(), 0, "released after the attempt");
}

#[tokio::test]
async fn bytes_kept_for_first_attempts_are_bounded_and_a_retry_reads_the_file() {
    let d = tempfile::tempdir().unwrap();
    let q = Queue::open(d.path(), cfg(), "mx.test").unwrap();
    q.set_keep_cap(10);
    q.enqueue(env("a@x", &["b@y"]), Arc::new(b"first\r\n".to_vec()))
        .await
        .unwrap();
    assert_eq!(q.kept_bytes(), 7);
    q.enqueue(env("a@x", &["c@y"]), Arc::new(b"second\r\n".to_vec()))
        .await
        .unwrap();
    assert_eq!(q.kept_bytes(), 7, "over the bound: read from the file");
    let t = Arc::new(Scripted {
        script: Mutex::new(
            [(
                "b@y".to_string(),
                vec![
                    Outcome::Temporary("451 4.3.0 later".into()),
                    Outcome::Delivered,
                ],
            )]
            .into(),
        ),
        delivered: Mutex::default(),
    });
    let stop = CancellationToken::new();
    tokio::spawn(q.clone().run(t.clone(), stop.clone()));
    wait_until(&q, |q| q.is_empty()).await;
    stop.cancel();
    let mut got = t.delivered.lock().unwrap().clone();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("b@y".to_string(), b"first\r\n".to_vec()),
            ("c@y".to_string(), b"second\r\n".to_vec()),
        ]
    );
    assert_eq!(q.kept_bytes(), 0);
}

#[tokio::test]
async fn a_finished_file_is_rewritten_for_the_next_message_and_spares_are_never_loaded() {
    use std::os::unix::fs::MetadataExt;
    let (d, q, _t, stop) = running(always_delivers());
    let big = Arc::new(vec![b'x'; 100_000]);
    let first = q.enqueue(env("a@x", &["b@y"]), big).await.unwrap();
    let inode = std::fs::metadata(d.path().join(format!("{first}.q")))
        .unwrap()
        .ino();
    wait_until(&q, |q| q.is_empty()).await;
    let spare = d.path().join(format!("{first}.spare"));
    assert_eq!(std::fs::metadata(&spare).unwrap().ino(), inode);
    assert_eq!(queue_names(d.path()), Vec::<String>::new());

    // The next message takes the spare's inode, cut to its own length.
    let small = Arc::new(b"small\r\n".to_vec());
    let second = q.write(&env("c@x", &["d@y"]), small.clone()).await.unwrap();
    assert!(!spare.exists());
    let p = d.path().join(format!("{second}.q"));
    assert_eq!(std::fs::metadata(&p).unwrap().ino(), inode);
    let l = record::load(&p).unwrap().unwrap();
    assert_eq!(l.data, *small);
    assert_eq!(l.envelope.sender, "c@x");
    assert!(l.changes.is_empty() && !l.torn_tail);
    stop.cancel();

    // A spare half rewritten (killed before its rename) is not an entry
    // after a restart, and is kept for reuse.
    std::fs::write(d.path().join("X.spare"), b"MSGDQ1\n garbage").unwrap();
    let q2 = Queue::open(d.path(), cfg(), "mx.test").unwrap();
    let ids: Vec<String> = q2.list().into_iter().map(|i| i.id).collect();
    assert_eq!(ids, vec![second.clone()]);
    let third = q2.write(&env("e@x", &["f@y"]), small).await.unwrap();
    assert!(!d.path().join("X.spare").exists());
    assert_eq!(
        record::load(&d.path().join(format!("{third}.q")))
            .unwrap()
            .unwrap()
            .envelope
            .sender,
        "e@x"
    );
}

#[test]
fn queue_ids_from_one_queue_are_distinct_and_fixed_width() {
    let d = tempfile::tempdir().unwrap();
    let q = Queue::open(d.path(), cfg(), "mx.test").unwrap();
    // Many in one microsecond: the sequence in the Queue tells them apart.
    let ids: Vec<String> = (0..20_000).map(|_| q.new_id()).collect();
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len());
    assert!(ids
        .iter()
        .all(|i| i.len() == 21 && i.bytes().all(|b| b.is_ascii_hexdigit())));
}
