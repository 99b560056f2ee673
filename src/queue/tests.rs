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
    }
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
    let d = tempfile::tempdir().unwrap();
    let q = Queue::open(d.path(), cfg(), "mx.test").unwrap();
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
    q.enqueue(env("a@x", &["b@y", "c@y"]), Arc::new(b"hello\r\n".to_vec()))
        .await
        .unwrap();
    wait_until(&q, |q| q.is_empty()).await;
    stop.cancel();
    let got = t.delivered.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.iter().all(|(_, d)| d == b"hello\r\n"));
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn permanent_failure_bounces_to_the_sender_but_never_to_null() {
    let d = tempfile::tempdir().unwrap();
    let q = Queue::open(d.path(), cfg(), "mx.test").unwrap();
    let t = Arc::new(Scripted {
        script: Mutex::new(
            [(
                "b@y".to_string(),
                vec![Outcome::Permanent("550 5.1.1 no such user".into())],
            )]
            .into(),
        ),
        delivered: Mutex::default(),
    });
    let stop = CancellationToken::new();
    tokio::spawn(q.clone().run(t.clone(), stop.clone()));
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
