//! The command line. Exit codes: 0 ok, 1 runtime failure, 2 bad usage or
//! configuration (systemd's `RestartPreventExitStatus=2` stops a restart
//! loop on a broken config).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{self, Config};
use crate::roles::Role;

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_USAGE: i32 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "msgd",
    version,
    about = "msgd: one binary for every tier of a mail deployment"
)]
pub struct Cli {
    /// Configuration file (TOML). Without it msgd runs the built-in
    /// quickstart: loopback, ports + 10000, data in ./msgd-data.
    #[arg(long, short = 'c', global = true)]
    config: Option<PathBuf>,

    /// Roles to run: mta-in, mta-out, store, mmp, mem, or all-in-one;
    /// several separated by commas.
    #[arg(long, short = 'r', default_value = "all-in-one", global = true)]
    role: String,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (the default).
    Run,
    /// Check the configuration; print every error; exit 2 if any.
    CheckConfig,
    /// Users and their aliases, in the directory (either back end; works
    /// while the server runs). docs/admin.md.
    User(crate::provision::cli::UserArgs),
    /// Groups (mailing lists) in the directory.
    Group(crate::provision::cli::GroupArgs),
    /// Mail domains in the directory.
    Domain(crate::provision::cli::DomainArgs),
    /// IMAP consistency stress test and benchmark against a server on
    /// loopback (exit 1 on any violation). Needs no configuration.
    Stress(crate::stress::StressArgs),
    /// The MTA queue (works while the server runs).
    #[command(subcommand)]
    Queue(QueueCmd),
    /// The message store (works while the server runs).
    #[command(subcommand)]
    Store(StoreCmd),
    /// Read and change the configuration file (keeps its comments).
    #[command(subcommand)]
    Config(crate::ops::configcmd::ConfigCmd),
    /// Back up users' mail to a folder (incremental; while mail flows).
    Backup(crate::ops::backup::BackupArgs),
    /// Restore users' mail from a backup folder.
    Restore(crate::ops::backup::RestoreArgs),
    /// Rebuild the mboxlist from the message files.
    Reconstruct(crate::ops::reconstruct::ReconstructArgs),
    /// Check that index entries and message files agree.
    Verify(crate::ops::reconstruct::VerifyArgs),
    /// Apply the retention rules, purge expunged files, trim the
    /// expunged table.
    Expire(crate::ops::expire::ExpireArgs),
    /// Import a user's mail from a Maildir or an mbox.
    Import(crate::ops::migrate::ImportArgs),
    /// Export a user's mail to a Maildir.
    Export(crate::ops::migrate::ExportArgs),
    /// DKIM signing keys and their DNS records (issue 16).
    #[command(subcommand)]
    Dkim(crate::ops::dkim::DkimCmd),
}

#[derive(Subcommand, Debug)]
enum StoreCmd {
    /// The mboxlist and partitions: sizes, cache hit rate, free disk.
    Stats(crate::ops::stats::StatsArgs),
}

#[derive(Subcommand, Debug)]
enum QueueCmd {
    /// List queued messages and their recipients.
    List,
    /// Show one message: envelope, recipient states, header.
    Show { id: String },
    /// Make every pending recipient due now.
    Flush,
    /// Make one message's pending recipients due now.
    Retry { id: String },
    /// Delete a message without notifying anyone.
    Delete { id: String },
    /// Stop delivery attempts for a message until released.
    Hold { id: String },
    /// Resume delivery of a held message (due now).
    Release { id: String },
}

pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    EXIT_OK
                }
                _ => EXIT_USAGE,
            };
        }
    };
    if let Some(Command::Stress(args)) = cli.command {
        return crate::stress::main(args);
    }
    if let Some(Command::Config(cmd)) = cli.command {
        // Works on the file itself, including one that does not load.
        return crate::ops::configcmd::cli(cli.config.as_deref(), &cli.role, cmd);
    }
    let roles = match Role::parse_list(&cli.role) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("msgd: {e}");
            return EXIT_USAGE;
        }
    };
    let loaded = match config::load(cli.config.as_deref(), &roles) {
        Ok(l) => l,
        Err(errors) => {
            let origin = cli
                .config
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "built-in defaults".into());
            eprintln!("msgd: configuration errors ({origin}):");
            for e in errors {
                eprintln!("  {e}");
            }
            return EXIT_USAGE;
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => crate::roles::run::main(loaded, roles, cli.config.clone()),
        Command::CheckConfig => {
            println!("configuration ok");
            EXIT_OK
        }
        Command::User(c) => report(crate::provision::cli::user(&loaded.config, c)),
        Command::Group(c) => report(crate::provision::cli::group(&loaded.config, c)),
        Command::Domain(c) => report(crate::provision::cli::domain(&loaded.config, c)),
        Command::Stress(_) => EXIT_USAGE, // handled above
        Command::Queue(c) => report(queue(&loaded.config, c)),
        Command::Config(_) => EXIT_USAGE, // handled above
        Command::Store(StoreCmd::Stats(a)) => report(crate::ops::stats::cli(&loaded.config, a)),
        Command::Backup(a) => report(crate::ops::backup::cli_backup(&loaded.config, a)),
        Command::Restore(a) => report(crate::ops::backup::cli_restore(&loaded.config, a)),
        Command::Reconstruct(a) => {
            report(crate::ops::reconstruct::cli_reconstruct(&loaded.config, a))
        }
        Command::Verify(a) => report(crate::ops::reconstruct::cli_verify(&loaded.config, a)),
        Command::Expire(a) => report(crate::ops::expire::cli(&loaded.config, a)),
        Command::Import(a) => report(crate::ops::migrate::cli_import(&loaded.config, a)),
        Command::Export(a) => report(crate::ops::migrate::cli_export(&loaded.config, a)),
        Command::Dkim(c) => report(crate::ops::dkim::cli(&loaded.config, c)),
    }
}

fn report(r: anyhow::Result<()>) -> i32 {
    match r {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("msgd: {e:#}");
            EXIT_FAILURE
        }
    }
}

fn queue(c: &Config, cmd: QueueCmd) -> anyhow::Result<()> {
    use crate::queue::control::{self, Command as Ctl};
    let dir = c.data_path(&c.queue.dir, "queue");
    let check = |id: &str| -> anyhow::Result<()> {
        if crate::queue::valid_id(id) {
            Ok(())
        } else {
            anyhow::bail!("'{id}' is not a queue id")
        }
    };
    let fmt_time = |t: i64| {
        chrono::DateTime::from_timestamp(t, 0)
            .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_else(|| "-".into())
    };
    let ctl = match cmd {
        QueueCmd::List => {
            let list = crate::queue::scan(&dir);
            for m in &list {
                println!(
                    "{}{} {:>9} {} <{}>",
                    m.id,
                    if m.held { " (held)" } else { "" },
                    m.size,
                    fmt_time(m.received),
                    m.sender
                );
                for (addr, status, attempts, _, err) in &m.recipients {
                    let err = err
                        .as_deref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default();
                    println!("    {addr} {status:?} attempts={attempts}{err}");
                }
            }
            println!("{} message(s) in {}", list.len(), dir.display());
            return Ok(());
        }
        QueueCmd::Show { id } => {
            check(&id)?;
            let path = dir.join(format!("{id}.q"));
            let Some(l) = crate::queue::record::load(&path)? else {
                anyhow::bail!("{id}: the queue file is torn");
            };
            let info = crate::queue::scan(&dir)
                .into_iter()
                .find(|m| m.id == id)
                .ok_or_else(|| anyhow::anyhow!("{id}: no such message"))?;
            println!("id: {id}{}", if info.held { " (held)" } else { "" });
            println!("sender: <{}>", l.envelope.sender);
            println!("received: {}", fmt_time(l.envelope.received));
            println!("size: {}", l.data.len());
            if let Some(e) = &l.envelope.envid {
                println!("envid: {e}");
            }
            println!("ret: {}", if l.envelope.ret_full { "FULL" } else { "HDRS" });
            for (addr, status, attempts, next, err) in &info.recipients {
                println!(
                    "recipient: {addr} {status:?} attempts={attempts} next={}",
                    fmt_time(*next)
                );
                if let Some(e) = err {
                    println!("    last error: {e}");
                }
            }
            println!();
            let end = l
                .data
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(l.data.len(), |p| p + 2);
            print!("{}", String::from_utf8_lossy(&l.data[..end]));
            return Ok(());
        }
        QueueCmd::Flush => Ctl::Flush,
        QueueCmd::Retry { id } => Ctl::Retry(id),
        QueueCmd::Delete { id } => Ctl::Delete(id),
        QueueCmd::Hold { id } => Ctl::Hold(id),
        QueueCmd::Release { id } => Ctl::Release(id),
    };
    if let Ctl::Retry(id) | Ctl::Delete(id) | Ctl::Hold(id) | Ctl::Release(id) = &ctl {
        check(id)?;
    }
    let answer = control::send(&dir, &ctl)?;
    println!("{answer}");
    if answer.contains("no such message") || answer.contains("failed") {
        anyhow::bail!("{answer}");
    }
    Ok(())
}
