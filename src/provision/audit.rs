//! The change log: one JSON line per change (time, who, action, target,
//! what), appended to `provision.audit_log` and logged with tracing.
//! Passwords never reach it (`UserChange::password` is not serialized).

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::Serialize;

use super::Actor;
use crate::config::Config;

pub struct Log {
    path: PathBuf,
    lock: Mutex<()>,
}

impl Log {
    pub fn open(config: &Config) -> anyhow::Result<Log> {
        Ok(Log {
            path: config.data_path(&config.provision.audit_log, "provision-audit.log"),
            lock: Mutex::new(()),
        })
    }

    /// A new or removed entry (`what`: the entry as made, or `()`).
    pub fn record<T: Serialize>(&self, actor: &Actor, action: &str, target: &str, what: &T) {
        self.write(actor, action, target, serde_json::to_value(what).ok());
    }

    /// A change (`what`: the change asked for).
    pub fn record_change<T: Serialize>(&self, actor: &Actor, action: &str, target: &str, what: &T) {
        self.write(actor, action, target, serde_json::to_value(what).ok());
    }

    fn write(&self, actor: &Actor, action: &str, target: &str, what: Option<serde_json::Value>) {
        tracing::info!(who = actor.id(), action, target, "provisioning change");
        let line = serde_json::json!({
            "time": super::now(),
            "who": actor.id(),
            "action": action,
            "target": target,
            "what": what,
        });
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let r = crate::fsutil::private_file()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| {
                let mut b = serde_json::to_vec(&line).unwrap_or_default();
                b.push(b'\n');
                f.write_all(&b)?;
                f.sync_data()
            });
        if let Err(e) = r {
            tracing::error!(path = %self.path.display(), error = %e, "cannot write the provisioning change log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provision::UserChange;

    #[test]
    fn a_password_change_never_reaches_the_log() {
        let t = tempfile::tempdir().unwrap();
        let mut c = Config::default();
        c.server.data_dir = t.path().to_path_buf();
        let log = Log::open(&c).unwrap();
        let change = UserChange {
            password: Some("Sekr1t-never-logged".into()),
            quota: Some(Some(5)),
            ..Default::default()
        };
        let actor = Actor::Site {
            id: "cli:test".into(),
        };
        log.record_change(&actor, "user.modify", "a@x.test", &change);
        let text = std::fs::read_to_string(t.path().join("provision-audit.log")).unwrap();
        assert!(!text.contains("Sekr1t"), "{text}");
        assert!(!text.contains("password"), "{text}");
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["who"], "cli:test");
        assert_eq!(v["action"], "user.modify");
        assert_eq!(v["what"]["quota"], 5);
    }
}
