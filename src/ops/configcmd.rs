//! `msgd config get|set|list|check`: the original product's configutil.
//! (Skeleton: filled in by the config work.)

use std::path::Path;

#[derive(clap::Subcommand, Debug, Clone)]
pub enum ConfigCmd {
    /// Print a key's value.
    Get { key: String },
    /// Change a key in the config file, keeping its comments.
    Set { key: String, value: String },
    /// Print every key and its value.
    List,
    /// Check the file; print every error; exit 2 if any.
    Check,
}

/// `file`: the `--config` file (required for `set`).
pub fn cli(_file: Option<&Path>, _cmd: ConfigCmd) -> i32 {
    eprintln!("msgd: config: not built yet");
    crate::cli::EXIT_FAILURE
}
