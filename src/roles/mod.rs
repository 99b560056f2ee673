//! Roles: what one machine of a two-tier deployment does. Each role module
//! exposes `run(services, tracker)`, which binds the role's listeners and
//! serves until shutdown.

use std::fmt;

pub mod run;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    MtaIn,
    MtaOut,
    Store,
    Mmp,
    Mem,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::MtaIn, Role::MtaOut, Role::Store, Role::Mmp, Role::Mem];

    pub fn name(self) -> &'static str {
        match self {
            Role::MtaIn => "mta-in",
            Role::MtaOut => "mta-out",
            Role::Store => "store",
            Role::Mmp => "mmp",
            Role::Mem => "mem",
        }
    }

    /// Parses `mta-in,store` or `all-in-one` into a sorted, deduplicated list.
    pub fn parse_list(s: &str) -> Result<Vec<Role>, String> {
        let mut roles = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part == "all-in-one" || part == "all" {
                roles.extend(Role::ALL);
                continue;
            }
            match Role::ALL.iter().find(|r| r.name() == part) {
                Some(r) => roles.push(*r),
                None => {
                    return Err(format!(
                    "unknown role '{part}' (roles: mta-in, mta-out, store, mmp, mem, all-in-one)"
                ))
                }
            }
        }
        if roles.is_empty() {
            return Err("no role given".into());
        }
        roles.sort();
        roles.dedup();
        Ok(roles)
    }

    pub fn is_all_in_one(roles: &[Role]) -> bool {
        Role::ALL.iter().all(|r| roles.contains(r))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
