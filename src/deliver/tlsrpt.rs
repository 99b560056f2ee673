//! TLS-RPT (RFC 8460), the aggregation half: successes and failures of
//! MX deliveries under an MTA-STS policy, counted per UTC day and domain
//! in memory, and written as RFC 8460 JSON report files under
//! `<data_dir>/tlsrpt/<YYYY-MM-DD>/<domain>.json` (refreshed every
//! `FLUSH` and at the end of the day). Sending them to the domain's
//! `_smtp._tls` rua addresses is not built (docs/hygiene.md).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::json;

use super::mta_sts::{Mode, Policy};

/// How often the report files are rewritten.
pub const FLUSH: Duration = Duration::from_secs(600);
/// Most domains counted in one day (beyond: not counted, logged once).
const MAX_DOMAINS: usize = 10_000;

/// RFC 8460 4.3 result types msgd can tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Failure {
    StarttlsNotSupported,
    CertificateHostMismatch,
    CertificateExpired,
    CertificateNotTrusted,
    /// The MX host is not in the policy, or another TLS failure.
    ValidationFailure,
}

impl Failure {
    pub fn name(self) -> &'static str {
        match self {
            Failure::StarttlsNotSupported => "starttls-not-supported",
            Failure::CertificateHostMismatch => "certificate-host-mismatch",
            Failure::CertificateExpired => "certificate-expired",
            Failure::CertificateNotTrusted => "certificate-not-trusted",
            Failure::ValidationFailure => "validation-failure",
        }
    }

    /// From the text of a failed connection (`deliver::mx::open`).
    pub fn from_error(text: &str) -> Failure {
        let t = text.to_ascii_lowercase();
        if t.contains("does not offer starttls") {
            Failure::StarttlsNotSupported
        } else if t.contains("not valid for the host name") {
            Failure::CertificateHostMismatch
        } else if t.contains("certificate expired") {
            Failure::CertificateExpired
        } else if t.contains("certificate not trusted") {
            Failure::CertificateNotTrusted
        } else {
            // A handshake that failed otherwise (RFC 8460 4.3.2.1).
            Failure::ValidationFailure
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Counts {
    policy: Option<Policy>,
    success: u64,
    /// (result type, receiving MX host) -> sessions.
    failures: BTreeMap<(Failure, String), u64>,
}

/// The counters of one process.
pub struct Reports {
    dir: PathBuf,
    org: String,
    days: Mutex<HashMap<(u64, String), Counts>>,
}

impl Reports {
    pub fn new(dir: PathBuf, org: String) -> Reports {
        Reports {
            dir,
            org,
            days: Mutex::new(HashMap::new()),
        }
    }

    /// One TLS session (or attempt) with `domain`'s MX under `policy`.
    pub fn record(
        &self,
        now: u64,
        domain: &str,
        policy: &Policy,
        result: Result<(), (Failure, &str)>,
    ) {
        let mut days = self.days.lock().unwrap_or_else(|e| e.into_inner());
        let key = (now / 86_400, domain.to_string());
        if !days.contains_key(&key) && days.len() >= MAX_DOMAINS {
            return;
        }
        let dir = &self.dir;
        let c = days
            .entry(key)
            .or_insert_with_key(|(day, d)| load(&dir.join(date(*day)).join(format!("{d}.json"))));
        c.policy = Some(policy.clone());
        match result {
            Ok(()) => c.success += 1,
            Err((f, mx)) => *c.failures.entry((f, mx.to_string())).or_default() += 1,
        }
    }

    /// Writes every counted day's files; forgets the days before `now`'s.
    pub fn flush(&self, now: u64) -> std::io::Result<usize> {
        let today = now / 86_400;
        let snapshot: Vec<((u64, String), Counts)> = {
            let mut days = self.days.lock().unwrap_or_else(|e| e.into_inner());
            let all = days.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            days.retain(|(day, _), _| *day >= today);
            all
        };
        for ((day, domain), c) in &snapshot {
            let dir = self.dir.join(date(*day));
            std::fs::create_dir_all(&dir)?;
            let body = report(&self.org, *day, domain, c);
            write_atomic(
                &dir.join(format!("{domain}.json")),
                body.to_string().as_bytes(),
            )?;
        }
        Ok(snapshot.len())
    }
}

/// The counts of a report file written earlier the same day (by this
/// process before a restart), so a restart adds to them.
fn load(path: &Path) -> Counts {
    let mut c = Counts::default();
    let Ok(bytes) = std::fs::read(path) else {
        return c;
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return c;
    };
    let p = &v["policies"][0];
    c.success = p["summary"]["total-successful-session-count"]
        .as_u64()
        .unwrap_or(0);
    for d in p["failure-details"]
        .as_array()
        .into_iter()
        .flatten()
        .take(1000)
    {
        let kind = match d["result-type"].as_str() {
            Some("starttls-not-supported") => Failure::StarttlsNotSupported,
            Some("certificate-host-mismatch") => Failure::CertificateHostMismatch,
            Some("certificate-expired") => Failure::CertificateExpired,
            Some("certificate-not-trusted") => Failure::CertificateNotTrusted,
            Some("validation-failure") => Failure::ValidationFailure,
            _ => continue,
        };
        let host = d["receiving-mx-hostname"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let n = d["failed-session-count"].as_u64().unwrap_or(0);
        *c.failures.entry((kind, host)).or_default() += n;
    }
    c
}

/// An RFC 8460 4.4 report for one domain and day.
fn report(org: &str, day: u64, domain: &str, c: &Counts) -> serde_json::Value {
    let start = day * 86_400;
    let (policy_type, policy_string, mx) = match &c.policy {
        Some(p) => {
            let mode = match p.mode {
                Mode::Enforce => "enforce",
                Mode::Testing => "testing",
                Mode::None => "none",
            };
            let mut lines = vec!["version: STSv1".to_string(), format!("mode: {mode}")];
            lines.extend(p.mx.iter().map(|m| format!("mx: {m}")));
            lines.push(format!("max_age: {}", p.max_age));
            ("sts", lines, p.mx.clone())
        }
        None => ("no-policy-found", Vec::new(), Vec::new()),
    };
    let failed: u64 = c.failures.values().sum();
    let details: Vec<serde_json::Value> = c
        .failures
        .iter()
        .map(|((f, host), n)| {
            json!({"result-type": f.name(), "receiving-mx-hostname": host, "failed-session-count": n})
        })
        .collect();
    json!({
        "organization-name": org,
        "date-range": {"start-datetime": rfc3339(start), "end-datetime": rfc3339(start + 86_399)},
        "contact-info": format!("postmaster@{org}"),
        "report-id": format!("{}.{domain}@{org}", date(day)),
        "policies": [{
            "policy": {
                "policy-type": policy_type,
                "policy-string": policy_string,
                "policy-domain": domain,
                "mx-host": mx,
            },
            "summary": {
                "total-successful-session-count": c.success,
                "total-failure-session-count": failed,
            },
            "failure-details": details,
        }],
    })
}

/// The rua URIs of a `_smtp._tls` TXT record (RFC 8460 3), `None` if it
/// is not a valid TLSRPTv1 record. Only mailto: and https: are kept.
pub fn parse_rua(record: &str) -> Option<Vec<String>> {
    let mut fields = record.split(';').map(str::trim);
    if fields.next()? != "v=TLSRPTv1" {
        return None;
    }
    let rua = fields.find_map(|f| f.strip_prefix("rua="))?;
    let uris: Vec<String> = rua
        .split(',')
        .map(str::trim)
        .filter(|u| u.starts_with("mailto:") || u.starts_with("https://"))
        .filter(|u| u.len() <= 512 && !u.bytes().any(|b| b.is_ascii_control()))
        .take(10)
        .map(str::to_string)
        .collect();
    (!uris.is_empty()).then_some(uris)
}

fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Days since 1970-01-01 to `YYYY-MM-DD` (civil from days, H. Hinnant).
fn date(day: u64) -> String {
    let z = day as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn rfc3339(secs: u64) -> String {
    let s = secs % 86_400;
    format!(
        "{}T{:02}:{:02}:{:02}Z",
        date(secs / 86_400),
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            id: "1".into(),
            mode: Mode::Enforce,
            mx: vec!["mx.example".into()],
            max_age: 86400,
            fetched: 0,
        }
    }

    #[test]
    fn dates() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(rfc3339(1_796_169_600), "2026-12-02T00:00:00Z");
        assert_eq!(date(11_016), "2000-02-29");
    }

    #[test]
    fn failure_kinds() {
        assert_eq!(
            Failure::from_error(
                "451 4.7.4 TLS is required for this domain but mx does not offer STARTTLS"
            ),
            Failure::StarttlsNotSupported
        );
        assert_eq!(
            Failure::from_error("TLS handshake failed: certificate not valid for the host name"),
            Failure::CertificateHostMismatch
        );
        assert_eq!(
            Failure::from_error("TLS handshake failed: certificate not trusted"),
            Failure::CertificateNotTrusted
        );
        assert_eq!(
            Failure::from_error("TLS handshake failed"),
            Failure::ValidationFailure
        );
    }

    #[test]
    fn rfc8460_rua() {
        assert_eq!(
            parse_rua("v=TLSRPTv1; rua=mailto:tls@example.com,https://r.example/x"),
            Some(vec![
                "mailto:tls@example.com".into(),
                "https://r.example/x".into()
            ])
        );
        assert_eq!(parse_rua("v=TLSRPTv1; rua=http://plain.example/"), None);
        assert_eq!(parse_rua("v=TLSRPTv2; rua=mailto:a@b"), None);
        assert_eq!(parse_rua("v=TLSRPTv1"), None);
    }

    #[test]
    fn rfc8460_report_files() {
        let dir = tempfile::tempdir().unwrap();
        let r = Reports::new(dir.path().join("tlsrpt"), "msgd.example".into());
        let day1 = 1_796_169_600 + 3600;
        r.record(day1, "example.com", &policy(), Ok(()));
        r.record(day1, "example.com", &policy(), Ok(()));
        let e = "does not offer STARTTLS";
        r.record(
            day1,
            "example.com",
            &policy(),
            Err((Failure::from_error(e), "mx.example")),
        );
        r.record(
            day1,
            "example.com",
            &policy(),
            Err((Failure::ValidationFailure, "rogue.example")),
        );
        assert_eq!(r.flush(day1).unwrap(), 1);
        let path = dir.path().join("tlsrpt/2026-12-02/example.com.json");
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let p = &v["policies"][0];
        assert_eq!(p["policy"]["policy-type"], "sts");
        assert_eq!(p["policy"]["policy-domain"], "example.com");
        assert_eq!(p["summary"]["total-successful-session-count"], 2);
        assert_eq!(p["summary"]["total-failure-session-count"], 2);
        assert_eq!(p["failure-details"].as_array().unwrap().len(), 2);
        assert_eq!(v["date-range"]["end-datetime"], "2026-12-02T23:59:59Z");
        // A restart (a new Reports on the same folder) adds to the day.
        let r2 = Reports::new(dir.path().join("tlsrpt"), "msgd.example".into());
        r2.record(day1, "example.com", &policy(), Ok(()));
        r2.flush(day1).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let p = &v["policies"][0];
        assert_eq!(p["summary"]["total-successful-session-count"], 3);
        assert_eq!(p["summary"]["total-failure-session-count"], 2);
        // The next day: the finished day is written once more, then forgotten.
        assert_eq!(r.flush(day1 + 86_400).unwrap(), 1);
        assert_eq!(r.flush(day1 + 86_400).unwrap(), 0);
    }
}
