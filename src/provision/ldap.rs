//! Provisioning on LDAP: writes with the admin bind
//! (`directory.ldap.admin_dn`), attribute names from
//! `[directory.ldap.attributes]`, entries placed per `[provision.ldap]`.

use super::*;
use crate::config::Config;

#[allow(dead_code)] // until the back end is built
pub struct LdapProv {
    config: Config,
}

impl LdapProv {
    pub fn open(config: &Config) -> anyhow::Result<LdapProv> {
        Ok(LdapProv {
            config: config.clone(),
        })
    }

    pub async fn admin_identity(
        &self,
        login: &str,
        password: Option<&Secret>,
    ) -> Result<AdminIdentity> {
        let _ = (login, password);
        Err(todo_err())
    }

    pub async fn user_get(&self, address: &str) -> Result<Option<User>> {
        let _ = address;
        Err(todo_err())
    }

    pub async fn user_list(&self, q: &Query) -> Result<Page<User>> {
        let _ = q;
        Err(todo_err())
    }

    /// Creates the entry with the password hashed.
    pub async fn user_add(&self, user: &User, password: &Secret) -> Result<User> {
        let _ = (user, password);
        Err(todo_err())
    }

    pub async fn user_modify(&self, address: &str, change: &UserChange) -> Result<User> {
        let _ = (address, change);
        Err(todo_err())
    }

    /// Status deleted, `deleted_at = at`.
    pub async fn user_mark_deleted(&self, address: &str, at: i64) -> Result<User> {
        let _ = (address, at);
        Err(todo_err())
    }

    /// Removes the entry for good.
    pub async fn user_remove(&self, address: &str) -> Result<()> {
        let _ = address;
        Err(todo_err())
    }

    /// Users marked deleted before `before`.
    pub async fn deleted_users(&self, before: i64) -> Result<Vec<User>> {
        let _ = before;
        Err(todo_err())
    }

    pub async fn group_get(&self, address: &str) -> Result<Option<Group>> {
        let _ = address;
        Err(todo_err())
    }

    pub async fn group_list(&self, q: &Query) -> Result<Page<Group>> {
        let _ = q;
        Err(todo_err())
    }

    pub async fn group_add(&self, group: &Group) -> Result<Group> {
        let _ = group;
        Err(todo_err())
    }

    pub async fn group_modify(&self, address: &str, change: &GroupChange) -> Result<Group> {
        let _ = (address, change);
        Err(todo_err())
    }

    pub async fn group_delete(&self, address: &str) -> Result<()> {
        let _ = address;
        Err(todo_err())
    }

    pub async fn domain_get(&self, name: &str) -> Result<Option<Domain>> {
        let _ = name;
        Err(todo_err())
    }

    pub async fn domain_list(&self, q: &Query) -> Result<Page<Domain>> {
        let _ = q;
        Err(todo_err())
    }

    pub async fn domain_add(&self, domain: &Domain) -> Result<Domain> {
        let _ = domain;
        Err(todo_err())
    }

    pub async fn domain_modify(&self, name: &str, change: &DomainChange) -> Result<Domain> {
        let _ = (name, change);
        Err(todo_err())
    }

    /// Refused while the domain has users or groups.
    pub async fn domain_delete(&self, name: &str) -> Result<()> {
        let _ = name;
        Err(todo_err())
    }

    /// (users, quota bytes given to them) of a domain.
    pub async fn domain_usage(&self, name: &str) -> Result<(u64, u64)> {
        let _ = name;
        Err(todo_err())
    }
}

fn todo_err() -> ProvError {
    ProvError::Other(anyhow::anyhow!("not built yet"))
}
