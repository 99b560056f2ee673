//! One IMAP client connection of the stress tester: TCP or TLS (implicit or
//! STARTTLS), tagged commands, whole responses, and a short transcript of
//! the last exchanges for violation reports.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::wire::{self, Framer, Kind, Resp, StatusLine};

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// How to reach the server.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub tls: TlsMode,
    /// Client TLS settings (when `tls` is not `Plain`).
    pub tls_config: Option<Arc<rustls::ClientConfig>>,
    pub timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    Plain,
    Implicit,
    StartTls,
}

/// Lines of transcript kept per connection.
const TRANSCRIPT: usize = 60;

pub struct Conn {
    stream: Box<dyn Stream>,
    framer: Framer,
    next_tag: u64,
    timeout: Duration,
    pub caps: Vec<String>,
    transcript: VecDeque<String>,
}

/// A finished command: the untagged responses in order and the completion.
pub struct Done {
    pub untagged: Vec<Resp>,
    pub status: StatusLine,
}

impl Conn {
    pub async fn connect(t: &Target) -> anyhow::Result<Conn> {
        let tcp = tokio::time::timeout(t.timeout, TcpStream::connect(t.addr))
            .await
            .map_err(|_| anyhow!("connecting to {} timed out", t.addr))?
            .with_context(|| format!("connecting to {}", t.addr))?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = if t.tls == TlsMode::Implicit {
            Box::new(tls_wrap(t, tcp).await?)
        } else {
            Box::new(tcp)
        };
        let mut c = Conn {
            stream,
            framer: Framer::default(),
            next_tag: 1,
            timeout: t.timeout,
            caps: Vec::new(),
            transcript: VecDeque::new(),
        };
        let g = c.read_raw().await?;
        let (kind, caps) = wire::decode_greeting(&g).map_err(|e| anyhow!(e))?;
        if kind != Kind::Ok {
            bail!("server greeting refused the connection: {}", wire::show(&g));
        }
        c.caps = caps.unwrap_or_default();
        if t.tls == TlsMode::StartTls {
            let done = c.command("STARTTLS").await?;
            if done.status.kind != Kind::Ok {
                bail!("STARTTLS refused: {}", done.status.text);
            }
            if c.framer.pending() > 0 {
                bail!("server sent data after STARTTLS OK before the handshake (RFC 3501 6.2.1)");
            }
            // The plaintext stream is replaced by its TLS wrapping.
            let (placeholder, _) = tokio::io::duplex(1);
            let plain = std::mem::replace(&mut c.stream, Box::new(placeholder));
            c.stream = Box::new(tls_wrap(t, plain).await?);
            c.caps.clear();
        }
        if c.caps.is_empty() {
            let done = c.command("CAPABILITY").await?;
            for r in done.untagged {
                if let Resp::Capability(caps) = r {
                    c.caps = caps;
                }
            }
        }
        Ok(c)
    }

    pub fn has_cap(&self, cap: &str) -> bool {
        self.caps.iter().any(|c| c.eq_ignore_ascii_case(cap))
    }

    pub fn transcript(&self) -> Vec<String> {
        self.transcript.iter().cloned().collect()
    }

    fn note(&mut self, line: String) {
        if self.transcript.len() >= TRANSCRIPT {
            self.transcript.pop_front();
        }
        self.transcript.push_back(line);
    }

    fn tag(&mut self) -> String {
        let t = format!("S{}", self.next_tag);
        self.next_tag += 1;
        t
    }

    pub async fn send(&mut self, data: &[u8], shown: &str) -> anyhow::Result<()> {
        self.note(format!("C: {shown}"));
        tokio::time::timeout(self.timeout, async {
            self.stream.write_all(data).await?;
            self.stream.flush().await
        })
        .await
        .map_err(|_| anyhow!("writing to the server timed out"))?
        .context("writing to the server")
    }

    /// The next whole response, raw.
    async fn read_raw(&mut self) -> anyhow::Result<Vec<u8>> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match self.framer.next() {
                Ok(Some(r)) => {
                    self.note(format!("S: {}", wire::show(&r)));
                    return Ok(r);
                }
                Ok(None) => {}
                Err(e) => bail!("response too long: {e:?}"),
            }
            let n = tokio::time::timeout(self.timeout, self.stream.read(&mut buf))
                .await
                .map_err(|_| anyhow!("no response from the server within {:?}", self.timeout))?
                .context("reading from the server")?;
            if n == 0 {
                bail!("the server closed the connection");
            }
            self.framer.push(buf.get(..n).unwrap_or_default());
        }
    }

    /// The next response, decoded; an unparsable one is an error.
    pub async fn read(&mut self) -> anyhow::Result<Resp> {
        let raw = self.read_raw().await?;
        wire::decode(&raw).map_err(|e| anyhow!("protocol violation: {e}"))
    }

    /// Like `read`, but gives up quietly after `wait` (Ok(None)).
    pub async fn read_for(&mut self, wait: Duration) -> anyhow::Result<Option<Resp>> {
        let mut buf = vec![0u8; 64 * 1024];
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match self.framer.next() {
                Ok(Some(r)) => {
                    self.note(format!("S: {}", wire::show(&r)));
                    return wire::decode(&r)
                        .map(Some)
                        .map_err(|e| anyhow!("protocol violation: {e}"));
                }
                Ok(None) => {}
                Err(e) => bail!("response too long: {e:?}"),
            }
            match tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await {
                Err(_) => return Ok(None),
                Ok(r) => {
                    let n = r.context("reading from the server")?;
                    if n == 0 {
                        bail!("the server closed the connection");
                    }
                    self.framer.push(buf.get(..n).unwrap_or_default());
                }
            }
        }
    }

    /// Sends `TAG text` and collects responses up to the tagged completion.
    pub async fn command(&mut self, text: &str) -> anyhow::Result<Done> {
        let tag = self.tag();
        let line = format!("{tag} {text}\r\n");
        let shown = if text.starts_with("LOGIN ") {
            format!("{tag} LOGIN ***")
        } else {
            format!("{tag} {text}")
        };
        self.send(line.as_bytes(), &shown).await?;
        self.finish(&tag, Vec::new()).await
    }

    /// Reads responses up to the completion of `tag`.
    pub async fn finish(&mut self, tag: &str, mut untagged: Vec<Resp>) -> anyhow::Result<Done> {
        loop {
            match self.read().await? {
                Resp::Tagged { tag: t, status } => {
                    if t != tag {
                        bail!("protocol violation: completion for tag {t} while {tag} is the only command in flight");
                    }
                    return Ok(Done { untagged, status });
                }
                r => untagged.push(r),
            }
        }
    }

    /// APPEND with a synchronizing literal (wait for `+`) or, when the
    /// server has LITERAL+ and `nonsync`, a non-synchronizing one.
    pub async fn append(
        &mut self,
        mailbox: &str,
        flags: &str,
        msg: &[u8],
        nonsync: bool,
    ) -> anyhow::Result<Done> {
        let tag = self.tag();
        let plus = if nonsync { "+" } else { "" };
        let head = format!(
            "{tag} APPEND {} ({flags}) {{{}{plus}}}\r\n",
            quote(mailbox),
            msg.len()
        );
        let shown = head.trim_end().to_string();
        let mut untagged = Vec::new();
        if nonsync {
            let mut all = head.into_bytes();
            all.extend_from_slice(msg);
            all.extend_from_slice(b"\r\n");
            self.send(&all, &format!("{shown} <{} bytes>", msg.len()))
                .await?;
        } else {
            self.send(head.as_bytes(), &shown).await?;
            loop {
                match self.read().await? {
                    Resp::Continue => break,
                    Resp::Tagged { tag: t, status } if t == tag => {
                        // Refused before the literal (e.g. too big).
                        return Ok(Done { untagged, status });
                    }
                    Resp::Tagged { tag: t, .. } => {
                        bail!("protocol violation: completion for unknown tag {t}")
                    }
                    r => untagged.push(r),
                }
            }
            let mut body = msg.to_vec();
            body.extend_from_slice(b"\r\n");
            self.send(&body, &format!("<{} bytes>", msg.len())).await?;
        }
        self.finish(&tag, untagged).await
    }

    /// Starts IDLE: returns the tag once the server sent `+`, with the
    /// untagged responses that came before it.
    pub async fn idle_start(&mut self) -> anyhow::Result<(String, Vec<Resp>)> {
        let tag = self.tag();
        self.send(format!("{tag} IDLE\r\n").as_bytes(), &format!("{tag} IDLE"))
            .await?;
        let mut untagged = Vec::new();
        loop {
            match self.read().await? {
                Resp::Continue => return Ok((tag, untagged)),
                Resp::Tagged { tag: t, status } => {
                    bail!(
                        "IDLE {t} completed before '+': {:?} {}",
                        status.kind,
                        status.text
                    )
                }
                r => untagged.push(r),
            }
        }
    }
}

/// An IMAP quoted string (the stress mailbox names are plain ASCII).
pub use crate::imap::wire::quoted as quote;

async fn tls_wrap<S>(t: &Target, s: S) -> anyhow::Result<tokio_rustls::client::TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let cfg = t
        .tls_config
        .clone()
        .ok_or_else(|| anyhow!("TLS requested without a TLS configuration"))?;
    let name = rustls::pki_types::ServerName::IpAddress(t.addr.ip().into());
    let connector = tokio_rustls::TlsConnector::from(cfg);
    tokio::time::timeout(t.timeout, connector.connect(name, s))
        .await
        .map_err(|_| anyhow!("TLS handshake timed out"))?
        .context("TLS handshake")
}

/// Client TLS settings: trust `ca` (a PEM file; a self-signed server
/// certificate works as its own anchor), or, without it, any certificate
/// (loopback testing only).
pub fn tls_config(ca: Option<&std::path::Path>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    crate::tls::install_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let cfg = match ca {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path)
                .with_context(|| format!("reading {}", path.display()))?
            {
                let cert = cert.with_context(|| format!("parsing {}", path.display()))?;
                roots
                    .add(cert)
                    .with_context(|| format!("using {} as a trust anchor", path.display()))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(crate::tls::AnyCertificate(provider)))
            .with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}
