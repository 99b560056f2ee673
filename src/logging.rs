//! Logging: text by default, JSON by option (`log.format`), to stderr or to
//! `<log.dir>/msgd.log`. Each connection runs in a `session` span carrying
//! its id, protocol and peer. Passwords and AUTH data are never logged.
//!
//! `log.level` changes on reload (SIGHUP, `set_level`); format and folder
//! are read at start. The subscriber is process-global (tracing's design),
//! and so is the handle that swaps its filter.

use std::fs::OpenOptions;
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

type SetLevel = Box<dyn Fn(EnvFilter) -> anyhow::Result<()> + Send + Sync>;

/// Swaps the filter of the subscriber `init` installed.
static SET_LEVEL: OnceLock<SetLevel> = OnceLock::new();

/// Installs the reloadable filter on a builder, then the subscriber.
macro_rules! install {
    ($builder:expr, $filter:expr) => {{
        let b = $builder.with_env_filter($filter).with_filter_reloading();
        let handle = b.reload_handle();
        let r = b.try_init();
        if r.is_ok() {
            let _ = SET_LEVEL.set(Box::new(move |f| {
                handle.reload(f).map_err(|e| anyhow::anyhow!("{e}"))
            }));
        }
        r
    }};
}

pub fn init(c: &LogConfig) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&c.level)
        .map_err(|e| anyhow::anyhow!("log.level '{}': {e}", c.level))?;
    let builder = tracing_subscriber::fmt().with_target(false);
    let result = if c.dir.is_empty() {
        if c.format == LogFormat::Json {
            install!(builder.json().with_writer(std::io::stderr), filter)
        } else {
            use std::io::IsTerminal;
            install!(
                builder
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
                filter
            )
        }
    } else {
        std::fs::create_dir_all(&c.dir)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(std::path::Path::new(&c.dir).join("msgd.log"))?;
        let w = Mutex::new(file);
        if c.format == LogFormat::Json {
            install!(builder.json().with_ansi(false).with_writer(w), filter)
        } else {
            install!(builder.with_ansi(false).with_writer(w), filter)
        }
    };
    result.map_err(|e| anyhow::anyhow!("logging: {e}"))
}

/// A new `log.level` from a reloaded configuration. False when `init`
/// did not install the subscriber (tests, commands that log elsewhere).
pub fn set_level(level: &str) -> anyhow::Result<bool> {
    let filter =
        EnvFilter::try_new(level).map_err(|e| anyhow::anyhow!("log.level '{level}': {e}"))?;
    match SET_LEVEL.get() {
        Some(set) => set(filter).map(|()| true),
        None => Ok(false),
    }
}
