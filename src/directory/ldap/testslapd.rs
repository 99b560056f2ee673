//! A private OpenLDAP slapd for tests: a temporary folder, a free loopback
//! port, the project's `tests/ldap/slapd.conf.in`, `msgd.schema` and
//! `base.ldif` (loaded with slapadd before the start). Stopped (killed) on
//! drop. The same fixture serves the Python integration tests through
//! `tests/ldap/slapd.py`.
//!
//! slapd missing is a test failure that says how to install it, never a skip.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BASE_DN: &str = "dc=example,dc=test";
pub const BIND_DN: &str = "cn=msgd,ou=services,dc=example,dc=test";
pub const BIND_PASSWORD: &str = "service-secret";
const SCHEMA_DIR: &str = "/etc/ldap/schema";
const INSTALL: &str = "apt-get install -y slapd ldap-utils";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/ldap")
        .join(name)
}

fn program(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is not installed: the LDAP tests need OpenLDAP ({INSTALL})");
}

/// A free loopback port (nothing listens on it once this returns).
pub fn free_port() -> u16 {
    TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a loopback port")
}

/// TLS for the test server: PEM certificate and key.
pub struct TlsFiles {
    pub cert_pem: String,
    pub key_pem: String,
}

pub struct Slapd {
    dir: tempfile::TempDir,
    conf: PathBuf,
    child: Option<Child>,
    /// `ldap://127.0.0.1:PORT/`
    pub url: String,
    pub port: u16,
    /// `ldaps://127.0.0.1:PORT/` when started with TLS.
    pub ldaps_url: Option<String>,
}

impl Slapd {
    /// A server with `tests/ldap/base.ldif`.
    pub fn start() -> Slapd {
        Slapd::start_with(None)
    }

    /// With TLS: StartTLS on `url`, and an `ldaps_url` listener.
    pub fn start_with(tls: Option<&TlsFiles>) -> Slapd {
        let slapadd = program("slapadd");
        assert!(
            Path::new(SCHEMA_DIR).join("core.schema").exists(),
            "{SCHEMA_DIR}/core.schema missing: the LDAP tests need OpenLDAP ({INSTALL})"
        );
        let dir = tempfile::Builder::new()
            .prefix("msgd-slapd-")
            .tempdir()
            .expect("temp dir");
        std::fs::create_dir(dir.path().join("db")).expect("db dir");
        let tls_lines = match tls {
            None => String::new(),
            Some(t) => {
                let cert = dir.path().join("cert.pem");
                let key = dir.path().join("key.pem");
                std::fs::write(&cert, &t.cert_pem).expect("write cert");
                std::fs::write(&key, &t.key_pem).expect("write key");
                format!(
                    "TLSCertificateFile {}\nTLSCertificateKeyFile {}\n",
                    cert.display(),
                    key.display()
                )
            }
        };
        let template = std::fs::read_to_string(fixture("slapd.conf.in")).expect("slapd.conf.in");
        let conf_text = template
            .replace("@SCHEMADIR@", SCHEMA_DIR)
            .replace(
                "@MSGDSCHEMA@",
                &fixture("msgd.schema").display().to_string(),
            )
            .replace("@DIR@", &dir.path().display().to_string())
            .replace("@TLS@", &tls_lines);
        let conf = dir.path().join("slapd.conf");
        std::fs::write(&conf, conf_text).expect("write slapd.conf");
        let out = Command::new(slapadd)
            .arg("-q")
            .arg("-f")
            .arg(&conf)
            .arg("-l")
            .arg(fixture("base.ldif"))
            .output()
            .expect("running slapadd");
        assert!(
            out.status.success(),
            "slapadd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let mut s = Slapd {
            dir,
            conf,
            child: None,
            url: format!("ldap://127.0.0.1:{port}/"),
            port,
            ldaps_url: tls.map(|_| format!("ldap://127.0.0.1:{}/", free_port())),
        };
        if let Some(u) = &mut s.ldaps_url {
            *u = u.replacen("ldap://", "ldaps://", 1);
        }
        s.run();
        s
    }

    /// Starts (again) on the same port with the same data.
    pub fn run(&mut self) {
        assert!(self.child.is_none(), "slapd already running");
        let mut listen = self.url.clone();
        if let Some(u) = &self.ldaps_url {
            listen = format!("{listen} {u}");
        }
        let log = std::fs::File::create(self.dir.path().join("slapd.log")).expect("log file");
        let child = Command::new(program("slapd"))
            .arg("-f")
            .arg(&self.conf)
            .arg("-h")
            .arg(&listen)
            // -d keeps slapd in the foreground (our child), level 0 is quiet.
            .arg("-d")
            .arg("0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting slapd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port);
        loop {
            if TcpStream::connect_timeout(&addr.into(), Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Some(c) = &mut self.child {
                if let Ok(Some(status)) = c.try_wait() {
                    let log = std::fs::read_to_string(self.dir.path().join("slapd.log"))
                        .unwrap_or_default();
                    panic!("slapd exited ({status}): {log}");
                }
            }
            assert!(Instant::now() < deadline, "slapd did not listen in time");
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// Kills the server (connections drop at once) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}
