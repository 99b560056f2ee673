//! Logging: text by default, JSON by option (`log.format`), to stderr or to
//! `<log.dir>/msgd.log`. Each connection runs in a `session` span carrying
//! its id, protocol and peer. Passwords and AUTH data are never logged.
//!
//! `log.level` changes on reload (SIGHUP, through the `Level` handle
//! `init` returns); format and folder are read at start. The subscriber
//! is process-global (tracing's design); the handle that swaps its filter
//! is the caller's to keep.

use std::fs::OpenOptions;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Swaps the filter of the subscriber `init` installed: a new
/// `log.level` from a reloaded configuration.
pub struct Level(Box<dyn Fn(EnvFilter) -> anyhow::Result<()> + Send + Sync>);

impl Level {
    pub fn set(&self, level: &str) -> anyhow::Result<()> {
        let filter =
            EnvFilter::try_new(level).map_err(|e| anyhow::anyhow!("log.level '{level}': {e}"))?;
        (self.0)(filter)
    }
}

/// Installs the reloadable filter on a builder, then the subscriber;
/// the handle that swaps the filter.
macro_rules! install {
    ($builder:expr, $filter:expr) => {{
        let b = $builder.with_env_filter($filter).with_filter_reloading();
        let handle = b.reload_handle();
        b.try_init().map(|()| {
            Level(Box::new(move |f| {
                handle.reload(f).map_err(|e| anyhow::anyhow!("{e}"))
            }))
        })
    }};
}

pub fn init(c: &LogConfig) -> anyhow::Result<Level> {
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
