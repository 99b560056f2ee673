//! LDAP provisioning against the test slapd (tests/ldap): each test starts
//! its own, binds as the provisioning account (not the rootdn), and checks
//! what msgd's own directory (`crate::directory::Directory`) then sees.

use std::time::Duration;

use ldap3::{LdapConnAsync, Scope, SearchEntry};

use super::*;
use crate::directory::ldap::testslapd::{Slapd, BASE_DN, BIND_DN, BIND_PASSWORD};
use crate::directory::{AuthResult, Directory, Recipient};

const ADMIN_DN: &str = "cn=provisioning,ou=services,dc=example,dc=test";
const ADMIN_PASSWORD: &str = "provisioning-secret";
const ROOT_DN: &str = "cn=admin,dc=example,dc=test";
const ROOT_PASSWORD: &str = "admin-secret";

struct Env {
    slapd: Slapd,
    _dir: tempfile::TempDir,
    config: Config,
}

fn env() -> Env {
    let slapd = Slapd::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.pw"), format!("{ADMIN_PASSWORD}\n")).unwrap();
    let config = config_for(&slapd.url, dir.path());
    Env {
        slapd,
        _dir: dir,
        config,
    }
}

fn config_for(url: &str, dir: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.server.data_dir = dir.to_path_buf();
    c.server.domain = "example.test".into();
    c.directory.backend = "ldap".parse().unwrap();
    c.directory.cache_ttl = 1;
    let l = &mut c.directory.ldap;
    l.urls = vec![url.to_string()];
    l.base_dn = BASE_DN.into();
    l.bind_dn = BIND_DN.into();
    l.bind_password = BIND_PASSWORD.into();
    l.admin_dn = ADMIN_DN.into();
    l.admin_password_file = "admin.pw".into();
    l.connect_timeout = 2;
    l.operation_timeout = 2;
    c.provision.ldap.domain_base = format!("ou=domains,{BASE_DN}");
    c
}

fn prov(c: &Config) -> LdapProv {
    LdapProv::open(c).expect("open")
}

fn secret(s: &str) -> Secret {
    Secret::from(s)
}

fn user(address: &str) -> User {
    User {
        address: address.into(),
        ..User::default()
    }
}

async fn login(d: &Directory, who: &str, pw: &str) -> AuthResult {
    d.authenticate(who, pw, "example.test").await.expect("auth")
}

/// An attribute of an entry read as the rootdn (which may read passwords).
async fn root_read(url: &str, dn: &str, attr: &str) -> Vec<String> {
    let (conn, mut ldap) = LdapConnAsync::new(url).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.drive().await;
    });
    ldap.simple_bind(ROOT_DN, ROOT_PASSWORD)
        .await
        .unwrap()
        .success()
        .unwrap();
    let (es, _) = ldap
        .search(dn, Scope::Base, "(objectClass=*)", vec![attr])
        .await
        .unwrap()
        .success()
        .unwrap();
    let e = SearchEntry::construct(es.into_iter().next().expect("entry"));
    e.attrs.get(attr).cloned().unwrap_or_default()
}

#[tokio::test]
async fn users_are_added_modified_marked_deleted_and_removed() {
    let env = env();
    let p = prov(&env.config);
    let made = p
        .user_add(
            &User {
                address: "New.One@Example.test".into(),
                name: Some("New One".into()),
                aliases: vec!["n1@example.test".into()],
                equivalents: vec!["new1@second.test".into()],
                mail_host: Some("store1.test".into()),
                quota: Some(5000),
                msg_quota: Some(10),
                ..User::default()
            },
            &secret("s3cret pw"),
        )
        .await
        .unwrap();
    assert_eq!(made.address, "new.one@example.test");
    assert_eq!(made.name.as_deref(), Some("New One"));
    assert_eq!(made.aliases, vec!["n1@example.test"]);
    assert_eq!(made.equivalents, vec!["new1@second.test"]);
    assert_eq!(made.mail_host.as_deref(), Some("store1.test"));
    assert_eq!((made.quota, made.msg_quota), (Some(5000), Some(10)));
    assert_eq!(made.status, EntryStatus::Active);
    assert!(made.keep_mailbox);
    // Placed per [provision.ldap]: uid=<local part> under ou=people, with
    // the classes and the sn an inetOrgPerson needs.
    let dn = "uid=new.one,ou=people,dc=example,dc=test";
    assert_eq!(root_read(&env.slapd.url, dn, "sn").await, vec!["One"]);
    // Without a name, cn is the local part and no name is shown.
    let plain = p
        .user_add(&user("plain@example.test"), &secret("pw"))
        .await
        .unwrap();
    assert_eq!(plain.name, None);
    assert_eq!(
        root_read(&env.slapd.url, dn, "inetUserStatus").await,
        vec!["active"]
    );
    // A user has a password (as on the embedded directory).
    let e = p
        .user_add(&user("nopw@example.test"), &secret(""))
        .await
        .unwrap_err();
    assert!(matches!(e, ProvError::Invalid(_)), "{e}");
    let e = p
        .user_add(
            &User {
                aliases: vec!["twice@example.test".into()],
                ..user("Twice@example.test")
            },
            &secret("pw"),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, ProvError::Invalid(_)), "{e}");
    // The same address (or an alias of it) twice: Exists.
    for taken in ["new.one@example.test", "alice.smith@example.test"] {
        let e = p.user_add(&user(taken), &secret("x")).await.unwrap_err();
        assert!(matches!(e, ProvError::Exists(_)), "{taken}: {e}");
    }

    let changed = p
        .user_modify(
            "new.one@example.test",
            &UserChange {
                quota: Some(Some(9000)),
                msg_quota: Some(None),
                add_aliases: vec!["n2@example.test".into()],
                remove_aliases: vec!["N1@example.test".into()],
                forward: Some(vec!["away@elsewhere.test".into()]),
                keep_mailbox: Some(false),
                status: Some(EntryStatus::Inactive),
                name: Some(Some("Renamed".into())),
                ..UserChange::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(changed.quota, Some(9000));
    assert_eq!(changed.msg_quota, None);
    assert_eq!(changed.aliases, vec!["n2@example.test"]);
    assert_eq!(changed.forward, vec!["away@elsewhere.test"]);
    assert!(!changed.keep_mailbox);
    assert_eq!(changed.status, EntryStatus::Inactive);
    assert_eq!(changed.name.as_deref(), Some("Renamed"));
    // No mailbox and no forward is not a user that can receive mail.
    let e = p
        .user_modify(
            "new.one@example.test",
            &UserChange {
                forward: Some(vec![]),
                ..UserChange::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e, ProvError::Invalid(_)), "{e}");

    // Marked deleted, dated; the purge finds it only once it is older.
    let at = now() - 100;
    let gone = p
        .user_mark_deleted("new.one@example.test", at)
        .await
        .unwrap();
    assert_eq!(gone.status, EntryStatus::Deleted);
    assert_eq!(gone.deleted_at, Some(at));
    let old = p.deleted_users(at + 1).await.unwrap();
    assert_eq!(
        old.iter().map(|u| u.address.as_str()).collect::<Vec<_>>(),
        vec!["new.one@example.test"]
    );
    assert!(p.deleted_users(at).await.unwrap().is_empty());
    // `msgd user purge --now` asks for everything deleted before i64::MAX.
    assert_eq!(p.deleted_users(i64::MAX).await.unwrap().len(), 1);
    let d = Directory::open(&env.config).unwrap();
    assert!(
        !matches!(
            login(&d, "new.one@example.test", "s3cret pw").await,
            AuthResult::Ok(_)
        ),
        "a deleted user cannot log in"
    );

    p.user_remove("new.one@example.test").await.unwrap();
    assert!(p.user_get("new.one@example.test").await.unwrap().is_none());
    let e = p.user_remove("new.one@example.test").await.unwrap_err();
    assert!(matches!(e, ProvError::NotFound(_)), "{e}");
}

#[tokio::test]
async fn existing_users_read_as_the_model() {
    let env = env();
    let p = prov(&env.config);
    let alice = p.user_get("ALICE@example.test").await.unwrap().unwrap();
    assert_eq!(alice.address, "alice@example.test");
    assert_eq!(alice.name.as_deref(), Some("Alice Smith"));
    assert_eq!(alice.partition.as_deref(), Some("primary"));
    assert_eq!(alice.quota, Some(104857600));
    let dave = p.user_get("dave@example.test").await.unwrap().unwrap();
    assert_eq!(
        dave.status,
        EntryStatus::Inactive,
        "mailUserStatus Disabled"
    );
    let frank = p.user_get("frank@example.test").await.unwrap().unwrap();
    assert_eq!(frank.quota, None, "-1: no quota of its own");
    let carol = p.user_get("carol@example.test").await.unwrap().unwrap();
    assert!(!carol.keep_mailbox);
    // A group is not a user, nor a user a group.
    assert!(p.user_get("staff@example.test").await.unwrap().is_none());
    assert!(p.group_get("alice@example.test").await.unwrap().is_none());
}

#[tokio::test]
async fn the_local_part_rdn_falls_back_to_the_whole_address() {
    let env = env();
    let p = prov(&env.config);
    // uid=bob exists already (bob@example.test).
    p.user_add(&user("bob@second.test"), &secret("pw-two"))
        .await
        .unwrap();
    let dn = "uid=bob@second.test,ou=people,dc=example,dc=test";
    assert_eq!(
        root_read(&env.slapd.url, dn, "mail").await,
        vec!["bob@second.test"]
    );
    let d = Directory::open(&env.config).unwrap();
    assert!(matches!(
        login(&d, "bob@second.test", "pw-two").await,
        AuthResult::Ok(_)
    ));
}

#[tokio::test]
async fn each_password_scheme_is_hashed_by_msgd_and_verified_by_slapd() {
    let mut env = env();
    for (scheme, prefix) in [
        ("SSHA512", "{SSHA512}"),
        ("{ARGON2}", "{ARGON2}$argon2id$"),
        ("ssha", "{SSHA}"),
    ] {
        env.config.provision.ldap.password_scheme = scheme.into();
        let p = prov(&env.config);
        let local = format!("pw{}", scheme.trim_matches(['{', '}']).to_lowercase());
        let address = format!("{local}@example.test");
        let password = format!("{local} correct horse");
        p.user_add(&user(&address), &secret(&password))
            .await
            .unwrap();
        let stored = root_read(
            &env.slapd.url,
            &format!("uid={local},ou=people,dc=example,dc=test"),
            "userPassword",
        )
        .await;
        assert_eq!(stored.len(), 1);
        assert!(stored[0].starts_with(prefix), "{scheme}: {}", stored[0]);
        assert!(!stored[0].contains(&password), "never in clear");
        // msgd's own login binds as the user: slapd checks the hash.
        let d = Directory::open(&env.config).unwrap();
        match login(&d, &address, &password).await {
            AuthResult::Ok(a) => assert_eq!(a.address, address),
            other => panic!("{scheme}: {other:?}"),
        }
        assert!(matches!(
            login(&d, &address, "wrong").await,
            AuthResult::Failed(_)
        ));
        // A new password replaces the old one.
        p.user_modify(
            &address,
            &UserChange {
                password: Some(secret("changed pw")),
                ..UserChange::default()
            },
        )
        .await
        .unwrap();
        let d = Directory::open(&env.config).unwrap();
        assert!(matches!(
            login(&d, &address, "changed pw").await,
            AuthResult::Ok(_)
        ));
        assert!(matches!(
            login(&d, &address, &password).await,
            AuthResult::Failed(_)
        ));
    }
    env.config.provision.ldap.password_scheme = "CLEARTEXT".into();
    assert!(LdapProv::open(&env.config).is_err());
}

#[tokio::test]
async fn directory_lookups_see_changes_after_the_cache_ttl() {
    let env = env();
    let p = prov(&env.config);
    let d = Directory::open(&env.config).unwrap();
    let quota = |r: Option<Recipient>| match r {
        Some(Recipient::User(a)) => a.quota,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        quota(d.lookup("alice@example.test").await.unwrap()),
        Some(104857600)
    );
    assert!(d.lookup("fresh@example.test").await.unwrap().is_none());
    p.user_modify(
        "alice@example.test",
        &UserChange {
            quota: Some(Some(2048)),
            ..UserChange::default()
        },
    )
    .await
    .unwrap();
    p.user_add(&user("fresh@example.test"), &secret("fresh pw"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1300)).await; // cache_ttl = 1
    assert_eq!(
        quota(d.lookup("alice@example.test").await.unwrap()),
        Some(2048)
    );
    assert!(matches!(
        d.lookup("fresh@example.test").await.unwrap(),
        Some(Recipient::User(_))
    ));
    p.user_mark_deleted("fresh@example.test", now())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    match d.lookup("fresh@example.test").await.unwrap() {
        Some(Recipient::User(a)) => assert!(a.deleted || !a.active, "{a:?}"),
        None => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn mail_host_of_a_user_with_a_store_is_changed_by_a_move_only() {
    let env = env();
    let p = prov(&env.config);
    let e = p
        .user_modify(
            "alice@example.test",
            &UserChange {
                mail_host: Some(Some("store9.test".into())),
                ..UserChange::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ProvError::Invalid(m) if m.contains("msgd user move")),
        "{e}"
    );
    // The same value is no change; a user without a store gets one.
    p.user_modify(
        "alice@example.test",
        &UserChange {
            mail_host: Some(Some("store1.test".into())),
            ..UserChange::default()
        },
    )
    .await
    .unwrap();
    p.user_add(&user("homeless@example.test"), &secret("pw"))
        .await
        .unwrap();
    let u = p
        .user_modify(
            "homeless@example.test",
            &UserChange {
                mail_host: Some(Some("store2.test".into())),
                partition: Some(Some("secondary".into())),
                ..UserChange::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(u.mail_host.as_deref(), Some("store2.test"));
    assert_eq!(u.partition.as_deref(), Some("secondary"));
}

#[tokio::test]
async fn users_are_listed_in_pages_filtered_by_the_server() {
    let env = env();
    let p = prov(&env.config);
    for i in 0..7 {
        p.user_add(&user(&format!("page{i}@paged.test")), &secret("pw"))
            .await
            .unwrap();
    }
    p.user_modify(
        "page3@paged.test",
        &UserChange {
            status: Some(EntryStatus::Inactive),
            ..UserChange::default()
        },
    )
    .await
    .unwrap();
    let q = |offset, limit| Query {
        domain: Some("paged.test".into()),
        offset,
        limit,
        ..Query::default()
    };
    let page = p.user_list(&q(0, 3)).await.unwrap();
    assert_eq!(page.total, 7);
    let names: Vec<_> = page.items.iter().map(|u| u.address.as_str()).collect();
    assert_eq!(
        names,
        ["page0@paged.test", "page1@paged.test", "page2@paged.test"]
    );
    let page = p.user_list(&q(6, 3)).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].address, "page6@paged.test");
    let inactive = p
        .user_list(&Query {
            status: Some(EntryStatus::Inactive),
            ..q(0, 100)
        })
        .await
        .unwrap();
    assert_eq!(inactive.total, 1);
    assert_eq!(inactive.items[0].address, "page3@paged.test");
    // Text matches the address or the name; the whole directory too.
    let smith = p
        .user_list(&Query {
            text: Some("smith".into()),
            ..Query::default()
        })
        .await
        .unwrap();
    assert_eq!(smith.total, 1, "{:?}", smith.items);
    // Users only: groups and the person without mail are not listed.
    let all = p.user_list(&Query::default()).await.unwrap();
    assert!(all.items.iter().all(|u| !u.address.starts_with("staff@")));
    assert!(all.items.iter().all(|u| !u.address.is_empty()));
    assert_eq!(p.domain_usage("paged.test").await.unwrap(), (7, 0));
}

#[tokio::test]
async fn filter_and_dn_values_are_escaped() {
    let env = env();
    let p = prov(&env.config);
    // A wildcard or a filter fragment finds nothing, not alice.
    for hostile in [
        "*@example.test",
        "alice@example.test)(mail=*",
        "*",
        "alice*",
    ] {
        match p.user_get(hostile).await {
            Ok(None) | Err(ProvError::Invalid(_)) => {}
            other => panic!("{hostile}: {other:?}"),
        }
    }
    let none = p
        .user_list(&Query {
            text: Some(")(mail=*".into()),
            ..Query::default()
        })
        .await
        .unwrap();
    assert_eq!(none.total, 0);
    let stars = p
        .user_list(&Query {
            text: Some("*".into()),
            ..Query::default()
        })
        .await
        .unwrap();
    assert_eq!(stars.total, 0, "a * in the text is literal");
    // RDN specials (RFC 4514) in a local part: the DN is escaped, the
    // entry is where it should be and is found again.
    for (address, rdn) in [
        ("x+y@example.test", "uid=x\\+y"),
        ("k=v@example.test", "uid=k\\=v"),
        ("\"a,b\"@example.test", "uid=\\\"a\\,b\\\""),
        ("star*@example.test", "uid=star*"),
    ] {
        p.user_add(&user(address), &secret("pw")).await.unwrap();
        let dn = format!("{rdn},ou=people,dc=example,dc=test");
        assert_eq!(
            root_read(&env.slapd.url, &dn, "mail").await,
            vec![address.to_string()],
            "{address}"
        );
        assert_eq!(p.user_get(address).await.unwrap().unwrap().address, address);
    }
    // An escaped + made no multi-valued RDN with a second attribute.
    assert!(p.user_get("y@example.test").await.unwrap().is_none());
}

#[tokio::test]
async fn groups_are_added_modified_and_deleted() {
    let env = env();
    let p = prov(&env.config);
    let d = Directory::open(&env.config).unwrap();
    let made = p
        .group_add(&Group {
            address: "team2@example.test".into(),
            name: Some("Team two".into()),
            members: vec!["partner@elsewhere.test".into()],
            allowed_domains: vec!["Example.test".into()],
            ..Group::default()
        })
        .await
        .unwrap();
    assert_eq!(made.name.as_deref(), Some("Team two"));
    assert_eq!(made.members, vec!["partner@elsewhere.test"]);
    assert!(
        made.member_dns.is_empty(),
        "the empty placeholder is hidden"
    );
    assert_eq!(made.allowed_domains, vec!["example.test"]);
    assert_eq!(made.status, EntryStatus::Active);
    let changed = p
        .group_modify(
            "team2@example.test",
            &GroupChange {
                add_members: vec![
                    "uid=alice,ou=people,dc=example,dc=test".into(),
                    "bob@example.test".into(),
                ],
                remove_members: vec!["partner@elsewhere.test".into()],
                add_aliases: vec!["t2@example.test".into()],
                errors_to: Some(Some("owner@example.test".into())),
                ..GroupChange::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(changed.members, vec!["bob@example.test"]);
    assert_eq!(
        changed.member_dns,
        vec!["uid=alice,ou=people,dc=example,dc=test"]
    );
    assert_eq!(changed.aliases, vec!["t2@example.test"]);
    assert_eq!(changed.name.as_deref(), Some("Team two"), "left alone");
    assert_eq!(changed.errors_to.as_deref(), Some("owner@example.test"));
    // msgd's own expansion sees both members (and not the placeholder).
    match d.lookup("t2@example.test").await.unwrap() {
        Some(Recipient::List(l)) => {
            let mut m = l.members;
            m.sort();
            assert_eq!(m, vec!["alice@example.test", "bob@example.test"]);
        }
        other => panic!("{other:?}"),
    }
    // The last DN member removed: the placeholder comes back.
    let g = p
        .group_modify(
            "team2@example.test",
            &GroupChange {
                remove_members: vec!["UID=alice,ou=people,dc=example,dc=test".into()],
                status: Some(EntryStatus::Inactive),
                name: Some(Some("Renamed team".into())),
                ..GroupChange::default()
            },
        )
        .await
        .unwrap();
    assert!(g.member_dns.is_empty());
    assert_eq!(g.status, EntryStatus::Inactive);
    assert_eq!(g.name.as_deref(), Some("Renamed team"));
    assert_eq!(
        root_read(
            &env.slapd.url,
            "cn=team2,ou=groups,dc=example,dc=test",
            "cn"
        )
        .await,
        vec!["team2", "Renamed team"],
        "the RDN value stays"
    );
    let listed = p
        .group_list(&Query {
            domain: Some("example.test".into()),
            ..Query::default()
        })
        .await
        .unwrap();
    // (`sch-*` groups are the Sun-schema tests' fixtures in base.ldif.)
    let names: Vec<_> = listed
        .items
        .iter()
        .map(|g| g.address.as_str())
        .filter(|a| !a.starts_with("sch-"))
        .collect();
    assert_eq!(
        names,
        [
            "staff@example.test",
            "team2@example.test",
            "team@example.test"
        ]
    );
    p.group_delete("team2@example.test").await.unwrap();
    assert!(p.group_get("team2@example.test").await.unwrap().is_none());
    let e = p.group_delete("team2@example.test").await.unwrap_err();
    assert!(matches!(e, ProvError::NotFound(_)), "{e}");
}

#[tokio::test]
async fn domains_are_added_modified_and_deleted_when_empty() {
    let env = env();
    let p = prov(&env.config);
    let made = p
        .domain_add(&Domain {
            name: "New.test".into(),
            default_quota: Some(1000),
            max_users: Some(2),
            admins: vec!["alice@example.test".into()],
            ..Domain::default()
        })
        .await
        .unwrap();
    assert_eq!(made.name, "new.test");
    assert_eq!(made.max_users, Some(2));
    assert_eq!(made.default_quota, Some(1000));
    assert_eq!(made.admins, vec!["uid=alice,ou=people,dc=example,dc=test"]);
    let e = p.domain_add(&made).await.unwrap_err();
    assert!(matches!(e, ProvError::Exists(_)), "{e}");
    // msgd's reading side takes it for a local domain.
    let d = Directory::open(&env.config).unwrap();
    assert!(d.is_local_domain("new.test").await.unwrap());

    let changed = p
        .domain_modify(
            "new.test",
            &DomainChange {
                status: Some(EntryStatus::Inactive),
                max_quota: Some(Some(1 << 30)),
                default_quota: Some(None),
                default_mail_host: Some(Some("store2.test".into())),
                add_admins: vec!["staff@example.test".into()],
                remove_admins: vec!["alice@example.test".into()],
                ..DomainChange::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(changed.status, EntryStatus::Inactive);
    assert_eq!(changed.max_quota, Some(1 << 30));
    assert_eq!(changed.default_quota, None);
    assert_eq!(changed.default_mail_host.as_deref(), Some("store2.test"));
    assert_eq!(
        changed.admins,
        vec!["cn=staff,ou=groups,dc=example,dc=test"]
    );

    let all = p.domain_list(&Query::default()).await.unwrap();
    // (`schema*.test` are the Sun-schema tests' fixtures in base.ldif.)
    let names: Vec<_> = all
        .items
        .iter()
        .map(|d| d.name.as_str())
        .filter(|n| !n.starts_with("schema"))
        .collect();
    assert_eq!(names, ["example.test", "new.test", "second.test"]);
    let inactive = p
        .domain_list(&Query {
            status: Some(EntryStatus::Inactive),
            ..Query::default()
        })
        .await
        .unwrap();
    let inactive: Vec<_> = inactive
        .items
        .iter()
        .map(|d| d.name.as_str())
        .filter(|n| !n.starts_with("schema"))
        .collect();
    assert_eq!(inactive, ["new.test"]);

    p.user_add(
        &User {
            quota: Some(700),
            ..user("someone@new.test")
        },
        &secret("pw"),
    )
    .await
    .unwrap();
    assert_eq!(p.domain_usage("new.test").await.unwrap(), (1, 700));
    let e = p.domain_delete("new.test").await.unwrap_err();
    assert!(
        matches!(&e, ProvError::Invalid(m) if m.contains("users or groups")),
        "{e}"
    );
    p.user_remove("someone@new.test").await.unwrap();
    p.domain_delete("new.test").await.unwrap();
    assert!(p.domain_get("new.test").await.unwrap().is_none());
}

#[tokio::test]
async fn administrators_are_found_by_user_and_by_group() {
    let mut env = env();
    let p = prov(&env.config);
    p.user_add(&user("boss@example.test"), &secret("boss pw"))
        .await
        .unwrap();
    p.user_add(&user("helper@example.test"), &secret("helper pw"))
        .await
        .unwrap();
    p.group_add(&Group {
        address: "admins@example.test".into(),
        member_dns: vec!["uid=helper,ou=people,dc=example,dc=test".into()],
        ..Group::default()
    })
    .await
    .unwrap();
    p.domain_add(&Domain {
        name: "one.test".into(),
        admins: vec!["boss@example.test".into()],
        ..Domain::default()
    })
    .await
    .unwrap();
    p.domain_modify(
        "second.test",
        &DomainChange {
            add_admins: vec!["admins@example.test".into()],
            ..DomainChange::default()
        },
    )
    .await
    .unwrap();

    let boss = p
        .admin_identity("boss@example.test", Some(&secret("boss pw")))
        .await
        .unwrap();
    assert_eq!(boss.id, "boss@example.test");
    assert_eq!(boss.domains, vec!["one.test"]);
    assert!(!boss.site);
    assert!(boss
        .names
        .contains(&"uid=boss,ou=people,dc=example,dc=test".to_string()));
    // By uid too (login_attributes), and without a password for `--as`.
    let helper = p.admin_identity("helper", None).await.unwrap();
    assert_eq!(helper.domains, vec!["second.test"], "through the group");
    for bad in ["wrong", ""] {
        let e = p
            .admin_identity("boss@example.test", Some(&secret(bad)))
            .await
            .unwrap_err();
        assert!(matches!(e, ProvError::Denied(_)), "{bad:?}: {e}");
    }
    let e = p
        .admin_identity("nobody@example.test", None)
        .await
        .unwrap_err();
    assert!(matches!(e, ProvError::Denied(_)), "{e}");

    // Site: a member of provision.site_admin_group, or named in
    // provision.site_admins.
    env.config.provision.site_admin_group = "cn=admins,ou=groups,dc=example,dc=test".into();
    let p = prov(&env.config);
    assert!(
        p.admin_identity("helper@example.test", None)
            .await
            .unwrap()
            .site
    );
    assert!(
        !p.admin_identity("boss@example.test", None)
            .await
            .unwrap()
            .site
    );
    env.config.provision.site_admins = vec!["uid=boss,ou=people,dc=example,dc=test".into()];
    let p = prov(&env.config);
    assert!(
        p.admin_identity("boss@example.test", None)
            .await
            .unwrap()
            .site
    );
}

#[tokio::test]
async fn the_service_account_stays_read_only() {
    let env = env();
    let (conn, mut ldap) = LdapConnAsync::new(&env.slapd.url).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.drive().await;
    });
    ldap.simple_bind(BIND_DN, BIND_PASSWORD)
        .await
        .unwrap()
        .success()
        .unwrap();
    let r = ldap
        .modify(
            "uid=alice,ou=people,dc=example,dc=test",
            vec![ldap3::Mod::Replace(
                "mailQuota",
                std::collections::HashSet::from(["1"]),
            )],
        )
        .await
        .unwrap();
    assert_eq!(r.rc, 50, "insufficientAccessRights");
}

#[tokio::test]
async fn a_directory_that_does_not_answer_is_a_temporary_failure() {
    let mut env = env();
    let p = prov(&env.config);
    assert!(p.user_get("alice@example.test").await.unwrap().is_some());
    env.slapd.stop();
    let e = p.user_get("alice@example.test").await.unwrap_err();
    assert!(matches!(e, ProvError::Temporary(_)), "{e}");
    let e = p
        .user_add(&user("later@example.test"), &secret("pw"))
        .await
        .unwrap_err();
    assert!(matches!(e, ProvError::Temporary(_)), "{e}");
    // Back again: the next call connects anew.
    env.slapd.run();
    assert!(p.user_get("alice@example.test").await.unwrap().is_some());
    // A wrong admin password is no temporary failure.
    std::fs::write(env.config.data_path("admin.pw", ""), "wrong\n").unwrap();
    let e = prov(&env.config)
        .user_get("alice@example.test")
        .await
        .unwrap_err();
    assert!(matches!(e, ProvError::Other(_)), "{e}");
    assert!(
        !e.to_string().contains("wrong"),
        "the password is not shown"
    );
}
