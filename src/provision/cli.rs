//! `msgd user|group|domain add|modify|delete|show|list` over the
//! `Provisioner` (either directory back end), `--json` everywhere,
//! `--as ADDRESS` to act as that administrator (default: the site actor
//! `cli:<unix user>`). Passwords come from standard input only, never
//! from argv where `ps` shows them. docs/admin.md.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;

use clap::{Args, Subcommand};

use super::*;
use crate::config::Config;

/// Options every provisioning command takes.
#[derive(Args, Debug, Clone, Default)]
pub struct Common {
    /// Print the result as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// Act as this administrator (its rights from the directory); default:
    /// the site, as `cli:<unix user>`.
    #[arg(long = "as", value_name = "ADDRESS", global = true)]
    pub as_admin: Option<String>,
}

#[derive(Args, Debug)]
pub struct UserArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub cmd: UserCmd,
}

#[derive(Args, Debug)]
pub struct GroupArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub cmd: GroupCmd,
}

#[derive(Args, Debug)]
pub struct DomainArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub cmd: DomainCmd,
}

#[derive(Args, Debug, Clone, Default)]
pub struct ListArgs {
    /// Only this domain.
    #[arg(long)]
    pub domain: Option<String>,
    /// Only entries whose address or name contains this.
    #[arg(long)]
    pub text: Option<String>,
    /// Only entries with this status (active, inactive, deleted).
    #[arg(long, value_parser = parse_status)]
    pub status: Option<EntryStatus>,
    /// Skip this many.
    #[arg(long, default_value_t = 0)]
    pub offset: usize,
    /// Show at most this many (up to 1000); 0: all, page after page.
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
}

fn parse_status(s: &str) -> std::result::Result<EntryStatus, String> {
    EntryStatus::parse(s).ok_or_else(|| format!("'{s}': give active, inactive or deleted"))
}

#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Add a user; the password is read from standard input.
    Add {
        address: String,
        #[arg(long)]
        name: Option<String>,
        /// Quota in bytes.
        #[arg(long)]
        quota: Option<u64>,
        /// Most messages.
        #[arg(long)]
        msg_quota: Option<u64>,
        /// Other addresses delivering to this user (repeatable).
        #[arg(long = "alias")]
        aliases: Vec<String>,
        /// Forward mail to this address (repeatable).
        #[arg(long)]
        forward: Vec<String>,
        /// With --forward: keep no copy in the mailbox.
        #[arg(long)]
        no_keep_mailbox: bool,
        /// The store (mailHost) holding the mailbox.
        #[arg(long)]
        mail_host: Option<String>,
        #[arg(long)]
        partition: Option<String>,
        /// A service class of `[provision.class]`.
        #[arg(long)]
        class: Option<String>,
        /// Create the account disabled (no login, no delivery).
        #[arg(long)]
        inactive: bool,
        /// Read the password from standard input (the default; a prompt
        /// on a terminal).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Change a user.
    Modify(UserModify),
    /// Mark a user deleted (mail refused or kept per
    /// `provision.deleted_mail`, no login); the purge removes it later.
    #[command(alias = "del")]
    Delete { address: String },
    /// Show a user.
    Show { address: String },
    /// List users.
    List(ListArgs),
    /// Change a password (read from standard input): `user modify
    /// ADDRESS --password-stdin`.
    #[command(hide = true)]
    Passwd { address: String },
    /// Add users from a CSV file (docs/admin.md); per-line errors are
    /// reported and the run goes on; exit 1 if any line failed.
    Import { file: std::path::PathBuf },
    /// Write users as CSV (no passwords) to FILE or standard output.
    Export {
        file: Option<std::path::PathBuf>,
        /// Only this domain.
        #[arg(long)]
        domain: Option<String>,
    },
    /// Purge users marked deleted longer than `provision.purge_after`
    /// whose mail is on this store: their mail, then their entry.
    Purge(super::purge::PurgeArgs),
    /// Move a user's mail to another store while both run.
    Move(crate::ops::moveuser::MoveArgs),
}

#[derive(Args, Debug, Default)]
pub struct UserModify {
    pub address: String,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub no_name: bool,
    /// Read a new password from standard input.
    #[arg(long)]
    pub password_stdin: bool,
    #[arg(long = "add-alias")]
    pub add_aliases: Vec<String>,
    #[arg(long = "remove-alias")]
    pub remove_aliases: Vec<String>,
    #[arg(long)]
    pub quota: Option<u64>,
    /// No quota (the store's default).
    #[arg(long)]
    pub no_quota: bool,
    #[arg(long)]
    pub msg_quota: Option<u64>,
    #[arg(long)]
    pub no_msg_quota: bool,
    /// active, inactive or deleted.
    #[arg(long, value_parser = parse_status)]
    pub status: Option<EntryStatus>,
    /// Replace the forwarding addresses (repeatable).
    #[arg(long)]
    pub forward: Vec<String>,
    /// Remove every forwarding address.
    #[arg(long)]
    pub no_forward: bool,
    /// Keep a copy in the mailbox (true/false).
    #[arg(long)]
    pub keep_mailbox: Option<bool>,
    /// (Site only; an existing mailbox moves with `msgd user move`.)
    #[arg(long)]
    pub mail_host: Option<String>,
    #[arg(long)]
    pub partition: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum GroupCmd {
    /// Add a group (mailing list) delivering to its members.
    Add {
        address: String,
        /// A member address (repeatable; at least one).
        #[arg(long = "member", required = true)]
        members: Vec<String>,
        #[arg(long)]
        name: Option<String>,
        /// Another address of the group (repeatable).
        #[arg(long = "alias")]
        aliases: Vec<String>,
        /// Envelope sender of the copies (mgrpErrorsTo).
        #[arg(long)]
        errors_to: Option<String>,
        /// Only these senders may post (repeatable).
        #[arg(long = "allowed-broadcaster")]
        allowed_broadcasters: Vec<String>,
        /// Only senders of these domains may post (repeatable).
        #[arg(long = "allowed-domain")]
        allowed_domains: Vec<String>,
        #[arg(long)]
        inactive: bool,
    },
    /// Change a group.
    Modify(GroupModify),
    /// Delete a group (at once: a group holds no mail).
    #[command(alias = "del")]
    Delete {
        address: String,
    },
    Show {
        address: String,
    },
    List(ListArgs),
}

#[derive(Args, Debug, Default)]
pub struct GroupModify {
    pub address: String,
    #[arg(long = "add-member")]
    pub add_members: Vec<String>,
    #[arg(long = "remove-member")]
    pub remove_members: Vec<String>,
    #[arg(long = "add-alias")]
    pub add_aliases: Vec<String>,
    #[arg(long = "remove-alias")]
    pub remove_aliases: Vec<String>,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub errors_to: Option<String>,
    #[arg(long)]
    pub no_errors_to: bool,
    /// Replace who may post (repeatable).
    #[arg(long = "allowed-broadcaster")]
    pub allowed_broadcasters: Vec<String>,
    /// Anyone may post again.
    #[arg(long)]
    pub no_allowed_broadcasters: bool,
    #[arg(long = "allowed-domain")]
    pub allowed_domains: Vec<String>,
    #[arg(long)]
    pub no_allowed_domains: bool,
    #[arg(long, value_parser = parse_status)]
    pub status: Option<EntryStatus>,
}

#[derive(Subcommand, Debug)]
pub enum DomainCmd {
    /// Add a local domain (site administrators).
    Add {
        domain: String,
        #[arg(long)]
        default_quota: Option<u64>,
        #[arg(long)]
        default_msg_quota: Option<u64>,
        #[arg(long)]
        default_mail_host: Option<String>,
        /// An administrator of the domain (repeatable).
        #[arg(long = "admin")]
        admins: Vec<String>,
        #[arg(long)]
        max_users: Option<u64>,
        /// Most quota bytes all users together may be given.
        #[arg(long)]
        max_quota: Option<u64>,
        #[arg(long)]
        inactive: bool,
    },
    Modify(DomainModify),
    /// Delete a domain without users or groups (site administrators).
    #[command(alias = "del")]
    Delete {
        domain: String,
    },
    Show {
        domain: String,
    },
    List(ListArgs),
}

#[derive(Args, Debug, Default)]
pub struct DomainModify {
    pub domain: String,
    #[arg(long, value_parser = parse_status)]
    pub status: Option<EntryStatus>,
    #[arg(long)]
    pub default_quota: Option<u64>,
    #[arg(long)]
    pub no_default_quota: bool,
    #[arg(long)]
    pub default_msg_quota: Option<u64>,
    #[arg(long)]
    pub no_default_msg_quota: bool,
    #[arg(long)]
    pub default_mail_host: Option<String>,
    #[arg(long)]
    pub no_default_mail_host: bool,
    #[arg(long = "add-admin")]
    pub add_admins: Vec<String>,
    #[arg(long = "remove-admin")]
    pub remove_admins: Vec<String>,
    #[arg(long)]
    pub max_users: Option<u64>,
    #[arg(long)]
    pub no_max_users: bool,
    #[arg(long)]
    pub max_quota: Option<u64>,
    #[arg(long)]
    pub no_max_quota: bool,
}

/// `Some(Some(v))` to set, `Some(None)` to clear, `None` to leave.
fn set_or_clear<T>(v: Option<T>, clear: bool) -> Option<Option<T>> {
    if clear {
        Some(None)
    } else {
        v.map(Some)
    }
}

/// Reads one line from standard input (a prompt on a terminal). The
/// password never appears in argv, where `ps` would show it.
pub fn read_password(prompt: &str) -> anyhow::Result<Secret> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("{prompt}: ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    // Bounded: a password is one short line.
    std::io::Read::take(stdin.lock(), 4096).read_line(&mut line)?;
    let pw = line.trim_end_matches(['\r', '\n']).to_string();
    if pw.is_empty() {
        anyhow::bail!("empty password (give it on standard input)");
    }
    Ok(Secret::from(pw))
}

/// The site actor of the operator's CLI.
pub fn cli_actor() -> Actor {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid{}", unsafe_uid()));
    Actor::Site {
        id: format!("cli:{user}"),
    }
}

fn unsafe_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Opens the provisioner and finds the actor.
async fn open(config: &Config, common: &Common) -> anyhow::Result<(Provisioner, Actor)> {
    let p = Provisioner::open(Arc::new(config.clone()))?;
    let actor = match &common.as_admin {
        None => cli_actor(),
        Some(a) => p.actor_named(a).await?,
    };
    Ok((p, actor))
}

fn show_user(u: &User) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "address: {}", u.address);
    if let Some(n) = &u.name {
        let _ = writeln!(out, "name: {n}");
    }
    let _ = writeln!(out, "status: {}", u.status.as_str());
    for a in u.aliases.iter().chain(&u.equivalents) {
        let _ = writeln!(out, "alias: {a}");
    }
    if let Some(q) = u.quota {
        let _ = writeln!(out, "quota: {q}");
    }
    if let Some(q) = u.msg_quota {
        let _ = writeln!(out, "msg_quota: {q}");
    }
    if let Some(h) = &u.mail_host {
        let _ = writeln!(out, "mail_host: {h}");
    }
    if let Some(p) = &u.partition {
        let _ = writeln!(out, "partition: {p}");
    }
    for f in &u.forward {
        let _ = writeln!(out, "forward: {f}");
    }
    if !u.forward.is_empty() {
        let _ = writeln!(out, "keep_mailbox: {}", u.keep_mailbox);
    }
    if let Some(c) = &u.class {
        let _ = writeln!(out, "class: {c}");
    }
    if let Some(t) = u.deleted_at {
        let _ = writeln!(out, "deleted_at: {t}");
    }
    out
}

fn user_line(u: &User) -> String {
    let mut line = u.address.clone();
    if u.status != EntryStatus::Active {
        line.push_str(&format!(" ({})", u.status.as_str()));
    }
    if let Some(q) = u.quota {
        line.push_str(&format!(" quota={q}"));
    }
    line
}

fn show_group(g: &Group) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "address: {}", g.address);
    if let Some(n) = &g.name {
        let _ = writeln!(out, "name: {n}");
    }
    let _ = writeln!(out, "status: {}", g.status.as_str());
    for a in &g.aliases {
        let _ = writeln!(out, "alias: {a}");
    }
    for m in &g.members {
        let _ = writeln!(out, "member: {m}");
    }
    for m in &g.member_dns {
        let _ = writeln!(out, "member_dn: {m}");
    }
    if let Some(e) = &g.errors_to {
        let _ = writeln!(out, "errors_to: {e}");
    }
    for b in &g.allowed_broadcasters {
        let _ = writeln!(out, "allowed_broadcaster: {b}");
    }
    for d in &g.allowed_domains {
        let _ = writeln!(out, "allowed_domain: {d}");
    }
    out
}

fn show_domain(d: &Domain) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "domain: {}", d.name);
    let _ = writeln!(out, "status: {}", d.status.as_str());
    let opt = |out: &mut String, k: &str, v: Option<u64>| {
        if let Some(v) = v {
            let _ = writeln!(out, "{k}: {v}");
        }
    };
    opt(&mut out, "default_quota", d.default_quota);
    opt(&mut out, "default_msg_quota", d.default_msg_quota);
    if let Some(h) = &d.default_mail_host {
        let _ = writeln!(out, "default_mail_host: {h}");
    }
    for a in &d.admins {
        let _ = writeln!(out, "admin: {a}");
    }
    opt(&mut out, "max_users", d.max_users);
    opt(&mut out, "max_quota", d.max_quota);
    out
}

fn query(l: &ListArgs) -> Query {
    Query {
        domain: l.domain.clone(),
        text: l.text.clone(),
        status: l.status,
        offset: l.offset,
        limit: if l.limit == 0 {
            MAX_PAGE
        } else {
            l.limit.min(MAX_PAGE)
        },
    }
}

/// Every page of a listing (`limit` 0) or one page.
async fn list_all<T, F, Fut>(l: &ListArgs, mut fetch: F) -> Result<Page<T>>
where
    F: FnMut(Query) -> Fut,
    Fut: std::future::Future<Output = Result<Page<T>>>,
{
    let mut q = query(l);
    let mut first = fetch(q.clone()).await?;
    if l.limit != 0 {
        return Ok(first);
    }
    while first.items.len() + l.offset < first.total {
        q.offset = l.offset + first.items.len();
        let next = fetch(q.clone()).await?;
        if next.items.is_empty() {
            break;
        }
        first.items.extend(next.items);
    }
    Ok(first)
}

pub fn user(config: &Config, args: UserArgs) -> anyhow::Result<()> {
    let UserArgs { common, cmd } = args;
    match cmd {
        UserCmd::Move(mut a) => {
            // `--json` is also the provisioning commands' global flag.
            a.json |= common.json;
            return crate::ops::moveuser::cli(config, a);
        }
        UserCmd::Purge(a) => return super::purge::cli(config, a, common.json),
        _ => {}
    }
    // Read before the runtime starts (a prompt on a terminal).
    let password = match &cmd {
        UserCmd::Add { .. } | UserCmd::Passwd { .. } => Some(read_password("password")?),
        UserCmd::Modify(m) if m.password_stdin => Some(read_password("new password")?),
        _ => None,
    };
    runtime()?.block_on(async move {
        let (p, actor) = open(config, &common).await?;
        let json = common.json;
        match cmd {
            UserCmd::Add {
                address,
                name,
                quota,
                msg_quota,
                aliases,
                forward,
                no_keep_mailbox,
                mail_host,
                partition,
                class,
                inactive,
                password_stdin: _,
            } => {
                let u = User {
                    address,
                    name,
                    aliases,
                    quota,
                    msg_quota,
                    keep_mailbox: !no_keep_mailbox,
                    forward,
                    mail_host,
                    partition,
                    class,
                    status: if inactive {
                        EntryStatus::Inactive
                    } else {
                        EntryStatus::Active
                    },
                    ..Default::default()
                };
                let pw = password.unwrap_or_else(|| Secret::from(""));
                let made = p.user_add(&actor, u, pw).await?;
                crate::ops::emit(json, &made, || format!("added {}", made.address))?;
            }
            UserCmd::Modify(m) => {
                let change = UserChange {
                    name: set_or_clear(m.name, m.no_name),
                    password,
                    add_aliases: m.add_aliases,
                    remove_aliases: m.remove_aliases,
                    quota: set_or_clear(m.quota, m.no_quota),
                    msg_quota: set_or_clear(m.msg_quota, m.no_msg_quota),
                    status: m.status,
                    keep_mailbox: m.keep_mailbox,
                    forward: if m.no_forward {
                        Some(Vec::new())
                    } else if m.forward.is_empty() {
                        None
                    } else {
                        Some(m.forward)
                    },
                    mail_host: m.mail_host.map(Some),
                    partition: m.partition.map(Some),
                    ..Default::default()
                };
                let after = p.user_modify(&actor, &m.address, change).await?;
                crate::ops::emit(json, &after, || format!("modified {}", after.address))?;
            }
            UserCmd::Passwd { address } => {
                let change = UserChange {
                    password,
                    ..Default::default()
                };
                let after = p.user_modify(&actor, &address, change).await?;
                crate::ops::emit(json, &after, || {
                    format!("password changed for {}", after.address)
                })?;
            }
            UserCmd::Delete { address } => {
                let after = p.user_delete(&actor, &address).await?;
                crate::ops::emit(json, &after, || {
                    format!("{} marked deleted (purged later)", after.address)
                })?;
            }
            UserCmd::Show { address } => {
                let u = p.user_get(&actor, &address).await?;
                crate::ops::emit(json, &u, || show_user(&u))?;
            }
            UserCmd::List(l) => {
                let page = list_all(&l, |q| {
                    let (p, actor) = (&p, &actor);
                    async move { p.user_list(actor, &q).await }
                })
                .await?;
                crate::ops::emit(json, &page, || {
                    page.items
                        .iter()
                        .map(user_line)
                        .collect::<Vec<_>>()
                        .join("\n")
                })?;
            }
            UserCmd::Import { file } => {
                return super::csv::import(&p, &actor, &file, json).await;
            }
            UserCmd::Export { file, domain } => {
                return super::csv::export(&p, &actor, file.as_deref(), domain).await;
            }
            UserCmd::Move(_) | UserCmd::Purge(_) => unreachable!("handled above"),
        }
        Ok(())
    })
}

pub fn group(config: &Config, args: GroupArgs) -> anyhow::Result<()> {
    let GroupArgs { common, cmd } = args;
    runtime()?.block_on(async move {
        let (p, actor) = open(config, &common).await?;
        let json = common.json;
        match cmd {
            GroupCmd::Add {
                address,
                members,
                name,
                aliases,
                errors_to,
                allowed_broadcasters,
                allowed_domains,
                inactive,
            } => {
                let g = Group {
                    address,
                    name,
                    aliases,
                    members,
                    errors_to,
                    allowed_broadcasters,
                    allowed_domains,
                    status: if inactive {
                        EntryStatus::Inactive
                    } else {
                        EntryStatus::Active
                    },
                    ..Default::default()
                };
                let made = p.group_add(&actor, g).await?;
                crate::ops::emit(json, &made, || format!("group {} added", made.address))?;
            }
            GroupCmd::Modify(m) => {
                let list = |v: Vec<String>, clear: bool| {
                    if clear {
                        Some(Vec::new())
                    } else if v.is_empty() {
                        None
                    } else {
                        Some(v)
                    }
                };
                let change = GroupChange {
                    name: m.name.map(Some),
                    add_aliases: m.add_aliases,
                    remove_aliases: m.remove_aliases,
                    add_members: m.add_members,
                    remove_members: m.remove_members,
                    errors_to: set_or_clear(m.errors_to, m.no_errors_to),
                    allowed_broadcasters: list(m.allowed_broadcasters, m.no_allowed_broadcasters),
                    allowed_domains: list(m.allowed_domains, m.no_allowed_domains),
                    status: m.status,
                };
                let after = p.group_modify(&actor, &m.address, change).await?;
                crate::ops::emit(json, &after, || format!("group {} modified", after.address))?;
            }
            GroupCmd::Delete { address } => {
                p.group_delete(&actor, &address).await?;
                crate::ops::emit(json, &serde_json::json!({ "deleted": address }), || {
                    format!("group {address} deleted")
                })?;
            }
            GroupCmd::Show { address } => {
                let g = p.group_get(&actor, &address).await?;
                crate::ops::emit(json, &g, || show_group(&g))?;
            }
            GroupCmd::List(l) => {
                let page = list_all(&l, |q| {
                    let (p, actor) = (&p, &actor);
                    async move { p.group_list(actor, &q).await }
                })
                .await?;
                crate::ops::emit(json, &page, || {
                    let line = |g: &Group| format!("{} -> {}", g.address, g.members.join(", "));
                    page.items.iter().map(line).collect::<Vec<_>>().join("\n")
                })?;
            }
        }
        Ok(())
    })
}

pub fn domain(config: &Config, args: DomainArgs) -> anyhow::Result<()> {
    let DomainArgs { common, cmd } = args;
    runtime()?.block_on(async move {
        let (p, actor) = open(config, &common).await?;
        let json = common.json;
        match cmd {
            DomainCmd::Add {
                domain,
                default_quota,
                default_msg_quota,
                default_mail_host,
                admins,
                max_users,
                max_quota,
                inactive,
            } => {
                let d = Domain {
                    name: domain,
                    status: if inactive {
                        EntryStatus::Inactive
                    } else {
                        EntryStatus::Active
                    },
                    default_quota,
                    default_msg_quota,
                    default_mail_host,
                    admins,
                    max_users,
                    max_quota,
                };
                let made = p.domain_add(&actor, d).await?;
                crate::ops::emit(json, &made, || format!("domain {} added", made.name))?;
            }
            DomainCmd::Modify(m) => {
                let change = DomainChange {
                    status: m.status,
                    default_quota: set_or_clear(m.default_quota, m.no_default_quota),
                    default_msg_quota: set_or_clear(m.default_msg_quota, m.no_default_msg_quota),
                    default_mail_host: set_or_clear(m.default_mail_host, m.no_default_mail_host),
                    add_admins: m.add_admins,
                    remove_admins: m.remove_admins,
                    max_users: set_or_clear(m.max_users, m.no_max_users),
                    max_quota: set_or_clear(m.max_quota, m.no_max_quota),
                };
                let after = p.domain_modify(&actor, &m.domain, change).await?;
                crate::ops::emit(json, &after, || format!("domain {} modified", after.name))?;
            }
            DomainCmd::Delete { domain } => {
                p.domain_delete(&actor, &domain).await?;
                crate::ops::emit(json, &serde_json::json!({ "deleted": domain }), || {
                    format!("domain {domain} deleted")
                })?;
            }
            DomainCmd::Show { domain } => {
                let d = p.domain_get(&actor, &domain).await?;
                crate::ops::emit(json, &d, || show_domain(&d))?;
            }
            DomainCmd::List(l) => {
                let page = list_all(&l, |q| {
                    let (p, actor) = (&p, &actor);
                    async move { p.domain_list(actor, &q).await }
                })
                .await?;
                crate::ops::emit(json, &page, || {
                    let line = |d: &Domain| match d.status {
                        EntryStatus::Active => d.name.clone(),
                        st => format!("{} ({})", d.name, st.as_str()),
                    };
                    page.items.iter().map(line).collect::<Vec<_>>().join("\n")
                })?;
            }
        }
        Ok(())
    })
}
