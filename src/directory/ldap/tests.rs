//! Tests against a real slapd (tests/ldap): each test starts its own.

use std::time::{Duration, Instant};

use super::testslapd::{free_port, Slapd, TlsFiles, BASE_DN, BIND_DN, BIND_PASSWORD};
use super::*;
use crate::config::Config;
use crate::directory::Directory;

fn config(urls: &[&str]) -> Config {
    let mut c = Config::default();
    c.directory.backend = "ldap".parse().unwrap();
    let l = &mut c.directory.ldap;
    l.urls = urls.iter().map(|u| u.to_string()).collect();
    l.base_dn = BASE_DN.into();
    l.bind_dn = BIND_DN.into();
    l.bind_password = BIND_PASSWORD.into();
    l.connect_timeout = 2;
    l.operation_timeout = 2;
    c
}

fn ldap(c: &Config) -> Ldap {
    Ldap::open(c).expect("open")
}

/// A URL nothing listens on (connection refused).
fn dead_url() -> String {
    format!("ldap://127.0.0.1:{}/", free_port())
}

fn user(r: Option<Recipient>) -> Account {
    match r {
        Some(Recipient::User(a)) => a,
        other => panic!("expected a user, got {other:?}"),
    }
}

fn list(r: Option<Recipient>) -> Vec<String> {
    match r {
        Some(Recipient::List(l)) => {
            let mut m = l.members;
            m.sort();
            m
        }
        other => panic!("expected a list, got {other:?}"),
    }
}

fn is_temporary<T: std::fmt::Debug>(r: Result<T, DirError>) -> bool {
    matches!(r, Err(DirError::Temporary(_)))
}

#[tokio::test]
async fn lookup_by_mail_maps_every_account_attribute() {
    let s = Slapd::start();
    let l = ldap(&config(&[&s.url]));
    let a = user(l.lookup("alice@example.test").await.unwrap());
    assert_eq!(
        a,
        Account {
            address: "alice@example.test".into(),
            aliases: vec![
                "alice.smith@example.test".into(),
                "alice@second.test".into()
            ],
            active: true,
            quota: Some(104857600),
            mail_host: Some("store1.test".into()),
            partition: Some("primary".into()),
            forward: vec![],
            keep_mailbox: true,
            ..Account::new("alice@example.test")
        }
    );
}

#[tokio::test]
async fn lookup_by_alternate_and_equivalent_address_finds_the_same_user() {
    let s = Slapd::start();
    let l = ldap(&config(&[&s.url]));
    for addr in ["alice.smith@example.test", "alice@second.test"] {
        let a = user(l.lookup(addr).await.unwrap());
        assert_eq!(a.address, "alice@example.test", "{addr}");
    }
}

#[tokio::test]
async fn lookup_through_directory_is_case_insensitive_and_lowercases() {
    let s = Slapd::start();
    let d = Directory::open(&config(&[&s.url])).unwrap();
    // Stored as "Bob@Example.test".
    let a = user(d.lookup(" BOB@example.TEST ").await.unwrap());
    assert_eq!(a.address, "bob@example.test");
    assert_eq!(a.mail_host.as_deref(), Some("store2.test"));
    assert_eq!(a.partition.as_deref(), Some("secondary"));
    assert_eq!(a.quota, None);
    // No mailDeliveryOption: keep a mailbox.
    assert!(a.keep_mailbox);
    assert!(a.active);
}

#[tokio::test]
async fn forwarding_quota_and_status_attributes() {
    let s = Slapd::start();
    let l = ldap(&config(&[&s.url]));
    let carol = user(l.lookup("carol@example.test").await.unwrap());
    assert_eq!(carol.forward, vec!["carol@elsewhere.test".to_string()]);
    assert!(!carol.keep_mailbox, "mailDeliveryOption forward only");

    let erin = user(l.lookup("erin@example.test").await.unwrap());
    assert_eq!(erin.quota, Some(1024));
    assert!(erin.keep_mailbox, "mailbox and forward");
    assert_eq!(erin.forward, vec!["erin@elsewhere.test".to_string()]);

    let frank = user(l.lookup("frank@example.test").await.unwrap());
    assert_eq!(frank.quota, None, "mailQuota -1 is no quota");
    assert!(frank.active, "inetUserStatus Active");

    // mailUserStatus: Disabled (case-insensitive), inetUserStatus active.
    let dave = user(l.lookup("dave@example.test").await.unwrap());
    assert!(!dave.active);
}

#[tokio::test]
async fn unknown_address_is_none() {
    let s = Slapd::start();
    let l = ldap(&config(&[&s.url]));
    assert_eq!(l.lookup("nobody@example.test").await.unwrap(), None);
    assert_eq!(l.lookup("").await.unwrap(), None);
}

#[tokio::test]
async fn group_expands_address_and_dn_members_and_nested_groups() {
    let s = Slapd::start();
    let l = ldap(&config(&[&s.url]));
    let expected: Vec<String> = [
        "alice@example.test",
        "bob@example.test",
        "erin@example.test",
        "partner@elsewhere.test",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // staff: uniqueMember alice, bob (with #'0101'B), team (nested: erin,
    // staff again = a cycle, deep1..deep6 chain), a missing DN, and
    // mgrpRFC822MailMember partner. carol sits in deep6, beyond depth 5.
    assert_eq!(
        list(l.lookup("staff@example.test").await.unwrap()),
        expected
    );
    assert_eq!(
        list(l.lookup("everyone@example.test").await.unwrap()),
        expected,
        "by the group's alternate address"
    );
    // team: erin, and staff's members through the cycle.
    assert_eq!(list(l.lookup("team@example.test").await.unwrap()), expected);
}

/// The Sun schema's mgrpErrorsTo (a `mailto:` URL or an address) is the
/// list's errors-to address; a group without one has none.
#[tokio::test]
async fn group_errors_to_is_read_from_mgrp_errors_to() {
    let s = Slapd::start();
    let l = ldap(&config(&[&s.url]));
    match l.lookup("staff@example.test").await.unwrap() {
        Some(Recipient::List(g)) => {
            assert_eq!(g.errors_to.as_deref(), Some("staff-owner@example.test"))
        }
        other => panic!("{other:?}"),
    }
    match l.lookup("team@example.test").await.unwrap() {
        Some(Recipient::List(g)) => assert_eq!(g.errors_to, None),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn group_nesting_depth_is_configurable() {
    let s = Slapd::start();
    let mut c = config(&[&s.url]);
    c.directory.ldap.group_max_depth = 10;
    let l = ldap(&c);
    let members = list(l.lookup("staff@example.test").await.unwrap());
    assert!(
        members.contains(&"carol@example.test".to_string()),
        "{members:?}"
    );

    c.directory.ldap.group_max_depth = 0;
    let l = ldap(&c);
    let members = list(l.lookup("staff@example.test").await.unwrap());
    assert!(
        !members.contains(&"erin@example.test".to_string()),
        "{members:?}"
    );
    assert!(
        members.contains(&"alice@example.test".to_string()),
        "{members:?}"
    );
}

#[tokio::test]
async fn group_members_are_capped() {
    let s = Slapd::start();
    let mut c = config(&[&s.url]);
    c.directory.ldap.group_max_members = 2;
    let l = ldap(&c);
    assert_eq!(list(l.lookup("staff@example.test").await.unwrap()).len(), 2);
}

#[tokio::test]
async fn local_domains_from_directory_entries_and_config() {
    let s = Slapd::start();
    let mut c = config(&[&s.url]);
    c.directory.ldap.local_domains = vec!["Static.Test".into()];
    let d = Directory::open(&c).unwrap();
    assert!(d.is_local_domain("example.test").await.unwrap());
    assert!(d.is_local_domain("SECOND.test").await.unwrap());
    // dc=notmail exists but is no mailDomain.
    assert!(!d.is_local_domain("notmail.test").await.unwrap());
    assert!(!d.is_local_domain("elsewhere.test").await.unwrap());
    assert!(d.is_local_domain("static.test").await.unwrap());
}

#[tokio::test]
async fn static_local_domains_need_no_server() {
    let mut c = config(&[&dead_url()]);
    c.directory.ldap.local_domains = vec!["static.test".into()];
    c.directory.ldap.domain_filter = String::new();
    let l = ldap(&c);
    assert!(l.is_local_domain("static.test").await.unwrap());
    assert!(!l.is_local_domain("other.test").await.unwrap());
}

#[tokio::test]
async fn authenticate_binds_as_the_user() {
    let s = Slapd::start();
    let d = Directory::open(&config(&[&s.url])).unwrap();
    // By uid (bare), by mail, by uid in another case.
    for login in ["alice", "alice@example.test", "ALICE"] {
        match d
            .authenticate(login, "alice-secret", "example.test")
            .await
            .unwrap()
        {
            AuthResult::Ok(a) => assert_eq!(a.address, "alice@example.test", "{login}"),
            other => panic!("{login}: {other:?}"),
        }
    }
    // Bob's mail is only reachable qualified with the default domain.
    assert!(matches!(
        d.authenticate("bob", "bob-secret", "example.test")
            .await
            .unwrap(),
        AuthResult::Ok(_)
    ));
}

#[tokio::test]
async fn authenticate_failures() {
    let s = Slapd::start();
    let d = Directory::open(&config(&[&s.url])).unwrap();
    let f = |r: Result<AuthResult, DirError>| r.unwrap();
    assert_eq!(
        f(d.authenticate("alice", "wrong", "example.test").await),
        AuthResult::Failed(Some("alice@example.test".into()))
    );
    // The same account however it is named: uid or mail.
    assert_eq!(
        f(d.authenticate("Alice@Example.test", "wrong", "").await),
        AuthResult::Failed(Some("alice@example.test".into()))
    );
    assert_eq!(
        f(d.authenticate("nobody", "alice-secret", "example.test")
            .await),
        AuthResult::Failed(None)
    );
    // An empty password would be an unauthenticated bind (RFC 4513 5.1.2).
    assert_eq!(
        f(d.authenticate("alice", "", "example.test").await),
        AuthResult::Failed(None)
    );
    assert_eq!(
        f(d.authenticate("", "x", "example.test").await),
        AuthResult::Failed(None)
    );
    // Right password, no mail attribute: not a mail user.
    assert_eq!(
        f(d.authenticate("nomail", "frank-secret", "example.test")
            .await),
        AuthResult::Failed(None)
    );
}

#[tokio::test]
async fn inactive_only_after_the_right_password() {
    let s = Slapd::start();
    let d = Directory::open(&config(&[&s.url])).unwrap();
    assert_eq!(
        d.authenticate("dave", "dave-secret", "example.test")
            .await
            .unwrap(),
        AuthResult::Inactive
    );
    assert_eq!(
        d.authenticate("dave", "wrong", "example.test")
            .await
            .unwrap(),
        AuthResult::Failed(Some("dave@example.test".into()))
    );
}

#[test]
fn rfc4515_filter_values_are_escaped() {
    let attrs = vec!["uid".to_string(), "mail".to_string()];
    assert_eq!(
        or_filter(&attrs, &["*)(uid=*"]),
        r"(|(uid=\2a\29\28uid=\2a)(mail=\2a\29\28uid=\2a))"
    );
    assert_eq!(filter_eq("mail", "a\\b\0"), r"(mail=a\5cb\00)");
    assert_eq!(or_filter(&attrs[..1], &["x"]), "(uid=x)");
}

#[tokio::test]
async fn filter_injection_in_login_and_address_matches_nobody() {
    let s = Slapd::start();
    let d = Directory::open(&config(&[&s.url])).unwrap();
    // Unescaped, "al*" would find alice alone and the bind would succeed;
    // the others would match every user.
    for login in [
        "al*",
        "*",
        "*)(uid=*",
        "alice)(uid=*",
        "*)(|(uid=*",
        "alice*",
    ] {
        assert_eq!(
            d.authenticate(login, "alice-secret", "").await.unwrap(),
            AuthResult::Failed(None),
            "{login}"
        );
    }
    for addr in ["*", "alice*", "*)(mail=*", "alice@example.test)(mail=*"] {
        assert_eq!(d.lookup(addr).await.unwrap(), None, "{addr}");
    }
    for dom in ["*", "example.*", "x)(associatedDomain=*"] {
        assert!(!d.is_local_domain(dom).await.unwrap(), "{dom}");
    }
}

#[tokio::test]
async fn failover_to_the_second_url_when_the_first_is_dead() {
    let s = Slapd::start();
    let l = ldap(&config(&[&dead_url(), &s.url]));
    let a = user(l.lookup("alice@example.test").await.unwrap());
    assert_eq!(a.address, "alice@example.test");
    assert_eq!(l.preferred_server(), 1);
    assert!(matches!(
        l.authenticate("alice", "alice", "alice-secret")
            .await
            .unwrap(),
        AuthResult::Ok(_)
    ));
}

#[tokio::test]
async fn the_master_dying_mid_run_fails_over_without_an_error() {
    let mut first = Slapd::start();
    let second = Slapd::start();
    let mut c = config(&[&first.url, &second.url]);
    c.directory.ldap.health_check_idle = 3600;
    let l = ldap(&c);
    assert!(l.lookup("alice@example.test").await.unwrap().is_some());
    assert!(matches!(
        l.authenticate("alice", "", "alice-secret").await.unwrap(),
        AuthResult::Ok(_)
    ));
    assert_eq!(l.preferred_server(), 0);
    first.stop();
    // The pooled connections to the first server are dead: the retry
    // connects afresh and lands on the second.
    assert!(l.lookup("bob@example.test").await.unwrap().is_some());
    assert!(matches!(
        l.authenticate("alice", "", "alice-secret").await.unwrap(),
        AuthResult::Ok(_)
    ));
    assert_eq!(l.preferred_server(), 1);
}

#[tokio::test]
async fn failback_to_the_first_url_after_failback_after() {
    let mut first = Slapd::start();
    let second = Slapd::start();
    let mut c = config(&[&first.url, &second.url]);
    c.directory.ldap.failback_after = 1;
    c.directory.cache_ttl = 0;
    let l = ldap(&c);
    first.stop();
    assert!(l.lookup("alice@example.test").await.unwrap().is_some());
    assert_eq!(l.preferred_server(), 1);
    first.run();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(l.lookup("bob@example.test").await.unwrap().is_some());
    assert_eq!(l.preferred_server(), 0);
}

#[tokio::test]
async fn directory_down_is_temporary_everywhere() {
    let mut s = Slapd::start();
    let d = Directory::open(&config(&[&s.url])).unwrap();
    assert!(d.lookup("alice@example.test").await.unwrap().is_some());
    s.stop();
    // Uncached questions only: the cache would still answer the first.
    assert!(is_temporary(d.lookup("bob@example.test").await));
    assert!(is_temporary(d.lookup("nobody@example.test").await));
    assert!(is_temporary(d.is_local_domain("example.test").await));
    assert!(is_temporary(
        d.authenticate("alice", "alice-secret", "example.test")
            .await
    ));
    // Never reached at all.
    let d = Directory::open(&config(&[&dead_url(), &dead_url()])).unwrap();
    assert!(is_temporary(d.lookup("alice@example.test").await));
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_as_temporary() {
    // Accepts connections and says nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ldap://{}/", listener.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let mut c = config(&[&url]);
    c.directory.ldap.connect_timeout = 1;
    c.directory.ldap.operation_timeout = 1;
    let l = ldap(&c);
    let t = Instant::now();
    assert!(is_temporary(l.lookup("alice@example.test").await));
    assert!(is_temporary(l.authenticate("alice", "alice", "x").await));
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    hold.abort();
}

#[tokio::test]
async fn a_wrong_service_password_is_temporary_not_unknown_user() {
    let s = Slapd::start();
    let mut c = config(&[&s.url]);
    c.directory.ldap.bind_password = "wrong".into();
    let l = ldap(&c);
    assert!(is_temporary(l.lookup("alice@example.test").await));
}

#[tokio::test]
async fn cache_counts_hits_and_misses_and_skips_authentication() {
    let mut s = Slapd::start();
    let l = ldap(&config(&[&s.url]));
    assert_eq!(l.cache_stats(), (0, 0));
    l.lookup("alice@example.test").await.unwrap();
    l.lookup("alice@example.test").await.unwrap();
    assert_eq!(l.cache_stats(), (1, 1));
    // Negative answers are cached too.
    assert_eq!(l.lookup("nobody@example.test").await.unwrap(), None);
    assert_eq!(l.lookup("nobody@example.test").await.unwrap(), None);
    assert_eq!(l.cache_stats(), (2, 2));
    assert!(l.is_local_domain("example.test").await.unwrap());
    assert!(l.is_local_domain("example.test").await.unwrap());
    assert_eq!(l.cache_stats(), (3, 3));
    // Authentication is never cached.
    for _ in 0..2 {
        l.authenticate("alice", "", "alice-secret").await.unwrap();
    }
    assert_eq!(l.cache_stats(), (3, 3));
    // The cache answers while the server is gone; a new question cannot.
    s.stop();
    assert!(l.lookup("alice@example.test").await.unwrap().is_some());
    assert!(is_temporary(l.lookup("carol@example.test").await));
    assert!(is_temporary(
        l.authenticate("alice", "", "alice-secret").await
    ));
}

#[tokio::test]
async fn temporary_failures_are_not_cached() {
    let mut s = Slapd::start();
    let l = ldap(&config(&[&s.url]));
    s.stop();
    assert!(is_temporary(l.lookup("alice@example.test").await));
    s.run();
    assert!(l.lookup("alice@example.test").await.unwrap().is_some());
}

#[tokio::test]
async fn zero_ttl_disables_the_cache() {
    let s = Slapd::start();
    let mut c = config(&[&s.url]);
    c.directory.cache_ttl = 0;
    let l = ldap(&c);
    l.lookup("alice@example.test").await.unwrap();
    l.lookup("alice@example.test").await.unwrap();
    assert_eq!(l.cache_stats(), (0, 2));
}

#[tokio::test]
async fn pooled_connections_are_reused_and_replaced_after_a_restart() {
    let mut s = Slapd::start();
    let mut c = config(&[&s.url]);
    c.directory.cache_ttl = 0;
    c.directory.ldap.pool_size = 2;
    // No idle check: the stale connection must be caught by the retry.
    c.directory.ldap.health_check_idle = 3600;
    let l = ldap(&c);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let l = l.clone();
        tasks.push(tokio::spawn(async move {
            let addr = if i % 2 == 0 {
                "alice@example.test"
            } else {
                "bob@example.test"
            };
            l.lookup(addr).await
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap().unwrap().is_some());
    }
    let idle = l.inner.lookups.idle_count();
    assert!((1..=2).contains(&idle), "idle {idle}");
    // The server restarts: pooled connections are dead but look alive.
    s.stop();
    s.run();
    assert!(l.lookup("alice@example.test").await.unwrap().is_some());
    assert!(matches!(
        l.authenticate("alice", "", "alice-secret").await.unwrap(),
        AuthResult::Ok(_)
    ));
    assert!(matches!(
        l.authenticate("alice", "", "alice-secret").await.unwrap(),
        AuthResult::Ok(_)
    ));
}

#[tokio::test]
async fn idle_connections_are_health_checked_before_reuse() {
    let mut s = Slapd::start();
    let mut c = config(&[&s.url]);
    c.directory.cache_ttl = 0;
    c.directory.ldap.health_check_idle = 0;
    let l = ldap(&c);
    assert!(l.lookup("alice@example.test").await.unwrap().is_some());
    assert_eq!(l.inner.lookups.idle_count(), 1);
    s.stop();
    s.run();
    assert!(l.lookup("alice@example.test").await.unwrap().is_some());
}

fn tls_files() -> (TlsFiles, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let pem = ck.cert.pem();
    (
        TlsFiles {
            cert_pem: pem.clone(),
            key_pem: ck.signing_key.serialize_pem(),
        },
        pem,
    )
}

#[tokio::test]
async fn starttls_and_ldaps_with_a_ca_file() {
    let (files, ca) = tls_files();
    let s = Slapd::start_with(Some(&files));
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca).unwrap();

    let mut c = config(&[&s.url]);
    c.directory.ldap.starttls = true;
    c.directory.ldap.ca_file = ca_path.display().to_string();
    let l = ldap(&c);
    assert!(l.lookup("alice@example.test").await.unwrap().is_some());
    assert!(matches!(
        l.authenticate("alice", "", "alice-secret").await.unwrap(),
        AuthResult::Ok(_)
    ));

    let ldaps = s.ldaps_url.clone().unwrap();
    let mut c = config(&[&ldaps]);
    c.directory.ldap.ca_file = ca_path.display().to_string();
    let l = ldap(&c);
    assert!(l.lookup("alice@example.test").await.unwrap().is_some());

    // A certificate nobody vouches for: temporary, not "unknown user".
    let l = ldap(&config(&[&ldaps]));
    assert!(is_temporary(l.lookup("alice@example.test").await));
}

#[test]
fn bad_attribute_name_in_config_is_refused() {
    let mut c = config(&["ldap://127.0.0.1/"]);
    c.directory.ldap.address_attributes = vec!["mail)(uid=*".into()];
    let e = Ldap::open(&c).err().expect("refused").to_string();
    assert!(e.contains("address_attributes"), "{e}");
}

#[test]
fn bind_password_file_is_read_without_its_newline() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pw");
    std::fs::write(&p, "service-secret\n").unwrap();
    let mut c = config(&["ldap://127.0.0.1/"]);
    c.directory.ldap.bind_password = Default::default();
    c.directory.ldap.bind_password_file = p.display().to_string();
    let l = ldap(&c);
    assert_eq!(l.inner.lookups.bind_password(), Some("service-secret"));
}

#[test]
fn unique_member_uid_suffix_is_stripped() {
    assert_eq!(strip_unique_id("uid=a,dc=x#'0101'B"), "uid=a,dc=x");
    assert_eq!(strip_unique_id("uid=a,dc=x"), "uid=a,dc=x");
    assert_eq!(strip_unique_id("cn=a\\#b,dc=x"), "cn=a\\#b,dc=x");
}

#[test]
fn ldap_config_in_the_sample_file_parses_and_unknown_keys_fail() {
    use figment::providers::{Format, Toml};
    let sample: Config = figment::Figment::new()
        .merge(Toml::string(include_str!("../../../etc/msgd.toml")))
        .extract()
        .expect("etc/msgd.toml");
    let d = LdapConfig::default();
    assert_eq!(sample.directory.ldap.domain_filter, d.domain_filter);
    assert_eq!(sample.directory.ldap.attributes.status, d.attributes.status);
    let e = figment::Figment::new()
        .merge(Toml::string("[directory.ldap]\nurl = \"ldap://x/\"\n"))
        .extract::<Config>()
        .unwrap_err();
    assert!(e.to_string().contains("url"), "{e}");
    let e = figment::Figment::new()
        .merge(Toml::string("[directory.ldap.attributes]\nmial = \"x\"\n"))
        .extract::<Config>()
        .unwrap_err();
    assert!(e.to_string().contains("mial"), "{e}");
}

/// Passwords never cross the network in clear: a non-loopback ldap:// URL
/// without StartTLS is refused unless allow_cleartext is set.
#[test]
fn cleartext_ldap_to_a_remote_host_is_refused() {
    use crate::config::LdapConfig;
    let cfg = |urls: &[&str], starttls: bool, allow: bool| LdapConfig {
        urls: urls.iter().map(|u| u.to_string()).collect(),
        starttls,
        allow_cleartext: allow,
        base_dn: "dc=example,dc=test".into(),
        ..LdapConfig::default()
    };
    let remote = cfg(&["ldap://ldap.example.com:389/"], false, false);
    let e = super::cleartext_errors(&remote);
    assert_eq!(e.len(), 1);
    assert!(e[0].contains("allow_cleartext"), "{e:?}");
    assert!(!super::cleartext_errors(&cfg(&["LDAP://10.0.0.5/"], false, false)).is_empty());
    for ok in [
        cfg(
            &[
                "ldap://127.0.0.1:389/",
                "ldap://localhost/",
                "ldap://[::1]:389/",
            ],
            false,
            false,
        ),
        cfg(&["ldaps://ldap.example.com/"], false, false),
        cfg(&["ldap://ldap.example.com/"], true, false),
        cfg(&["ldap://ldap.example.com/"], false, true),
    ] {
        assert!(super::cleartext_errors(&ok).is_empty(), "{:?}", ok.urls);
    }
    // At start too, not only in check-config.
    let mut c = Config::default();
    c.directory.ldap = remote;
    let err = Ldap::open(&c).err().expect("refused at start");
    assert!(format!("{err:#}").contains("in clear"), "{err:#}");
}

/// The credential cache (crate::authcache) over LDAP: the second login is
/// answered without a bind, and a password changed on the server (a new
/// entryCSN / modifyTimestamp) misses at once.
#[tokio::test]
async fn credential_cache_skips_the_bind_until_the_entry_changes() {
    let s = Slapd::start();
    let d = Directory::open(&config(&[&s.url])).unwrap();
    let ok = |r: AuthResult| matches!(r, AuthResult::Ok(a) if a.address == "alice@example.test");
    assert!(ok(d
        .authenticate("alice", "alice-secret", "example.test")
        .await
        .unwrap()));
    assert_eq!(d.auth().cache.len(), 1, "slapd returns entryCSN");
    assert!(ok(d
        .authenticate("alice@example.test", "alice-secret", "")
        .await
        .unwrap()));
    assert_eq!(d.auth().cache.stats().0, 1, "the second login was a hit");
    // The administrator sets a new password (ldappasswd, RFC 3062).
    let out = std::process::Command::new("ldappasswd")
        .args(["-x", "-H", &s.url, "-D", "cn=admin,dc=example,dc=test"])
        .args(["-w", "admin-secret", "-s", "alice-new"])
        .arg("uid=alice,ou=people,dc=example,dc=test")
        .output()
        .expect("ldappasswd (apt-get install -y ldap-utils)");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        d.authenticate("alice", "alice-secret", "example.test")
            .await
            .unwrap(),
        AuthResult::Failed(Some("alice@example.test".into()))
    );
    assert_eq!(d.auth().cache.len(), 0, "the failure forgot the entry");
    assert!(ok(d
        .authenticate("alice", "alice-new", "example.test")
        .await
        .unwrap()));
    // A wrong password after a hit binds (and fails) every time.
    assert!(matches!(
        d.authenticate("alice", "wrong", "example.test")
            .await
            .unwrap(),
        AuthResult::Failed(_)
    ));
    assert_eq!(d.auth().cache.len(), 0);
}

// The rest of the Sun schema (docs/directory.md), on the sch-* entries.

#[tokio::test]
async fn sun_schema_user_attributes_msg_quota_preferred_host_routing_deleted() {
    let s = Slapd::start();
    let l = ldap(&config(&[&s.url]));
    // mailMsgQuota; preferredMailHost stands in for the missing mailHost.
    let a = user(l.lookup("sch-msgq@example.test").await.unwrap());
    assert_eq!(a.msg_quota, Some(2));
    assert_eq!(a.quota, None);
    assert_eq!(a.preferred_host.as_deref(), Some("store1.test"));
    assert_eq!(a.mail_host.as_deref(), Some("store1.test"));
    assert!(a.active && !a.deleted);
    // mailHost wins over preferredMailHost when both exist (alice has no
    // preferredMailHost: her mailHost as before).
    let alice = user(l.lookup("alice@example.test").await.unwrap());
    assert_eq!(alice.msg_quota, None);
    assert_eq!(alice.routing_address, None);
    // inetUserStatus: deleted -> deleted, not active.
    let d = user(l.lookup("sch-deleted@example.test").await.unwrap());
    assert!(d.deleted && !d.active, "{d:?}");
    // dave is inactive ("Disabled"), not deleted.
    let dave = user(l.lookup("dave@example.test").await.unwrap());
    assert!(!dave.deleted && !dave.active);
    // mailRoutingAddress, lowercase.
    let r = user(l.lookup("sch-routed@example.test").await.unwrap());
    assert_eq!(
        r.routing_address.as_deref(),
        Some("sch-target@example.test")
    );
    // Not read when its attribute name is configured empty.
    let mut c = config(&[&s.url]);
    c.directory.ldap.attributes.msg_quota = String::new();
    c.directory.ldap.attributes.routing_address = String::new();
    let l2 = ldap(&c);
    assert_eq!(
        user(l2.lookup("sch-msgq@example.test").await.unwrap()).msg_quota,
        None
    );
    assert_eq!(
        user(l2.lookup("sch-routed@example.test").await.unwrap()).routing_address,
        None
    );
}

#[tokio::test]
async fn sun_schema_deleted_user_cannot_log_in() {
    let s = Slapd::start();
    let d = Directory::open(&config(&[&s.url])).unwrap();
    assert_eq!(
        d.authenticate("sch-deleted", "alice-secret", "example.test")
            .await
            .unwrap(),
        AuthResult::Inactive
    );
    assert!(matches!(
        d.authenticate("sch-msgq", "alice-secret", "example.test")
            .await
            .unwrap(),
        AuthResult::Ok(_)
    ));
}

fn the_list(r: Option<Recipient>) -> crate::directory::List {
    match r {
        Some(Recipient::List(l)) => l,
        other => panic!("expected a list, got {other:?}"),
    }
}

#[tokio::test]
async fn sun_schema_group_status_and_allowed_broadcasters() {
    use crate::directory::EntryStatus;
    let s = Slapd::start();
    let l = ldap(&config(&[&s.url]));
    let closed = the_list(l.lookup("sch-closed@example.test").await.unwrap());
    assert_eq!(closed.status, EntryStatus::Inactive);
    let removed = the_list(l.lookup("sch-removed@example.test").await.unwrap());
    assert_eq!(removed.status, EntryStatus::Deleted);
    assert!(
        removed.members.is_empty(),
        "a deleted group is not expanded"
    );
    let staff = the_list(l.lookup("staff@example.test").await.unwrap());
    assert_eq!(staff.status, EntryStatus::Active);
    assert!(staff.allows_sender("anyone@anywhere.test") && staff.allows_sender(""));

    let m = the_list(l.lookup("sch-moderated@example.test").await.unwrap());
    assert_eq!(m.status, EntryStatus::Active);
    let mut b = m.allowed_broadcasters.clone();
    b.sort();
    // address, mailto: URL, DN (alice's mail and other addresses), and
    // the LDAP URL's search (frank).
    assert_eq!(
        b,
        vec![
            "alice.smith@example.test",
            "alice@example.test",
            "alice@second.test",
            "carol@example.test",
            "frank@example.test",
            "poster@outside.test",
        ]
    );
    assert_eq!(m.allowed_domains, vec!["trusted.test".to_string()]);
    for ok in [
        "poster@outside.test",
        "Carol@example.test",
        "alice.smith@example.test",
        "frank@example.test",
        "someone@trusted.test",
    ] {
        assert!(m.allows_sender(ok), "{ok}");
    }
    for refused in ["bob@example.test", "x@sub.trusted.test", ""] {
        assert!(!m.allows_sender(refused), "{refused:?}");
    }
    // A restriction naming nobody who exists lets nobody post.
    let n = the_list(l.lookup("sch-nobody@example.test").await.unwrap());
    assert!(n.posting_restricted && n.allowed_broadcasters.is_empty());
    assert!(!n.allows_sender("alice@example.test"));
    assert!(!staff.posting_restricted);
}

#[tokio::test]
async fn sun_schema_domain_status_inactive_and_deleted() {
    use crate::directory::EntryStatus;
    let s = Slapd::start();
    let d = Directory::open(&config(&[&s.url])).unwrap();
    assert_eq!(
        d.domain_status("example.test").await.unwrap(),
        Some(EntryStatus::Active)
    );
    assert_eq!(
        d.domain_status("schemapaused.test").await.unwrap(),
        Some(EntryStatus::Inactive)
    );
    // mailDomainStatus deleted wins over inetDomainStatus active.
    assert_eq!(
        d.domain_status("schemagone.test").await.unwrap(),
        Some(EntryStatus::Deleted)
    );
    assert_eq!(d.domain_status("elsewhere.test").await.unwrap(), None);
    assert!(d.is_local_domain("schemapaused.test").await.unwrap());
    assert!(!d.is_local_domain("schemagone.test").await.unwrap());
    // Logins: an inactive domain's user is refused for now (temporary),
    // a deleted domain's user like an inactive account.
    assert!(is_temporary(
        d.authenticate("sch-paused", "alice-secret", "example.test")
            .await
    ));
    assert_eq!(
        d.authenticate("sch-gone", "alice-secret", "example.test")
            .await
            .unwrap(),
        AuthResult::Inactive
    );
    // Cached with the directory's TTL: a second question is a hit.
    let (hits, _) = d.cache_stats().unwrap();
    d.domain_status("schemapaused.test").await.unwrap();
    assert_eq!(d.cache_stats().unwrap().0, hits + 1);
}

#[test]
fn ldap_urls_of_broadcasters_are_parsed_and_decoded() {
    let (dn, scope, filter) =
        parse_ldap_url("ldap:///ou=people,dc=example,dc=test??sub?(uid=frank%20x)").unwrap();
    assert_eq!(dn, "ou=people,dc=example,dc=test");
    assert_eq!(scope, Scope::Subtree);
    assert_eq!(filter, "(uid=frank x)");
    let (_, scope, filter) = parse_ldap_url("LDAP://host:389/cn=a,dc=b").unwrap();
    assert_eq!((scope, filter.as_str()), (Scope::Base, "(objectClass=*)"));
    assert!(parse_ldap_url("ldap:///").is_none());
    assert!(parse_ldap_url("ldap:///cn=a??bogus").is_none());
    assert!(parse_ldap_url("ldap:///cn=a??sub?%zz").is_none());
    assert!(parse_ldap_url("http://x/cn=a").is_none());
}
