//! The one value every role and session receives: configuration snapshot,
//! directory, store, TLS and the shutdown signal. Cheap to clone; no globals.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::directory::Directory;
use crate::store::Store;
use crate::tls::Tls;

#[derive(Clone)]
pub struct Services {
    /// Snapshot taken at start; a session keeps the one it started with.
    pub config: Arc<Config>,
    pub directory: Arc<Directory>,
    /// Present when this process runs the store role (all-in-one included).
    pub store: Option<Store>,
    pub tls: Arc<Tls>,
    /// Cancelled on SIGTERM/SIGINT: listeners stop accepting, sessions
    /// finish their current transaction and say goodbye.
    pub shutdown: CancellationToken,
}

impl Services {
    /// The store, for sessions that only run in the store role.
    pub fn store(&self) -> &Store {
        self.store
            .as_ref()
            .expect("store sessions run only where the store role is enabled")
    }
}
