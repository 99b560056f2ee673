//! The rest of the Sun schema honoured at RCPT, in the queue and at
//! login, over the embedded directory (docs/directory.md); the same fields
//! read from LDAP are checked in `directory::ldap::tests::sun_schema_*`.

use super::resolve::{resolve, resolve_from, Policy};
use super::session::{Flavor, Verdict};
use crate::config::{Config, DeletedMail};
use crate::deliver::{Delivery, Envelope, Outcome, Target};
use crate::directory::embedded::{self, GroupInfo};
use crate::directory::{AuthResult, EntryStatus};
use crate::services::Services;
use crate::smtp::tests::e2e::test_services;

/// The e2e services plus the schema's cases in the embedded file:
/// `msgq` (2 messages at most), `gone` (deleted), `routed` (to `target`),
/// `out` (routed elsewhere), `ping`/`pong` (routed to each other), `p`
/// in the inactive domain paused.test, `x` in the deleted domain
/// gone.test, lists `closed` (inactive), `removed` (deleted), `mod`
/// (only alice, `mailto:ext@trusted.test` and the domain trusted.test may
/// post) and `outer` (active, containing `closed` and `mod`).
fn services(dir: &std::path::Path, edit: impl FnOnce(&mut Config)) -> Services {
    let mut c = Config::default();
    c.server.data_dir = dir.to_path_buf();
    embedded::edit(&c.directory_path(), |d| {
        let user = |d: &mut embedded::Data, a: &str| embedded::add_user(d, a, "pw", None, true);
        user(d, "msgq@example.test")?;
        d.users
            .get_mut("msgq@example.test")
            .unwrap()
            .account
            .msg_quota = Some(2);
        user(d, "gone@example.test")?;
        let g = &mut d.users.get_mut("gone@example.test").unwrap().account;
        // The provisioning marks a user deleted; `active` is forced off.
        g.deleted = true;
        user(d, "routed@example.test")?;
        user(d, "target@example.test")?;
        d.users
            .get_mut("routed@example.test")
            .unwrap()
            .account
            .routing_address = Some("target@example.test".into());
        user(d, "out@example.test")?;
        d.users
            .get_mut("out@example.test")
            .unwrap()
            .account
            .routing_address = Some("someone@elsewhere.example".into());
        user(d, "ping@example.test")?;
        user(d, "pong@example.test")?;
        d.users
            .get_mut("ping@example.test")
            .unwrap()
            .account
            .routing_address = Some("pong@example.test".into());
        d.users
            .get_mut("pong@example.test")
            .unwrap()
            .account
            .routing_address = Some("ping@example.test".into());
        user(d, "p@paused.test")?;
        user(d, "x@gone.test")?;
        d.domain_info
            .entry("paused.test".into())
            .or_default()
            .status = EntryStatus::Inactive;
        d.domain_info.entry("gone.test".into()).or_default().status = EntryStatus::Deleted;
        for (list, status) in [
            ("closed@example.test", EntryStatus::Inactive),
            ("removed@example.test", EntryStatus::Deleted),
            ("mod@example.test", EntryStatus::Active),
        ] {
            d.aliases
                .insert(list.into(), vec!["target@example.test".into()]);
            d.groups.insert(
                list.into(),
                GroupInfo {
                    status,
                    ..GroupInfo::default()
                },
            );
        }
        d.aliases.insert(
            "nobody@example.test".into(),
            vec!["target@example.test".into()],
        );
        d.groups.insert(
            "nobody@example.test".into(),
            GroupInfo {
                allowed_broadcasters: vec!["not an address".into()],
                ..GroupInfo::default()
            },
        );
        let m = d.groups.get_mut("mod@example.test").unwrap();
        m.allowed_broadcasters = vec![
            "alice@example.test".into(),
            "mailto:Ext@Trusted.test".into(),
        ];
        m.allowed_domains = vec!["partner.test".into()];
        m.aliases = vec!["moderated@example.test".into()];
        d.aliases.insert(
            "outer@example.test".into(),
            vec![
                "closed@example.test".into(),
                "mod@example.test".into(),
                "alice@example.test".into(),
            ],
        );
        Ok(())
    })
    .unwrap();
    test_services(dir, edit)
}

fn addresses(v: &Verdict) -> Vec<String> {
    match v {
        Verdict::Accept(t) => {
            let mut a: Vec<String> = t.iter().map(|t| t.address.clone()).collect();
            a.sort();
            a
        }
        other => panic!("expected Accept, got {other:?}"),
    }
}

fn smtp(s: &Services) -> Policy {
    Policy::for_services(Flavor::Smtp, s)
}

#[tokio::test]
async fn deleted_user_is_refused_5_1_1_or_kept_per_policy_and_never_logs_in() {
    let dir = tempfile::tempdir().unwrap();
    let s = services(dir.path(), |_| {});
    let d = &s.directory;
    for flavor in [Flavor::Smtp, Flavor::Lmtp] {
        let p = Policy::for_services(flavor, &s);
        assert_eq!(
            resolve(d, &p, "gone@example.test").await,
            Verdict::NoSuchUser,
            "{flavor:?}"
        );
    }
    // Inactive stays "disabled" (550 5.2.1).
    assert_eq!(
        resolve(d, &smtp(&s), "carol@example.test").await,
        Verdict::Disabled
    );
    assert_eq!(
        d.authenticate("gone@example.test", "pw", "").await.unwrap(),
        AuthResult::Inactive
    );

    let dir2 = tempfile::tempdir().unwrap();
    let s2 = services(dir2.path(), |c| {
        c.provision.deleted_mail = DeletedMail::Keep
    });
    for flavor in [Flavor::Smtp, Flavor::Lmtp] {
        let p = Policy::for_services(flavor, &s2);
        assert_eq!(
            addresses(&resolve(&s2.directory, &p, "gone@example.test").await),
            ["gone@example.test"]
        );
    }
    assert_eq!(
        s2.directory
            .authenticate("gone@example.test", "pw", "")
            .await
            .unwrap(),
        AuthResult::Inactive,
        "kept mail, still no login"
    );
    assert_eq!(
        resolve(&s2.directory, &smtp(&s2), "carol@example.test").await,
        Verdict::Disabled
    );
}

#[tokio::test]
async fn group_status_inactive_defers_deleted_refuses_nested_ones_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let s = services(dir.path(), |_| {});
    let (d, p) = (&s.directory, smtp(&s));
    assert_eq!(
        resolve(d, &p, "closed@example.test").await,
        Verdict::Suspended
    );
    assert_eq!(
        resolve(d, &p, "removed@example.test").await,
        Verdict::NoSuchUser
    );
    // outer: the inactive nested list is skipped, the restricted one is
    // not checked without a sender, alice is reached.
    assert_eq!(
        addresses(&resolve(d, &p, "outer@example.test").await),
        ["alice@example.test", "target@example.test"]
    );
    assert_eq!(
        addresses(&resolve_from(d, &p, Some("bob@example.test"), "outer@example.test").await),
        ["alice@example.test"],
        "bob may not post to the nested mod list"
    );
}

#[tokio::test]
async fn allowed_broadcasters_and_domains_decide_who_posts_550_5_7_1() {
    let dir = tempfile::tempdir().unwrap();
    let s = services(dir.path(), |_| {});
    let (d, p) = (&s.directory, smtp(&s));
    for sender in [
        "alice@example.test",
        "ALICE@example.test",
        "ext@trusted.test",
        "anyone@partner.test",
    ] {
        assert_eq!(
            addresses(&resolve_from(d, &p, Some(sender), "mod@example.test").await),
            ["target@example.test"],
            "{sender}"
        );
    }
    for sender in ["bob@example.test", "x@sub.partner.test", ""] {
        assert_eq!(
            resolve_from(d, &p, Some(sender), "mod@example.test").await,
            Verdict::NotAllowed,
            "{sender:?}"
        );
    }
    // The list's other address is the same list.
    assert_eq!(
        resolve_from(d, &p, Some("bob@example.test"), "moderated@example.test").await,
        Verdict::NotAllowed
    );
    // A restriction that names no valid address lets nobody post.
    assert_eq!(
        resolve_from(d, &p, Some("alice@example.test"), "nobody@example.test").await,
        Verdict::NotAllowed
    );
    // Unrestricted lists take anyone, the null sender too.
    assert_eq!(
        addresses(&resolve_from(d, &p, Some(""), "team@example.test").await),
        ["alice@example.test", "bob@example.test"]
    );
}

#[tokio::test]
async fn routing_address_rewrites_the_recipient_loop_safe() {
    let dir = tempfile::tempdir().unwrap();
    let s = services(dir.path(), |_| {});
    let (d, p) = (&s.directory, smtp(&s));
    assert_eq!(
        addresses(&resolve(d, &p, "routed@example.test").await),
        ["target@example.test"]
    );
    // Routed outside the site: like a forward (no queue here: refused).
    assert_eq!(resolve(d, &p, "out@example.test").await, Verdict::OffSite);
    // A loop ends at the cap/seen set: nothing to deliver to.
    assert_eq!(
        resolve(d, &p, "ping@example.test").await,
        Verdict::NoSuchUser
    );
}

#[tokio::test]
async fn domain_status_inactive_defers_mail_and_logins_deleted_is_not_local() {
    let dir = tempfile::tempdir().unwrap();
    let s = services(dir.path(), |_| {});
    let d = &s.directory;
    for flavor in [Flavor::Smtp, Flavor::Lmtp] {
        let p = Policy::for_services(flavor, &s);
        assert_eq!(
            resolve(d, &p, "p@paused.test").await,
            Verdict::Suspended,
            "{flavor:?}"
        );
    }
    assert_eq!(
        resolve(d, &smtp(&s), "x@gone.test").await,
        Verdict::RelayDenied
    );
    assert!(!d.is_local_domain("gone.test").await.unwrap());
    assert!(d.is_local_domain("paused.test").await.unwrap());
    assert!(d.authenticate("p@paused.test", "pw", "").await.is_err());
    assert_eq!(
        d.authenticate("x@gone.test", "pw", "").await.unwrap(),
        AuthResult::Inactive
    );
}

#[tokio::test]
async fn message_quota_is_enforced_at_delivery_like_the_byte_quota() {
    let dir = tempfile::tempdir().unwrap();
    let s = services(dir.path(), |_| {});
    let targets = match resolve(&s.directory, &smtp(&s), "msgq@example.test").await {
        Verdict::Accept(t) => t,
        other => panic!("{other:?}"),
    };
    assert_eq!(targets[0].msg_quota, Some(2));
    let d = Delivery::from_services(&s);
    let mut outcomes = Vec::new();
    for i in 0..3 {
        let mut tx = d.start(
            &format!("Q{i}"),
            Envelope {
                sender: "s@else.example".into(),
                ..Envelope::default()
            },
        );
        tx.add_rcpt(Target {
            msg_quota: Some(2),
            ..Target::mailbox("msgq@example.test".into())
        });
        let out = tx
            .body(std::sync::Arc::new(b"Subject: q\r\n\r\nx\r\n".to_vec()))
            .await;
        tx.commit().await;
        outcomes.push(out[0].clone());
    }
    assert_eq!(
        outcomes,
        [
            Outcome::Delivered,
            Outcome::Delivered,
            Outcome::OverQuota { permanent: false }
        ]
    );
}
