//! Sieve scripts over messages, through `evaluate` (no store).

use super::*;
use crate::store::SieveLimits;

const MSG: &[u8] = b"From: Ann <ann@example.org>\r\nTo: bob@example.test\r\nSubject: Report for Q3\r\nMessage-ID: <m1@example.org>\r\n\r\nThe quarterly numbers.\r\n";

fn user(script: &str) -> UserSieve {
    let mut u = UserSieve {
        active: "main".into(),
        ..UserSieve::default()
    };
    u.scripts.insert("main".into(), script.as_bytes().to_vec());
    u.mailboxes.insert("INBOX".into());
    u.mailboxes.insert("Work".into());
    u
}

fn plan_for(u: &UserSieve, data: &[u8]) -> Plan {
    evaluate(
        &runtime("mx.example.test"),
        u,
        "bob@example.test",
        "ann@example.org",
        "bob+lists@example.test",
        data,
    )
}

fn plan(script: &str) -> Plan {
    plan_for(&user(script), MSG)
}

fn boxes(p: &Plan) -> Vec<&str> {
    p.copies.iter().map(|c| c.mailbox.as_str()).collect()
}

#[test]
fn rfc5228_syntax_errors_are_reported_at_compile() {
    let e = compile(b"if header :contains \"Subject\" {").unwrap_err();
    assert!(!e.is_empty());
    assert!(compile(b"require \"fileinto\"; fileinto \"Work\";").is_ok());
    assert!(compile(&[0xff, 0xfe]).is_err());
}

#[test]
fn rfc5228_2_10_2_no_action_is_the_implicit_keep() {
    assert_eq!(plan("# nothing\r\n"), Plan::keep());
}

#[test]
fn rfc5228_4_1_fileinto_with_header_test() {
    let p = plan("require \"fileinto\";\r\nif header :contains \"Subject\" \"Q3\" { fileinto \"Work\"; }\r\n");
    assert_eq!(boxes(&p), vec!["Work"]);
    let p = plan("require \"fileinto\";\r\nif header :contains \"Subject\" \"nope\" { fileinto \"Work\"; }\r\n");
    assert_eq!(boxes(&p), vec!["INBOX"]);
}

#[test]
fn rfc5490_fileinto_create_is_carried() {
    let p = plan("require [\"fileinto\", \"mailbox\"];\r\nfileinto :create \"New/Box\";\r\n");
    assert_eq!(p.copies.len(), 1);
    assert!(p.copies[0].create);
}

#[test]
fn rfc5490_mailboxexists() {
    let p = plan("require [\"fileinto\", \"mailbox\"];\r\nif mailboxexists \"Work\" { fileinto \"Work\"; } else { discard; }\r\n");
    assert_eq!(boxes(&p), vec!["Work"]);
    let p = plan("require [\"fileinto\", \"mailbox\"];\r\nif mailboxexists \"Gone\" { fileinto \"Gone\"; } else { discard; }\r\n");
    assert!(p.copies.is_empty());
}

#[test]
fn rfc5228_4_5_discard_stores_nothing() {
    let p = plan("discard;\r\n");
    assert!(p.copies.is_empty());
    assert!(p.reject.is_none());
}

#[test]
fn rfc5429_reject_refuses_with_the_reason() {
    let p = plan("require \"reject\";\r\nreject \"no thanks\r\nat all\";\r\n");
    assert!(p.copies.is_empty());
    assert_eq!(p.reject.as_deref(), Some("no thanks at all"));
    let p = plan("require \"ereject\";\r\nereject \"go away\";\r\n");
    assert_eq!(p.reject.as_deref(), Some("go away"));
}

#[test]
fn rfc5232_imap4flags_on_keep_and_fileinto() {
    let p = plan("require [\"imap4flags\", \"fileinto\"];\r\naddflag \"\\\\Seen\";\r\nfileinto :flags \"$Work\" \"Work\";\r\nkeep;\r\n");
    assert_eq!(boxes(&p), vec!["Work", "INBOX"]);
    assert_eq!(p.copies[0].flags, vec!["$Work".to_string()]);
    assert_eq!(p.copies[1].flags, vec!["\\Seen".to_string()]);
}

#[test]
fn rfc5228_5_4_envelope_and_rfc5233_subaddress() {
    let p = plan("require [\"envelope\", \"subaddress\", \"fileinto\"];\r\nif envelope :detail \"to\" \"lists\" { fileinto \"Work\"; }\r\n");
    assert_eq!(boxes(&p), vec!["Work"]);
    let p = plan("require [\"envelope\", \"fileinto\"];\r\nif envelope :domain \"from\" \"example.org\" { fileinto \"Work\"; }\r\n");
    assert_eq!(boxes(&p), vec!["Work"]);
}

#[test]
fn rfc5173_body_rfc5229_variables_rfc5231_relational() {
    let p = plan("require [\"body\", \"fileinto\"];\r\nif body :contains \"quarterly\" { fileinto \"Work\"; }\r\n");
    assert_eq!(boxes(&p), vec!["Work"]);
    let p = plan("require [\"variables\", \"fileinto\"];\r\nif header :matches \"Subject\" \"Report for *\" { set \"q\" \"${1}\"; fileinto \"R-${q}\"; }\r\n");
    assert_eq!(boxes(&p), vec!["R-Q3"]);
    let p = plan("require [\"relational\", \"comparator-i;ascii-numeric\", \"fileinto\"];\r\nif header :count \"ge\" :comparator \"i;ascii-numeric\" \"To\" \"1\" { fileinto \"Work\"; }\r\n");
    assert_eq!(boxes(&p), vec!["Work"]);
}

#[test]
fn rfc5260_date() {
    let msg = b"From: ann@example.org\r\nDate: Tue, 1 Dec 2026 10:00:00 +0000\r\n\r\nx\r\n";
    let p = plan_for(
        &user("require [\"date\", \"fileinto\"];\r\nif date :is \"date\" \"year\" \"2026\" { fileinto \"Work\"; }\r\n"),
        msg,
    );
    assert_eq!(boxes(&p), vec!["Work"]);
}

#[test]
fn rfc5228_4_2_redirect_and_rfc3894_copy() {
    let p = plan("redirect \"carol@example.net\";\r\n");
    assert!(p.copies.is_empty());
    assert_eq!(p.outgoing.len(), 1);
    assert_eq!(p.outgoing[0].to, "carol@example.net");
    assert!(p.outgoing[0].message.is_none());
    let p = plan("require \"copy\";\r\nredirect :copy \"carol@example.net\";\r\n");
    assert_eq!(boxes(&p), vec!["INBOX"]);
    assert_eq!(p.outgoing.len(), 1);
}

#[test]
fn redirects_are_bounded() {
    let mut s = String::from("require \"copy\";\r\n");
    for i in 0..10 {
        s.push_str(&format!("redirect :copy \"r{i}@example.net\";\r\n"));
    }
    let p = plan(&s);
    assert!(p.outgoing.len() <= MAX_REDIRECTS);
}

#[test]
fn rfc5230_vacation_reply_carries_its_rate_limit_id() {
    let p = plan("require \"vacation\";\r\nvacation :days 3 \"Away\";\r\n");
    assert_eq!(boxes(&p), vec!["INBOX"]);
    assert_eq!(p.outgoing.len(), 1);
    let o = &p.outgoing[0];
    assert_eq!(o.to, "ann@example.org");
    let (_, period) = o.vacation.clone().unwrap();
    assert_eq!(period, 3 * 86400);
    let m = String::from_utf8(o.message.clone().unwrap()).unwrap();
    assert!(m.contains("Auto-Submitted: auto-replied"), "{m}");
    assert!(m.contains("Away"));
}

#[test]
fn rfc5230_4_5_no_vacation_to_lists_or_auto_submitted() {
    let s = "require \"vacation\";\r\nvacation \"Away\";\r\n";
    for extra in [
        "List-Id: <l.example.org>\r\n",
        "List-Unsubscribe: <mailto:u@example.org>\r\n",
        "Precedence: list\r\n",
        "Precedence: junk\r\n",
        "Precedence: bulk\r\n",
        "Auto-Submitted: auto-generated\r\n",
    ] {
        let msg = format!(
            "From: ann@example.org\r\nTo: bob@example.test\r\n{extra}Subject: x\r\n\r\nx\r\n"
        );
        let p = plan_for(&user(s), msg.as_bytes());
        assert!(p.outgoing.is_empty(), "{extra}");
    }
}

#[test]
fn rfc5230_4_5_no_vacation_to_the_null_sender_or_daemons() {
    let u = user("require \"vacation\";\r\nvacation \"Away\";\r\n");
    for sender in ["", "MAILER-DAEMON@example.org", "owner-list@example.org"] {
        let p = evaluate(
            &runtime("mx.example.test"),
            &u,
            "bob@example.test",
            sender,
            "bob@example.test",
            MSG,
        );
        assert!(p.outgoing.is_empty(), "{sender:?}");
    }
}

#[test]
fn rfc6609_include_from_the_users_own_scripts() {
    let mut u = user("require [\"include\"];\r\ninclude :personal \"lib\";\r\n");
    u.scripts.insert(
        "lib".into(),
        b"require \"fileinto\";\r\nfileinto \"Work\";\r\n".to_vec(),
    );
    assert_eq!(boxes(&plan_for(&u, MSG)), vec!["Work"]);
    // A missing include is an error: implicit keep.
    let u = user("require [\"include\"];\r\ninclude :personal \"none\";\r\n");
    assert_eq!(plan_for(&u, MSG), Plan::keep());
    // An include loop ends at the bound: implicit keep.
    let mut u = user("require [\"include\"];\r\ninclude :personal \"main\";\r\n");
    u.scripts.insert(
        "main".into(),
        b"require [\"include\"];\r\ninclude :personal \"main\";\r\n".to_vec(),
    );
    let _ = plan_for(&u, MSG);
}

#[test]
fn a_runaway_script_ends_at_the_cpu_limit_with_the_implicit_keep() {
    let mut s = String::from("require [\"variables\", \"fileinto\"];\r\n");
    // Many instructions: a long chain of tests.
    for _ in 0..30_000 {
        s.push_str("if true { set \"a\" \"b\"; }\r\n");
    }
    s.push_str("fileinto \"Work\";\r\n");
    let mut u = user(&s);
    u.scripts.insert("main".into(), s.into_bytes());
    // Over the compiler's size bound or the runtime's CPU limit: keep.
    assert_eq!(plan_for(&u, MSG), Plan::keep());
}

#[tokio::test]
async fn a_changed_script_takes_effect_at_the_next_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let services = crate::services::test_services(dir.path(), |_| {});
    let store = services.store().clone();
    let filter = Filter::for_services(&services).unwrap();
    let user = "bob@example.test";
    let put = |text: &'static str| {
        let store = store.clone();
        async move {
            store
                .sieve_put(
                    user,
                    "main",
                    text.as_bytes().to_vec(),
                    SieveLimits::default(),
                )
                .await
                .unwrap()
                .unwrap();
        }
    };
    let deliver = || filter.plan(&store, user, "ann@example.org", user, MSG);
    put("require \"fileinto\"; fileinto \"Work\";").await;
    store
        .sieve_set_active(user, Some("main"))
        .await
        .unwrap()
        .unwrap();
    let p = deliver().await.unwrap().unwrap();
    assert_eq!(boxes(&p), vec!["Work"]);
    assert_eq!(store.compiled_sieve().len(), 1, "compiled once, kept");
    let p = deliver().await.unwrap().unwrap();
    assert_eq!(boxes(&p), vec!["Work"]);
    assert_eq!(store.compiled_sieve().len(), 1);

    // PUTSCRIPT with new text: the next delivery runs the new script.
    put("require \"fileinto\"; fileinto \"Other\";").await;
    assert_eq!(
        store.compiled_sieve().len(),
        0,
        "PUTSCRIPT drops the user's entries"
    );
    let p = deliver().await.unwrap().unwrap();
    assert_eq!(boxes(&p), vec!["Other"]);

    // An entry left from the old text (another handle wrote the script)
    // is not used: the digest of the source differs.
    let old = compile(b"require \"fileinto\"; fileinto \"Work\";").unwrap();
    let cache = store.compiled_sieve();
    cache.insert(
        user,
        "main",
        crate::store::CompiledScripts::digest(b"stale"),
        old,
    );
    let p = deliver().await.unwrap().unwrap();
    assert_eq!(boxes(&p), vec!["Other"]);

    // RENAMESCRIPT and SETACTIVE off drop them too.
    store
        .sieve_rename(user, "main", "next")
        .await
        .unwrap()
        .unwrap();
    assert!(store.compiled_sieve().is_empty());
    let p = deliver().await.unwrap().unwrap();
    assert_eq!(boxes(&p), vec!["Other"]);
    store.sieve_set_active(user, None).await.unwrap().unwrap();
    assert!(store.compiled_sieve().is_empty());
    assert!(deliver().await.unwrap().is_none());
}

/// Final delivery reads the user and its active script together
/// (`Store::delivery_user`): a new user is created first and has none.
#[tokio::test]
async fn delivery_user_creates_a_new_user_and_names_the_active_script() {
    let dir = tempfile::tempdir().unwrap();
    let services = crate::services::test_services(dir.path(), |_| {});
    let store = services.store().clone();
    let fresh = "new@example.test";
    assert_eq!(store.delivery_user(fresh, None).await.unwrap(), None);
    assert!(store
        .list(fresh)
        .await
        .unwrap()
        .iter()
        .any(|m| m.name == "INBOX"));
    let user = "bob@example.test";
    store.ensure_user(user, None).await.unwrap();
    assert_eq!(store.delivery_user(user, None).await.unwrap(), None);
    store
        .sieve_put(user, "main", b"keep;".to_vec(), SieveLimits::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store.delivery_user(user, None).await.unwrap(),
        None,
        "not active yet"
    );
    store
        .sieve_set_active(user, Some("main"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store.delivery_user(user, None).await.unwrap().as_deref(),
        Some("main")
    );
}
