//! Who may do what: site administrators everything, a domain's
//! administrators the users and groups of their domains within the
//! domain's limits (docs/admin.md). Every refusal names what and why.
//!
//! The rules:
//! - site (the operator's CLI, `provision.site_admins`, the directory's
//!   site administrators): everything;
//! - a domain administrator: users and groups of its domains only; it may
//!   read its domains and change their default quotas, not their status,
//!   limits, administrators or default store, and not add or delete
//!   domains; it may not set a user's mailHost or partition (which store
//!   holds the mail is the site's business);
//! - limits hold for everyone (a site administrator raises the limit
//!   first): `max_users` counts users not marked deleted; `max_quota` sums
//!   their quota bytes, a user without quota counting the domain's default
//!   quota; a user with neither (unlimited) is refused in a domain with
//!   `max_quota`.
//! - a domain administrator of several domains names the domain of a
//!   listing (`--domain`); with one domain it is filled in.

use super::*;
use crate::directory::{canonical_address, domain_of};

/// The rights of an identity: site if the directory or
/// `provision.site_admins` says so, else the domains it administers;
/// `Denied` if none.
pub fn actor_of(config: &Config, who: AdminIdentity) -> Result<Actor> {
    let listed = config.provision.site_admins.iter().any(|s| {
        let s = s.trim();
        s.eq_ignore_ascii_case(&who.id) || who.names.iter().any(|n| n.eq_ignore_ascii_case(s))
    });
    if who.site || listed {
        return Ok(Actor::Site { id: who.id });
    }
    if who.domains.is_empty() {
        return Err(ProvError::Denied(format!(
            "{} is not an administrator of any domain",
            who.id
        )));
    }
    let mut domains: Vec<String> = who.domains.iter().map(|d| d.to_lowercase()).collect();
    domains.sort();
    domains.dedup();
    Ok(Actor::Domain {
        id: who.id,
        domains,
    })
}

fn manages(domains: &[String], domain: &str) -> bool {
    domains.iter().any(|d| d == domain)
}

/// The address's domain is one the actor manages.
pub fn may_touch_address(actor: &Actor, address: &str) -> Result<()> {
    match actor {
        Actor::Site { .. } => Ok(()),
        Actor::Domain { id, domains } => {
            let a = canonical_address(address);
            match domain_of(&a) {
                Some(d) if manages(domains, d) => Ok(()),
                Some(d) => Err(ProvError::Denied(format!(
                    "{id} does not administer domain {d} (of {a})"
                ))),
                None => Err(ProvError::Invalid(format!(
                    "'{a}' is not an address (user@domain)"
                ))),
            }
        }
    }
}

/// What a domain administrator may not change on a user: mailHost and
/// partition.
pub fn may_change_user(actor: &Actor, change: &UserChange) -> Result<()> {
    match actor {
        Actor::Site { .. } => Ok(()),
        Actor::Domain { id, .. } => {
            if change.mail_host.is_some() {
                return Err(ProvError::Denied(format!(
                    "{id} may not change a user's mailHost (site administrators only)"
                )));
            }
            if change.partition.is_some() {
                return Err(ProvError::Denied(format!(
                    "{id} may not change a user's partition (site administrators only)"
                )));
            }
            Ok(())
        }
    }
}

/// The same rule for a new user.
pub fn may_create_user(actor: &Actor, user: &User) -> Result<()> {
    may_change_user(
        actor,
        &UserChange {
            mail_host: user.mail_host.as_ref().map(|h| Some(h.clone())),
            partition: user.partition.as_ref().map(|h| Some(h.clone())),
            ..Default::default()
        },
    )
}

/// A listing limited to the actor's domains (`Denied` for another domain).
pub fn scope_query(actor: &Actor, q: &Query) -> Result<Query> {
    let mut q = q.clone();
    if let Some(d) = &q.domain {
        q.domain = Some(d.trim().to_lowercase());
    }
    q.limit = q.limit.clamp(1, MAX_PAGE);
    match actor {
        Actor::Site { .. } => Ok(q),
        Actor::Domain { id, domains } => match &q.domain {
            Some(d) if manages(domains, d) => Ok(q),
            Some(d) => Err(ProvError::Denied(format!(
                "{id} does not administer domain {d}"
            ))),
            None if domains.len() == 1 => {
                q.domain = Some(domains[0].clone());
                Ok(q)
            }
            None => Err(ProvError::Invalid(format!(
                "{id} administers several domains: name one (--domain)"
            ))),
        },
    }
}

/// The (lowercase) domain of an address; empty without one.
pub fn address_domain(address: &str) -> String {
    domain_of(&canonical_address(address))
        .unwrap_or_default()
        .to_string()
}

/// Fills what a new user leaves empty from its service class, then from
/// its domain (explicit values win); also returns the domain read.
pub async fn with_defaults(p: &Provisioner, user: User) -> Result<(User, Option<Domain>)> {
    let dom = address_domain(&user.address);
    let d = p.domain_info(&dom).await?;
    Ok((apply_defaults(&p.config, user, d.as_ref())?, d))
}

/// `with_defaults` with the domain already read (bulk import).
pub fn apply_defaults(config: &Config, user: User, domain: Option<&Domain>) -> Result<User> {
    let mut u = user;
    u.address = canonical_address(&u.address);
    if let Some(c) = &u.class {
        let Some(class) = config.provision.class.get(c) else {
            return Err(ProvError::Invalid(format!(
                "class: no service class '{c}' in [provision.class]"
            )));
        };
        u.quota = u.quota.or(class.quota);
        u.msg_quota = u.msg_quota.or(class.msg_quota);
        u.mail_host = u.mail_host.or_else(|| class.mail_host.clone());
        u.partition = u.partition.or_else(|| class.partition.clone());
    }
    if let Some(d) = domain {
        u.quota = u.quota.or(d.default_quota);
        u.msg_quota = u.msg_quota.or(d.default_msg_quota);
        u.mail_host = u.mail_host.or_else(|| d.default_mail_host.clone());
    }
    Ok(u)
}

/// Whether a user counts for the limits, and the quota it counts.
fn counted(status: EntryStatus, quota: Option<u64>, default: Option<u64>) -> Option<Option<u64>> {
    (status != EntryStatus::Deleted).then_some(quota.or(default))
}

/// The limit check itself (`used`: the domain's users and quota now,
/// `before`/`after`: how this user counts before and after).
pub fn within_limits(
    domain: &Domain,
    used: (u64, u64),
    before: Option<Option<u64>>,
    after: Option<Option<u64>>,
) -> Result<()> {
    let Some(after_q) = after else {
        return Ok(()); // deleted (or deleting): frees, never takes
    };
    let n = &domain.name;
    if before.is_none() {
        if let Some(m) = domain.max_users {
            if used.0.saturating_add(1) > m {
                return Err(ProvError::Limit(format!(
                    "domain {n} may have at most {m} users (has {})",
                    used.0
                )));
            }
        }
    }
    if let Some(m) = domain.max_quota {
        let Some(q) = after_q else {
            return Err(ProvError::Limit(format!(
                "domain {n} limits its total quota to {m} bytes: a user needs a quota (--quota)"
            )));
        };
        let was = before.flatten().unwrap_or(0);
        let total = used.1.saturating_sub(was).saturating_add(q);
        if q > was && total > m {
            return Err(ProvError::Limit(format!(
                "domain {n} may give at most {m} quota bytes in all ({} given, {q} asked)",
                used.1.saturating_sub(was)
            )));
        }
    }
    Ok(())
}

/// The domain's user count and total quota stay within its limits, for a
/// new user (`change` None) or a change.
pub async fn check_user_limits(
    p: &Provisioner,
    user: &User,
    change: Option<&UserChange>,
) -> Result<()> {
    let dom = address_domain(&user.address);
    match p.domain_info(&dom).await? {
        Some(d) => check_domain_limits(p, &d, user, change).await,
        None => Ok(()), // a new domain (site only) has no limits
    }
}

/// `check_user_limits` with the user's domain already read.
pub async fn check_domain_limits(
    p: &Provisioner,
    d: &Domain,
    user: &User,
    change: Option<&UserChange>,
) -> Result<()> {
    if !d.has_limits() {
        return Ok(());
    }
    let dom = address_domain(&user.address);
    let used = p.domain_usage(&dom).await?;
    let def = d.default_quota;
    let (before, after) = match change {
        None => (None, counted(user.status, user.quota, def)),
        Some(c) => (
            counted(user.status, user.quota, def),
            counted(
                c.status.unwrap_or(user.status),
                c.quota.unwrap_or(user.quota),
                def,
            ),
        ),
    };
    within_limits(d, used, before, after)
}

pub fn may_read_domain(actor: &Actor, name: &str) -> Result<()> {
    match actor {
        Actor::Site { .. } => Ok(()),
        Actor::Domain { id, domains } => {
            let n = name.trim().to_lowercase();
            if manages(domains, &n) {
                Ok(())
            } else {
                Err(ProvError::Denied(format!(
                    "{id} does not administer domain {n}"
                )))
            }
        }
    }
}

/// Leaves in a page only the domains the actor manages.
pub fn filter_domains(actor: &Actor, page: &mut Page<Domain>) {
    if let Actor::Domain { domains, .. } = actor {
        page.items.retain(|d| manages(domains, &d.name));
        page.total = page.items.len();
    }
}

pub fn must_be_site(actor: &Actor, what: &str) -> Result<()> {
    match actor {
        Actor::Site { .. } => Ok(()),
        Actor::Domain { .. } => Err(ProvError::Denied(format!(
            "only a site administrator may {what}"
        ))),
    }
}

pub fn may_change_domain(actor: &Actor, name: &str, change: &DomainChange) -> Result<()> {
    may_read_domain(actor, name)?;
    if let Actor::Domain { id, .. } = actor {
        let mut what = Vec::new();
        if change.status.is_some() {
            what.push("status");
        }
        if change.max_users.is_some() || change.max_quota.is_some() {
            what.push("limits");
        }
        if !change.add_admins.is_empty() || !change.remove_admins.is_empty() {
            what.push("administrators");
        }
        if change.default_mail_host.is_some() {
            what.push("default store");
        }
        if !what.is_empty() {
            return Err(ProvError::Denied(format!(
                "{id} may not change the {} of domain {} (site administrators only)",
                what.join(", "),
                name.trim().to_lowercase()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dom_admin() -> Actor {
        Actor::Domain {
            id: "boss@a.test".into(),
            domains: vec!["a.test".into()],
        }
    }
    fn site() -> Actor {
        Actor::Site {
            id: "cli:root".into(),
        }
    }

    #[test]
    fn actor_of_site_domain_and_nobody() {
        let mut c = Config::default();
        let who = |site, domains: &[&str]| AdminIdentity {
            id: "x@a.test".into(),
            names: vec!["uid=x,ou=people,dc=a".into()],
            site,
            domains: domains.iter().map(|s| s.to_string()).collect(),
        };
        assert!(matches!(
            actor_of(&c, who(true, &[])),
            Ok(Actor::Site { .. })
        ));
        assert!(matches!(
            actor_of(&c, who(false, &["A.test"])),
            Ok(Actor::Domain { domains, .. }) if domains == ["a.test"]
        ));
        assert!(matches!(
            actor_of(&c, who(false, &[])),
            Err(ProvError::Denied(_))
        ));
        c.provision.site_admins = vec!["UID=x,ou=people,dc=a".into()];
        assert!(matches!(
            actor_of(&c, who(false, &[])),
            Ok(Actor::Site { .. })
        ));
    }

    #[test]
    fn domain_admin_touches_its_domains_only() {
        assert!(may_touch_address(&dom_admin(), "U@A.test").is_ok());
        assert!(matches!(
            may_touch_address(&dom_admin(), "u@b.test"),
            Err(ProvError::Denied(_))
        ));
        assert!(may_touch_address(&site(), "u@b.test").is_ok());
        assert!(may_read_domain(&dom_admin(), "a.test").is_ok());
        assert!(may_read_domain(&dom_admin(), "b.test").is_err());
        assert!(must_be_site(&dom_admin(), "add a domain").is_err());
        assert!(must_be_site(&site(), "add a domain").is_ok());
    }

    #[test]
    fn domain_admin_cannot_move_users() {
        let c = UserChange {
            mail_host: Some(Some("other".into())),
            ..Default::default()
        };
        assert!(may_change_user(&dom_admin(), &c).is_err());
        assert!(may_change_user(&site(), &c).is_ok());
        let c = UserChange {
            partition: Some(None),
            ..Default::default()
        };
        assert!(may_change_user(&dom_admin(), &c).is_err());
        let u = User {
            address: "u@a.test".into(),
            mail_host: Some("h".into()),
            ..Default::default()
        };
        assert!(may_create_user(&dom_admin(), &u).is_err());
        assert!(may_change_user(&dom_admin(), &UserChange::default()).is_ok());
    }

    #[test]
    fn domain_admin_changes_defaults_only() {
        let ok = DomainChange {
            default_quota: Some(Some(5)),
            ..Default::default()
        };
        assert!(may_change_domain(&dom_admin(), "a.test", &ok).is_ok());
        assert!(may_change_domain(&dom_admin(), "b.test", &ok).is_err());
        for bad in [
            DomainChange {
                max_users: Some(None),
                ..Default::default()
            },
            DomainChange {
                add_admins: vec!["x@a.test".into()],
                ..Default::default()
            },
            DomainChange {
                status: Some(EntryStatus::Inactive),
                ..Default::default()
            },
            DomainChange {
                default_mail_host: Some(None),
                ..Default::default()
            },
        ] {
            assert!(matches!(
                may_change_domain(&dom_admin(), "a.test", &bad),
                Err(ProvError::Denied(_))
            ));
            assert!(may_change_domain(&site(), "a.test", &bad).is_ok());
        }
    }

    #[test]
    fn listings_are_scoped() {
        let q = scope_query(&dom_admin(), &Query::default()).unwrap();
        assert_eq!(q.domain.as_deref(), Some("a.test"));
        let other = Query {
            domain: Some("b.test".into()),
            ..Default::default()
        };
        assert!(scope_query(&dom_admin(), &other).is_err());
        assert!(scope_query(&site(), &other).is_ok());
        let two = Actor::Domain {
            id: "x".into(),
            domains: vec!["a.test".into(), "b.test".into()],
        };
        assert!(matches!(
            scope_query(&two, &Query::default()),
            Err(ProvError::Invalid(_))
        ));
        let mut p = Page {
            items: vec![
                Domain {
                    name: "a.test".into(),
                    ..Default::default()
                },
                Domain {
                    name: "b.test".into(),
                    ..Default::default()
                },
            ],
            total: 2,
        };
        filter_domains(&dom_admin(), &mut p);
        assert_eq!(p.total, 1);
        assert_eq!(p.items[0].name, "a.test");
    }

    #[test]
    fn limits() {
        let d = Domain {
            name: "a.test".into(),
            max_users: Some(2),
            max_quota: Some(100),
            ..Default::default()
        };
        // A new user: count and quota.
        assert!(within_limits(&d, (1, 50), None, Some(Some(50))).is_ok());
        assert!(matches!(
            within_limits(&d, (2, 50), None, Some(Some(10))),
            Err(ProvError::Limit(_))
        ));
        assert!(matches!(
            within_limits(&d, (1, 50), None, Some(Some(51))),
            Err(ProvError::Limit(_))
        ));
        // Unlimited users are refused under a quota limit.
        assert!(matches!(
            within_limits(&d, (0, 0), None, Some(None)),
            Err(ProvError::Limit(_))
        ));
        // A change: only the difference counts; lowering always works.
        assert!(within_limits(&d, (2, 100), Some(Some(50)), Some(Some(50))).is_ok());
        assert!(within_limits(&d, (2, 100), Some(Some(50)), Some(Some(10))).is_ok());
        assert!(within_limits(&d, (2, 90), Some(Some(40)), Some(Some(50))).is_ok());
        assert!(within_limits(&d, (2, 90), Some(Some(40)), Some(Some(51))).is_err());
        // Undeleting counts as a new user.
        assert!(within_limits(&d, (2, 0), None, Some(Some(1))).is_err());
        // Deleting frees.
        assert!(within_limits(&d, (3, 500), Some(Some(1)), None).is_ok());
        assert_eq!(counted(EntryStatus::Deleted, Some(1), None), None);
        assert_eq!(counted(EntryStatus::Active, None, Some(7)), Some(Some(7)));
    }

    #[tokio::test]
    async fn defaults_from_class_then_domain() {
        let t = tempfile::tempdir().unwrap();
        let mut c = Config::default();
        c.server.data_dir = t.path().to_path_buf();
        c.provision.class.insert(
            "gold".into(),
            crate::config::ServiceClass {
                quota: Some(1000),
                partition: Some("fast".into()),
                ..Default::default()
            },
        );
        let p = Provisioner::open(Arc::new(c)).unwrap();
        p.domain_add(
            &site(),
            Domain {
                name: "a.test".into(),
                default_quota: Some(10),
                default_msg_quota: Some(5),
                max_users: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let (u, _) = with_defaults(
            &p,
            User {
                address: "u@a.test".into(),
                class: Some("gold".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(u.quota, Some(1000));
        assert_eq!(u.msg_quota, Some(5));
        assert_eq!(u.partition.as_deref(), Some("fast"));
        let bad = User {
            address: "u@a.test".into(),
            class: Some("tin".into()),
            ..Default::default()
        };
        assert!(with_defaults(&p, bad).await.is_err());
        // max_users 1: the second user is refused, for the site too.
        p.user_add(&site(), u, "pw".into()).await.unwrap();
        let e = p
            .user_add(
                &site(),
                User {
                    address: "v@a.test".into(),
                    ..Default::default()
                },
                "pw".into(),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, ProvError::Limit(_)), "{e}");
    }
}
