//! Logging: text by default, JSON by option (`log.format`), to stderr or to
//! `<log.dir>/msgd.log`. Each connection runs in a `session` span carrying
//! its id, protocol and peer. Passwords and AUTH data are never logged.

use std::fs::OpenOptions;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

pub fn init(c: &LogConfig) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&c.level)
        .map_err(|e| anyhow::anyhow!("log.level '{}': {e}", c.level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let result = if c.dir.is_empty() {
        if c.format == LogFormat::Json {
            builder.json().with_writer(std::io::stderr).try_init()
        } else {
            use std::io::IsTerminal;
            builder
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr)
                .try_init()
        }
    } else {
        std::fs::create_dir_all(&c.dir)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(std::path::Path::new(&c.dir).join("msgd.log"))?;
        let w = Mutex::new(file);
        if c.format == LogFormat::Json {
            builder.json().with_ansi(false).with_writer(w).try_init()
        } else {
            builder.with_ansi(false).with_writer(w).try_init()
        }
    };
    result.map_err(|e| anyhow::anyhow!("logging: {e}"))
}
