//! Who may do what: site administrators everything, a domain's
//! administrators the users and groups of their domains within the
//! domain's limits (docs/admin.md). Every refusal names what and why.

use super::*;

/// The rights of an identity: site if the directory or
/// `provision.site_admins` says so, else the domains it administers;
/// `Denied` if none.
pub fn actor_of(config: &Config, who: AdminIdentity) -> Result<Actor> {
    let _ = (config, who);
    Err(ProvError::Denied("not built yet".into()))
}

/// The address's domain is one the actor manages.
pub fn may_touch_address(actor: &Actor, address: &str) -> Result<()> {
    let _ = (actor, address);
    Err(ProvError::Denied("not built yet".into()))
}

/// What a domain administrator may not change on a user (e.g. mailHost,
/// partition).
pub fn may_change_user(actor: &Actor, change: &UserChange) -> Result<()> {
    let _ = (actor, change);
    Err(ProvError::Denied("not built yet".into()))
}

/// A listing limited to the actor's domains (`Denied` for another domain).
pub fn scope_query(actor: &Actor, q: &Query) -> Result<Query> {
    let _ = (actor, q);
    Err(ProvError::Denied("not built yet".into()))
}

/// Fills what a new user leaves empty from its service class and domain.
pub async fn with_defaults(p: &Provisioner, user: User) -> Result<User> {
    let _ = p;
    Ok(user)
}

/// The domain's user count and total quota stay within its limits, for a
/// new user (`change` None) or a change.
pub async fn check_user_limits(
    p: &Provisioner,
    user: &User,
    change: Option<&UserChange>,
) -> Result<()> {
    let _ = (p, user, change);
    Err(ProvError::Denied("not built yet".into()))
}

pub fn may_read_domain(actor: &Actor, name: &str) -> Result<()> {
    let _ = (actor, name);
    Err(ProvError::Denied("not built yet".into()))
}

/// Leaves in a page only the domains the actor manages.
pub fn filter_domains(actor: &Actor, page: &mut Page<Domain>) {
    let _ = actor;
    page.items.clear();
    page.total = 0;
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
    let _ = (actor, name, change);
    Err(ProvError::Denied("not built yet".into()))
}
