//! The mboxlist database (redb) and the read side of the store.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

use super::*;
use crate::config::Config;

/// Cache figures of the mboxlist (the seed's db_stat).
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreStats {
    pub cache_hits: u64,
    pub cache_misses: u64,
}

pub struct Inner {}

impl Inner {
    pub fn open(_config: &Config) -> anyhow::Result<Arc<Inner>> {
        todo!()
    }
    pub async fn ensure_user(&self, _user: &str, _partition: Option<&str>) -> Result<()> {
        todo!()
    }
    pub async fn append(
        &self,
        _user: &str,
        _mailbox: &str,
        _msg: NewMessage,
        _quota: Quota,
    ) -> Result<Placed> {
        todo!()
    }
    pub async fn list(&self, _user: &str) -> Result<Vec<MailboxInfo>> {
        todo!()
    }
    pub async fn status(&self, _user: &str, _mailbox: &str) -> Result<MailboxInfo> {
        todo!()
    }
    pub async fn create_mailbox(
        &self,
        _user: &str,
        _mailbox: &str,
        _su: Option<SpecialUse>,
    ) -> Result<MailboxInfo> {
        todo!()
    }
    pub async fn delete_mailbox(&self, _user: &str, _mailbox: &str) -> Result<()> {
        todo!()
    }
    pub async fn rename_mailbox(&self, _user: &str, _from: &str, _to: &str) -> Result<()> {
        todo!()
    }
    pub async fn subscribe(&self, _user: &str, _mailbox: &str, _on: bool) -> Result<()> {
        todo!()
    }
    pub async fn subscriptions(&self, _user: &str) -> Result<Vec<String>> {
        todo!()
    }
    pub async fn snapshot(&self, _user: &str, _mailbox: &str) -> Result<Snapshot> {
        todo!()
    }
    pub async fn claim_recent(&self, _mailbox: MailboxId) -> Result<Uid> {
        todo!()
    }
    pub async fn changes(&self, _mailbox: MailboxId, _since: ModSeq) -> Result<Changes> {
        todo!()
    }
    pub async fn store_flags(
        &self,
        _mailbox: MailboxId,
        _uids: Vec<Uid>,
        _op: FlagOp,
        _flags: Flags,
        _unchanged_since: Option<ModSeq>,
    ) -> Result<(Vec<MessageMeta>, Vec<Uid>)> {
        todo!()
    }
    pub async fn expunge(&self, _mailbox: MailboxId, _uids: Option<Vec<Uid>>) -> Result<Vec<Uid>> {
        todo!()
    }
    pub async fn copy(
        &self,
        _from: MailboxId,
        _uids: Vec<Uid>,
        _user: &str,
        _to: &str,
        _remove_source: bool,
        _quota: Quota,
    ) -> Result<(u32, Vec<(Uid, Uid)>)> {
        todo!()
    }
    pub async fn read(&self, _mailbox: MailboxId, _meta: &MessageMeta) -> Result<Vec<u8>> {
        todo!()
    }
    pub async fn usage(&self, _user: &str) -> Result<Usage> {
        todo!()
    }
    pub fn watch(&self, _mailbox: MailboxId) -> watch::Receiver<ModSeq> {
        todo!()
    }
    pub fn stats(&self) -> StoreStats {
        todo!()
    }
    pub fn message_path(&self, _mailbox: MailboxId, _uid: Uid) -> Result<PathBuf> {
        todo!()
    }
}
