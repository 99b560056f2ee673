//! Recipient policy: what a RCPT address means, asked of the directory.
//!
//! SMTP (inbound MX): only our domains (never an open relay); users,
//! aliases and groups, forwards, expanded here. LMTP (store role): the MTA
//! has already expanded; only a known, active user is accepted.
//!
//! A directory that cannot answer is a temporary failure, never "unknown".
//!
//! The Sun schema's statuses and routing are honoured here
//! (docs/directory.md): deleted users per `provision.deleted_mail`,
//! inactive groups and domains deferred (450 4.2.1), deleted ones unknown,
//! lists restricted to some posters checked against the envelope sender
//! (550 5.7.1), `mailRoutingAddress` followed like a forward.

use std::collections::{HashMap, HashSet};

use tracing::warn;

use super::session::{Flavor, Verdict};
use crate::config::DeletedMail;
use crate::deliver::Target;
use crate::directory::{
    canonical_address, domain_of, Account, DirError, Directory, EntryStatus, Recipient,
};

/// Nesting depth of aliases/groups/forwards followed before giving up.
pub const MAX_DEPTH: usize = 8;
/// Directory lookups one RCPT may cost while expanding lists.
pub const MAX_LOOKUPS: usize = 1000;

/// Who may send where. Submission (later) adds authenticated relaying.
#[derive(Debug, Clone)]
pub struct Policy {
    pub flavor: Flavor,
    /// Recipients outside our domains are accepted (authenticated
    /// submission, later). Inbound SMTP: false.
    pub relay_allowed: bool,
    /// Forwards to other domains are accepted (a queue exists to carry
    /// them); otherwise such a RCPT is refused.
    pub forward_offsite: bool,
    /// LMTP: accept only users whose mailHost is this store.
    pub config: Option<std::sync::Arc<crate::config::Config>>,
    /// LMTP: this process's store, whose moves (`Store::moving`) defer
    /// recipients.
    pub store: Option<crate::store::Store>,
}

impl Policy {
    pub fn inbound(flavor: Flavor) -> Policy {
        Policy {
            flavor,
            relay_allowed: false,
            forward_offsite: false,
            config: None,
            store: None,
        }
    }

    /// The policy of a listener of this process.
    pub fn for_services(flavor: Flavor, services: &crate::services::Services) -> Policy {
        Policy {
            forward_offsite: services.queue.is_some(),
            config: Some(services.config.clone()),
            store: services.store.clone(),
            ..Policy::inbound(flavor)
        }
    }

    /// Authenticated submission: any domain (the session lets only an
    /// authenticated or trusted client get as far as RCPT); our own
    /// domains resolve like inbound mail.
    pub fn submission(services: &crate::services::Services) -> Policy {
        Policy {
            relay_allowed: services.queue.is_some(),
            ..Policy::for_services(Flavor::Smtp, services)
        }
    }

    /// The target of a mailbox: the directory's values; the effective
    /// quota is applied at delivery (`deliver::quota`).
    fn target(&self, a: &Account) -> Target {
        Target {
            partition: a.partition.clone(),
            quota: a.quota,
            msg_quota: a.msg_quota,
            mail_host: a.mail_host.clone(),
            ..Target::mailbox(a.address.clone())
        }
    }
}

impl Policy {
    /// Does this account take mail? An active one does; one marked
    /// deleted per `provision.deleted_mail` (refused as unknown, 550
    /// 5.1.1, or kept until the purge); an inactive one does not (550
    /// 5.2.1).
    fn receives(&self, a: &Account) -> Result<(), Verdict> {
        if a.active {
            return Ok(());
        }
        if !a.deleted {
            return Err(Verdict::Disabled);
        }
        let keep = self
            .config
            .as_ref()
            .is_some_and(|c| c.provision.deleted_mail == DeletedMail::Keep);
        if keep {
            Ok(())
        } else {
            Err(Verdict::NoSuchUser)
        }
    }
}

/// Resolves one RCPT address (the envelope sender unknown: lists that
/// restrict their posters are not checked).
pub async fn resolve(dir: &Directory, policy: &Policy, address: &str) -> Verdict {
    resolve_from(dir, policy, None, address).await
}

/// Resolves one RCPT address sent by `sender` (the MAIL FROM address,
/// "" for `<>`): a list that names its allowed broadcasters or domains
/// refuses other senders (550 5.7.1).
pub async fn resolve_from(
    dir: &Directory,
    policy: &Policy,
    sender: Option<&str>,
    address: &str,
) -> Verdict {
    let result = match policy.flavor {
        Flavor::Lmtp => resolve_lmtp(dir, policy, address).await,
        Flavor::Smtp => resolve_smtp(dir, policy, sender, address).await,
    };
    result.unwrap_or_else(|DirError::Temporary(e)| {
        warn!(error = %e, "directory lookup failed");
        Verdict::Temporary
    })
}

async fn resolve_lmtp(
    dir: &Directory,
    policy: &Policy,
    address: &str,
) -> Result<Verdict, DirError> {
    let found = dir.lookup(address).await?;
    if let Some(Recipient::User(a)) = &found {
        if let Err(v) = policy.receives(a) {
            return Ok(v);
        }
        // An inactive domain's mail waits (the MTA retries).
        if dir
            .domain_status(domain_of(&a.address).unwrap_or(""))
            .await?
            == Some(EntryStatus::Inactive)
        {
            return Ok(Verdict::Suspended);
        }
    }
    Ok(match found {
        None | Some(Recipient::List(_)) => Verdict::NoSuchUser,
        // Being moved to another store, or just moved (msgd user move):
        // the MTA retries, then reaching the new store.
        Some(Recipient::User(a))
            if policy
                .store
                .as_ref()
                .is_some_and(|s| s.moving().deferred(&a.address).is_some()) =>
        {
            warn!(rcpt = %address, "LMTP recipient is being moved between stores: deferred");
            Verdict::Moving
        }
        // Just moved here, and this store's directory cache still names
        // the old one: retried, never bounced.
        Some(Recipient::User(a))
            if policy
                .store
                .as_ref()
                .is_some_and(|s| s.moving().arriving(&a.address))
                && policy
                    .config
                    .as_ref()
                    .is_some_and(|c| !crate::deliver::is_own_store(c, a.mail_host.as_deref())) =>
        {
            warn!(rcpt = %address, "LMTP recipient is being moved here: deferred");
            Verdict::Moving
        }
        Some(Recipient::User(a))
            if policy
                .config
                .as_ref()
                .is_some_and(|c| !crate::deliver::is_own_store(c, a.mail_host.as_deref())) =>
        {
            warn!(rcpt = %address, mail_host = ?a.mail_host, "LMTP recipient lives on another store");
            Verdict::WrongStore
        }
        Some(Recipient::User(a)) => Verdict::Accept(vec![policy.target(&a)]),
    })
}

async fn resolve_smtp(
    dir: &Directory,
    policy: &Policy,
    sender: Option<&str>,
    address: &str,
) -> Result<Verdict, DirError> {
    let address = canonical_address(address);
    let Some(domain) = domain_of(&address) else {
        return Ok(Verdict::NoSuchUser);
    };
    let status = dir.domain_status(domain).await?;
    if status == Some(EntryStatus::Inactive) {
        return Ok(Verdict::Suspended);
    }
    // A deleted domain is not ours any more.
    if status != Some(EntryStatus::Active) {
        // Relaying is for authenticated submission; inbound never.
        if policy.relay_allowed && valid_remote_address(&address) {
            return Ok(Verdict::Accept(vec![Target::remote(address)]));
        }
        return Ok(Verdict::RelayDenied);
    }
    let top = match dir.lookup(&address).await? {
        None => return Ok(Verdict::NoSuchUser),
        Some(Recipient::User(a)) => match policy.receives(&a) {
            Ok(()) => Recipient::User(a),
            Err(v) => return Ok(v),
        },
        Some(Recipient::List(l)) => match l.status {
            EntryStatus::Inactive => return Ok(Verdict::Suspended),
            EntryStatus::Deleted => return Ok(Verdict::NoSuchUser),
            EntryStatus::Active => {
                if sender.is_some_and(|s| !l.allows_sender(s)) {
                    tracing::info!(rcpt = %address, "sender may not post to this list");
                    return Ok(Verdict::NotAllowed);
                }
                Recipient::List(l)
            }
        },
    };
    let mut x = Expansion {
        dir,
        policy,
        sender,
        local_domains: HashMap::new(),
        seen: HashSet::from([address.clone()]),
        targets: Vec::new(),
        offsite: Vec::new(),
        lookups: 1,
    };
    x.expand(&address, top, 0, None).await?;
    if !x.offsite.is_empty() {
        if !policy.forward_offsite {
            warn!(rcpt = %address, offsite = ?x.offsite,
                "recipient forwards outside our domains and this process has no queue; refused");
            return Ok(Verdict::OffSite);
        }
        for (a, sender) in std::mem::take(&mut x.offsite) {
            x.targets.push(Target {
                sender,
                ..Target::remote(a)
            });
        }
    }
    if x.targets.is_empty() {
        return Ok(Verdict::NoSuchUser);
    }
    Ok(Verdict::Accept(x.targets))
}

/// A relayable address: a local part and a domain that can be looked up
/// (a dotted name or an address literal).
fn valid_remote_address(address: &str) -> bool {
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && domain.len() <= 255
                && (domain.starts_with('[')
                    || domain.split('.').all(|l| !l.is_empty() && l.len() <= 63))
        }
        None => false,
    }
}

/// Expansion of aliases, groups and forwards into local mailboxes:
/// breadth by recursion with a depth limit, every address visited once.
struct Expansion<'a> {
    dir: &'a Directory,
    policy: &'a Policy,
    /// The envelope sender, when known: lists restricted to some posters
    /// are skipped for others.
    sender: Option<&'a str>,
    local_domains: HashMap<String, bool>,
    seen: HashSet<String>,
    targets: Vec<Target>,
    /// Addresses outside our domains that the expansion reached, with the
    /// errors-to address of the nearest list they came through.
    offsite: Vec<(String, Option<String>)>,
    lookups: usize,
}

impl Expansion<'_> {
    /// Adds what `r` (the directory entry of `address`) delivers to.
    /// `errors_to`: the errors-to address of the nearest list above (the
    /// envelope sender of the copies it makes; a nested list with its own
    /// replaces it).
    async fn expand(
        &mut self,
        address: &str,
        r: Recipient,
        depth: usize,
        errors_to: Option<String>,
    ) -> Result<(), DirError> {
        let (next, errors_to): (Vec<String>, Option<String>) = match r {
            // mailRoutingAddress: the recipient is rewritten to it (no
            // mailbox copy, no forwards); the route follows that address
            // like a forward, loop-safe through `seen` and MAX_DEPTH.
            Recipient::User(a)
                if a.routing_address
                    .as_ref()
                    .is_some_and(|r| *r != a.address && !a.aliases.contains(r)) =>
            {
                (a.routing_address.into_iter().collect(), errors_to)
            }
            Recipient::User(a) => {
                if (a.keep_mailbox || a.forward.is_empty())
                    && !self.targets.iter().any(|t| t.address == a.address)
                {
                    self.targets.push(Target {
                        sender: errors_to.clone(),
                        ..self.policy.target(&a)
                    });
                }
                (a.forward, errors_to)
            }
            Recipient::List(l) => (l.members, l.errors_to.or(errors_to)),
        };
        for member in next {
            let member = canonical_address(&member);
            if !self.seen.insert(member.clone()) {
                continue;
            }
            if depth + 1 > MAX_DEPTH || self.lookups >= MAX_LOOKUPS {
                warn!(rcpt = %address, member = %member, "alias expansion too deep or too wide; member skipped");
                continue;
            }
            let Some(domain) = domain_of(&member).map(str::to_string) else {
                warn!(rcpt = %address, member = %member, "alias member without a domain; skipped");
                continue;
            };
            if !self.is_local(&domain).await? {
                self.offsite.push((member, errors_to.clone()));
                continue;
            }
            self.lookups += 1;
            match self.dir.lookup(&member).await? {
                None => {
                    warn!(rcpt = %address, member = %member, "alias member unknown; skipped");
                }
                Some(Recipient::User(a)) if self.policy.receives(&a).is_err() => {
                    warn!(rcpt = %address, member = %member, "alias member inactive or deleted; skipped");
                }
                Some(Recipient::List(l)) if l.status != EntryStatus::Active => {
                    warn!(rcpt = %address, member = %member, status = l.status.as_str(),
                        "nested list not active; skipped");
                }
                Some(Recipient::List(l)) if self.sender.is_some_and(|s| !l.allows_sender(s)) => {
                    warn!(rcpt = %address, member = %member,
                        "sender may not post to nested list; skipped");
                }
                Some(r) => Box::pin(self.expand(&member, r, depth + 1, errors_to.clone())).await?,
            }
        }
        Ok(())
    }

    async fn is_local(&mut self, domain: &str) -> Result<bool, DirError> {
        if let Some(&l) = self.local_domains.get(domain) {
            return Ok(l);
        }
        let l = self.dir.is_local_domain(domain).await?;
        self.local_domains.insert(domain.to_string(), l);
        Ok(l)
    }
}
