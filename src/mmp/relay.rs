//! Relays bytes between a client and its store after login until either
//! side closes, the session idles out, or the server shuts down. POP3
//! bytes pass unread; IMAP goes through [`RelayFilter`] both ways (the
//! mmp answers UNAUTHENTICATE itself and hides it from capabilities,
//! RFC 8437; see `imap.rs`), which holds at most a line's first 256 bytes
//! and never a literal. The mmp's own replies go to the client between two
//! store responses.
//!
//! Memory per idle session stays small: each direction reads into a
//! 512-byte buffer inside the task and only switches to a 64 KiB heap
//! buffer when a read fills the small one (a burst: a FETCH of messages;
//! 64 KiB is loopback's largest segment and what one read of a store's
//! burst usually finds, so a burst costs one read and one write per
//! segment, not four: issue 11's syscall counts);
//! within a burst it takes what has arrived without waiting (no trip
//! through the scheduler per chunk) and drops the big buffer as soon as a
//! read would wait.
//!
//! Cost per relayed chunk (issue 11): the store's output passes to the
//! client in place ([`RelayFilter::store_output_direct`]: no copy, no
//! allocation, no second parse for the shutdown boundary: the filter
//! knows where IMAP responses end); the client's input is copied once
//! (its command heads are judged, synchronizing literals rewritten).
//!
//! Endings:
//! - the store closes: what it sent is flushed, the client's side is shut
//!   down (TLS close_notify, FIN) and the session ends;
//! - the client closes: the store's write side is shut down (so a LOGOUT
//!   still gets its answer), its remaining output relayed for a few
//!   seconds at most;
//! - shutdown: at the next point where the store's output is between
//!   responses (not inside a line or a literal), `goodbye` (IMAP
//!   `* BYE ...`) goes to the client and both sides are closed.
//!
//! Time: writes to the client carry `net`'s write deadline (the client's
//! stream comes from `net::serve`), so a client that stops reading ends
//! the relay as a client error after `limits.write_timeout`; commands after
//! login are timed by the store (`limits.command_deadline`), which sees
//! every byte a trickling client sends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::imap::RelayFilter;

use crate::net::Conn;

const SMALL: usize = 512;
const BIG: usize = 64 * 1024;
/// How long the store may keep talking after the client closed.
const DRAIN_AFTER_CLIENT_EOF: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    ClientClosed,
    StoreClosed,
    IdleTimeout,
    Shutdown,
    ClientError,
    StoreError,
    /// The client logged out and the mmp answered (IMAP, with
    /// `Options::answer_logout`): the store connection is handed back.
    Logout,
}

impl End {
    pub fn as_str(self) -> &'static str {
        match self {
            End::ClientClosed => "client closed",
            End::StoreClosed => "store closed",
            End::IdleTimeout => "idle timeout",
            End::Shutdown => "shutdown",
            End::ClientError => "client i/o error",
            End::StoreError => "store i/o error",
            End::Logout => "logout",
        }
    }
}

pub struct Options {
    pub idle: Duration,
    /// Where burst buffers come from and go back to (the mmp's `Shared`).
    pub buffers: Arc<BurstBuffers>,
    pub shutdown: CancellationToken,
    /// Sent to the client on shutdown, between two store responses.
    pub goodbye: Option<&'static [u8]>,
    /// IMAP: track literals in the store's output (for `goodbye`) and run
    /// both directions through [`RelayFilter`].
    pub imap: bool,
    /// What the client sent after its login command, for the store.
    pub pipelined: Vec<u8>,
    /// What the store sent after its login answer, for the client.
    pub store_rest: Vec<u8>,
    /// IMAP: answer the client's LOGOUT here when the store has nothing
    /// left to answer, and hand the store connection back, still logged
    /// in, between two responses ([`RelayFilter::answering_logout`]).
    pub answer_logout: bool,
}

/// Burst buffers (`BIG` bytes) handed from one burst to the next, shared
/// by the mmp's sessions. A fresh 64 KiB buffer per burst cost the mmp a
/// quarter of its CPU (allocation, zeroing and the page faults after the
/// allocator gave the memory back between bursts). A session holds one
/// only during a burst; at most `keep` wait here between bursts, so idle
/// memory per connection does not change.
pub struct BurstBuffers {
    free: Mutex<Vec<Box<[u8]>>>,
    keep: usize,
}

impl BurstBuffers {
    pub fn new(keep: usize) -> BurstBuffers {
        BurstBuffers {
            free: Mutex::new(Vec::new()),
            keep,
        }
    }

    fn list(&self) -> std::sync::MutexGuard<'_, Vec<Box<[u8]>>> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self) -> Box<[u8]> {
        let kept = self.list().pop();
        kept.unwrap_or_else(|| vec![0u8; BIG].into_boxed_slice())
    }

    fn give(&self, b: Box<[u8]>) {
        let mut l = self.list();
        if l.len() < self.keep && b.len() == BIG {
            l.push(b);
        }
    }

    /// Buffers waiting for a burst.
    #[cfg(test)]
    pub fn idle(&self) -> usize {
        self.list().len()
    }
}

/// The IMAP filter both directions share; the client side wakes the
/// store side with `replies` when the mmp has an answer of its own.
struct Shared {
    filter: Mutex<RelayFilter>,
    replies: Notify,
}

impl Shared {
    fn filter(&self) -> std::sync::MutexGuard<'_, RelayFilter> {
        self.filter.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    ToStore,
    ToClient,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub to_store: u64,
    pub to_client: u64,
}

/// Time of the last byte in either direction, in ms since `start`.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }
    fn idle_for(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Where the store's output stands: between responses or not. The shared
/// IMAP framer's [`Tracker`](crate::imap::framer::Tracker): literals
/// (IMAP) or only lines (POP3), nothing kept.
pub type Boundary = crate::imap::framer::Tracker;

/// One direction. Returns Ok at EOF (after shutting the writer down).
async fn pump<R, W>(
    r: &mut R,
    w: &mut W,
    (activity, buffers): (&Activity, &BurstBuffers),
    count: &AtomicU64,
    mut boundary: Option<&mut Boundary>,
    stop: Option<(&CancellationToken, Option<&'static [u8]>)>,
    filter: Option<(&Shared, Dir)>,
) -> Result<PumpEnd, Side>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut small = [0u8; SMALL];
    // The burst buffer while a burst lasts (returned to `buffers` when
    // the pump ends, too).
    let mut big = Burst {
        buf: None,
        home: buffers,
    };
    let mut stopping = false;
    let mut out: Vec<u8> = Vec::new();
    // Only the store-to-client side writes the mmp's own replies.
    let replies = filter.filter(|(_, d)| *d == Dir::ToClient).map(|(s, _)| s);
    loop {
        let between = match (boundary.as_deref(), replies) {
            (Some(b), _) => b.between_messages(),
            (None, Some(s)) => s.filter().between_responses(),
            (None, None) => true,
        };
        if stopping && between {
            if let Some(bye) = stop.and_then(|(_, g)| g) {
                let _ = w.write_all(bye).await;
            }
            let _ = w.shutdown().await;
            return Ok(PumpEnd::Stopped);
        }
        if let Some((t, _)) = stop.filter(|_| !stopping) {
            // Noticed between two reads of a burst too.
            if t.is_cancelled() {
                stopping = true;
                continue;
            }
        }
        // In a burst (the big buffer is there) take what has arrived
        // without a trip through the scheduler; once a read would wait the
        // burst is over and the big buffer goes.
        if let Some(b) = big.buf.as_mut() {
            match read_now(r, b) {
                Some(res) => {
                    let n = match res {
                        Ok(0) => {
                            let _ = w.flush().await;
                            let _ = w.shutdown().await;
                            return Ok(PumpEnd::Eof);
                        }
                        Ok(n) => n,
                        Err(_) => return Err(Side::Reader),
                    };
                    let o = std::mem::take(&mut out);
                    let logout;
                    (out, logout) =
                        relay_chunk(&b[..n], w, activity, count, &mut boundary, filter, o).await?;
                    if logout {
                        return Ok(logged_out(w, filter).await);
                    }
                    continue;
                }
                None => big.end(),
            }
        }
        let buf: &mut [u8] = &mut small;
        let token = stop.map(|(t, _)| t).filter(|_| !stopping);
        let cancelled = async {
            match token {
                Some(t) => t.cancelled().await,
                None => std::future::pending().await,
            }
        };
        let replied = async {
            match replies {
                Some(s) => s.replies.notified().await,
                None => std::future::pending().await,
            }
        };
        let read = tokio::select! {
            biased;
            res = r.read(buf) => Read::Data(res),
            _ = cancelled => Read::Stop,
            _ = replied => Read::Replies,
        };
        let read = match read {
            Read::Data(res) => Some(res),
            Read::Stop => None,
            Read::Replies => {
                if let Some(s) = replies {
                    s.filter().flush_replies(&mut out);
                }
                if !out.is_empty() {
                    if let Some(b) = boundary.as_deref_mut() {
                        b.feed(&out);
                    }
                    if w.write_all(&out).await.is_err() || w.flush().await.is_err() {
                        return Err(Side::Writer);
                    }
                    out.clear();
                }
                if replies.is_some_and(|s| s.filter().logout_answered()) {
                    return Ok(logged_out(w, filter).await);
                }
                continue;
            }
        };
        let n = match read {
            None => {
                stopping = true;
                continue;
            }
            Some(Ok(0)) => {
                let _ = w.flush().await;
                let _ = w.shutdown().await;
                return Ok(PumpEnd::Eof);
            }
            Some(Ok(n)) => n,
            Some(Err(_)) => return Err(Side::Reader),
        };
        let mut n = n;
        if n == SMALL {
            // A burst starts (a big response): go on in the big buffer,
            // with what has arrived behind the first bytes in one write.
            let b = big.start();
            b[..n].copy_from_slice(&small[..n]);
            if let Some(Ok(m)) = read_now(r, &mut b[n..]) {
                n += m;
            }
        }
        let chunk: &[u8] = match big.buf.as_deref() {
            None => &small[..n],
            Some(b) => &b[..n],
        };
        let logout;
        (out, logout) = relay_chunk(chunk, w, activity, count, &mut boundary, filter, out).await?;
        if logout {
            return Ok(logged_out(w, filter).await);
        }
        if big.buf.is_none() && out.capacity() > 2 * SMALL {
            out = Vec::new();
        }
    }
}

/// The mmp answered LOGOUT: the store-to-client side shuts the client's
/// side down (the answer is written); the other one just stops.
async fn logged_out<W: AsyncWrite + Unpin>(w: &mut W, filter: Option<(&Shared, Dir)>) -> PumpEnd {
    if filter.is_some_and(|(_, d)| d == Dir::ToClient) {
        let _ = w.shutdown().await;
    }
    PumpEnd::Logout
}

/// A pump's burst buffer, back to where it came from when the burst or
/// the pump ends.
struct Burst<'a> {
    buf: Option<Box<[u8]>>,
    home: &'a BurstBuffers,
}

impl Burst<'_> {
    fn start(&mut self) -> &mut [u8] {
        let home = self.home;
        self.buf.get_or_insert_with(|| home.take())
    }

    fn end(&mut self) {
        if let Some(b) = self.buf.take() {
            self.home.give(b);
        }
    }
}

impl Drop for Burst<'_> {
    fn drop(&mut self) {
        self.end();
    }
}

/// Reads what has arrived, without waiting: None if the read would wait.
pub(super) fn read_now<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut [u8],
) -> Option<std::io::Result<usize>> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut rb = tokio::io::ReadBuf::new(buf);
    match std::pin::Pin::new(r).poll_read(&mut cx, &mut rb) {
        std::task::Poll::Ready(Ok(())) => Some(Ok(rb.filled().len())),
        std::task::Poll::Ready(Err(e)) => Some(Err(e)),
        std::task::Poll::Pending => None,
    }
}

/// One chunk read: through the filter (IMAP) and on to the writer.
/// Returns `out` (emptied) for the next chunk.
async fn relay_chunk<W: AsyncWrite + Unpin>(
    mut data: &[u8],
    w: &mut W,
    activity: &Activity,
    count: &AtomicU64,
    boundary: &mut Option<&mut Boundary>,
    filter: Option<(&Shared, Dir)>,
    mut out: Vec<u8>,
) -> Result<(Vec<u8>, bool), Side> {
    activity.touch();
    count.fetch_add(data.len() as u64, Ordering::Relaxed);
    let (mut logout, mut wake) = (false, false);
    if let Some((shared, dir)) = filter {
        let direct;
        (wake, direct) = {
            let mut f = shared.filter();
            let direct = match dir {
                Dir::ToStore => {
                    f.client_input(data, &mut out);
                    None
                }
                // The store's output mostly passes in place (no copy).
                Dir::ToClient => f.store_output_direct(data, &mut out),
            };
            // Client to store: stop reading; store to client: the answer
            // goes out with this write.
            logout = match dir {
                Dir::ToStore => f.logged_out(),
                Dir::ToClient => f.logout_answered(),
            };
            (dir == Dir::ToStore && f.has_replies(), direct)
        };
        data = match direct {
            Some(n) => data.get(..n).unwrap_or_default(),
            None => &out,
        };
    }
    if let Some(b) = boundary.as_deref_mut() {
        b.feed(data);
    }
    if !data.is_empty() && (w.write_all(data).await.is_err() || w.flush().await.is_err()) {
        return Err(Side::Writer);
    }
    // After the write: a LOGOUT answered here must not let the other side
    // end the relay while this one is still writing to the store.
    if let Some((shared, _)) = filter.filter(|_| wake) {
        shared.replies.notify_one();
    }
    out.clear();
    Ok((out, logout))
}

enum Read {
    Data(std::io::Result<usize>),
    Stop,
    Replies,
}

enum PumpEnd {
    Eof,
    Stopped,
    /// Client to store: the mmp answered LOGOUT; nothing more goes to the
    /// store. Store to client: that answer is written and the client's
    /// side shut down.
    Logout,
}

enum Side {
    Reader,
    Writer,
}

/// Relays until the session ends; returns why, the byte counts and, after
/// [`End::Logout`], the store connection (still logged in, between two
/// responses).
pub async fn relay(client: Conn, store: Conn, opts: Options) -> (End, Counts, Option<Conn>) {
    let activity = Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
    };
    let up_count = AtomicU64::new(0);
    let down_count = AtomicU64::new(0);
    let (mut client_r, mut client_w) = tokio::io::split(client);
    let (mut store_r, mut store_w) = tokio::io::split(store);
    // IMAP: the filter knows where responses end; POP3: lines.
    let mut boundary = (!opts.imap).then(|| Boundary::new(false));
    let shared = opts.imap.then(|| {
        let filter = RelayFilter::new();
        Shared {
            filter: Mutex::new(match opts.answer_logout {
                true => filter.answering_logout(),
                false => filter,
            }),
            replies: Notify::new(),
        }
    });
    // What was said after the login, each way, goes through the filter too.
    let (mut to_client, mut to_store) = (Vec::new(), Vec::new());
    match &shared {
        Some(s) => {
            let mut f = s.filter();
            f.client_input(&opts.pipelined, &mut to_store);
            f.store_output(&opts.store_rest, &mut to_client);
            f.flush_replies(&mut to_client);
        }
        None => {
            to_client = opts.store_rest;
            to_store = opts.pipelined;
        }
    }
    if let Some(b) = boundary.as_mut() {
        b.feed(&to_client);
    }
    if !to_client.is_empty() && client_w.write_all(&to_client).await.is_err() {
        return (End::ClientError, Counts::default(), None);
    }
    if !to_store.is_empty() && store_w.write_all(&to_store).await.is_err() {
        return (End::StoreError, Counts::default(), None);
    }
    drop((to_client, to_store));
    // LOGOUT pipelined behind the login and answered already.
    let answered_early = shared
        .as_ref()
        .is_some_and(|s| s.filter().logout_answered());
    let end = if answered_early {
        End::Logout
    } else {
        let up = pump(
            &mut client_r,
            &mut store_w,
            (&activity, &opts.buffers),
            &up_count,
            None,
            None,
            shared.as_ref().map(|s| (s, Dir::ToStore)),
        );
        let down = pump(
            &mut store_r,
            &mut client_w,
            (&activity, &opts.buffers),
            &down_count,
            boundary.as_mut(),
            Some((&opts.shutdown, opts.goodbye)),
            shared.as_ref().map(|s| (s, Dir::ToClient)),
        );
        tokio::pin!(up, down);
        let idle = async {
            loop {
                let quiet = activity.idle_for();
                if quiet >= opts.idle {
                    return;
                }
                tokio::time::sleep(opts.idle - quiet).await;
            }
        };
        tokio::pin!(idle);
        let down_end = |r: Result<PumpEnd, Side>| match r {
            Ok(PumpEnd::Eof) => End::StoreClosed,
            Ok(PumpEnd::Stopped) => End::Shutdown,
            Ok(PumpEnd::Logout) => End::Logout,
            Err(Side::Reader) => End::StoreError,
            Err(Side::Writer) => End::ClientError,
        };
        tokio::select! {
            r = &mut down => match down_end(r) {
                // The store side may see the answer go out (with store
                // output) while the client side still writes what came
                // before the LOGOUT: it finishes first.
                End::Logout => match tokio::time::timeout(DRAIN_AFTER_CLIENT_EOF, &mut up).await {
                    Ok(Ok(PumpEnd::Logout)) => End::Logout,
                    _ => End::ClientClosed,
                },
                end => end,
            },
            r = &mut up => match r {
                Ok(PumpEnd::Logout) => {
                    // The answer goes out between two store responses.
                    match tokio::time::timeout(DRAIN_AFTER_CLIENT_EOF, &mut down).await {
                        Ok(r) => down_end(r),
                        Err(_) => End::ClientClosed,
                    }
                }
                Ok(_) => {
                    // Let the store answer what it was asked last.
                    let _ = tokio::time::timeout(DRAIN_AFTER_CLIENT_EOF, &mut down).await;
                    End::ClientClosed
                }
                Err(Side::Reader) => End::ClientError,
                Err(Side::Writer) => End::StoreError,
            },
            _ = &mut idle => End::IdleTimeout,
        }
    };
    let between = match (&boundary, &shared) {
        (Some(b), _) => b.between_messages(),
        (None, Some(s)) => s.filter().between_responses(),
        (None, None) => true,
    };
    if end == End::IdleTimeout && opts.goodbye.is_some() && between {
        let _ = client_w.write_all(IDLE_BYE).await;
    }
    let counts = Counts {
        to_store: up_count.load(Ordering::Relaxed),
        to_client: down_count.load(Ordering::Relaxed),
    };
    let reusable = shared.as_ref().is_some_and(|s| s.filter().store_reusable());
    if end == End::Logout && reusable {
        // After the pumps, the client's side is shut down already.
        if answered_early {
            let _ = client_w.shutdown().await;
        }
        return (end, counts, Some(store_r.unsplit(store_w)));
    }
    let _ = client_w.shutdown().await;
    let _ = store_w.shutdown().await;
    (end, counts, None)
}

/// The idle-timeout farewell, for protocols that have a goodbye (IMAP).
const IDLE_BYE: &[u8] = b"* BYE Autologout; idle for too long\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundary_tracks_lines_and_imap_literals_split_at_every_byte() {
        let parts: [&[u8]; 3] = [
            b"* 1 FETCH (BODY[] {12}\r\nab}\r\n{3}\r\nxyz)\r\n",
            b"a OK done {x}\r\n",
            // An empty literal: the response goes on after it.
            b"* 2 FETCH (X {0}\r\n)\r\n",
        ];
        let input = parts.concat();
        let ends: Vec<usize> = parts
            .iter()
            .scan(0, |acc, p| {
                *acc += p.len();
                Some(*acc)
            })
            .collect();
        for i in 0..=input.len() {
            let mut b = Boundary::new(true);
            b.feed(&input[..i]);
            assert_eq!(
                b.between_messages(),
                i == 0 || ends.contains(&i),
                "prefix {i}"
            );
            b.feed(&input[i..]);
            assert!(b.between_messages(), "split at {i}");
        }
    }

    #[tokio::test]
    async fn relay_passes_bytes_and_ends_when_the_store_closes() {
        let (client, mut client_peer) = tokio::io::duplex(64);
        let (store, mut store_peer) = tokio::io::duplex(64);
        let task = tokio::spawn(relay(Box::new(client), Box::new(store), test_options()));
        // Larger than the small buffer, to go through the big one.
        // IMAP input ends its lines: the filter holds back only the end of
        // an unfinished line (a literal announcement may still come).
        let mut big: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        big.extend_from_slice(b"\r\n");
        let writer = async {
            client_peer.write_all(&big).await.unwrap();
        };
        let mut got = vec![0u8; big.len()];
        let reader = async {
            store_peer.read_exact(&mut got).await.unwrap();
        };
        tokio::join!(writer, reader);
        assert_eq!(got, big);
        store_peer.write_all(b"* OK bye\r\n").await.unwrap();
        drop(store_peer);
        let mut rest = Vec::new();
        client_peer.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"* OK bye\r\n");
        let (end, counts, _) = task.await.unwrap();
        assert_eq!(end, End::StoreClosed);
        assert_eq!(counts.to_store, 20_002);
        assert_eq!(counts.to_client, 10);
    }

    /// IMAP, a minute's idle time, a goodbye, nothing pipelined.
    fn test_options() -> Options {
        Options {
            idle: Duration::from_secs(60),
            buffers: Arc::new(BurstBuffers::new(4)),
            shutdown: CancellationToken::new(),
            goodbye: Some(b"* BYE shutting down\r\n"),
            imap: true,
            pipelined: Vec::new(),
            store_rest: Vec::new(),
            answer_logout: false,
        }
    }

    fn logout_options(pipelined: &[u8]) -> Options {
        Options {
            pipelined: pipelined.to_vec(),
            answer_logout: true,
            ..test_options()
        }
    }

    /// LOGOUT with nothing outstanding is answered by the mmp: the client
    /// gets BYE and OK and then EOF, the store never sees the LOGOUT, and
    /// its connection comes back, usable, between responses.
    #[tokio::test]
    async fn relay_answers_logout_and_hands_the_store_connection_back() {
        let (client, mut client_peer) = tokio::io::duplex(1024);
        let (store, mut store_peer) = tokio::io::duplex(1024);
        let task = tokio::spawn(relay(
            Box::new(client),
            Box::new(store),
            logout_options(b""),
        ));
        client_peer.write_all(b"a NOOP\r\n").await.unwrap();
        let mut got = [0u8; 8];
        store_peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"a NOOP\r\n");
        store_peer
            .write_all(b"* 1 EXISTS\r\na OK done\r\n")
            .await
            .unwrap();
        let mut answer = vec![0u8; 23];
        client_peer.read_exact(&mut answer).await.unwrap();
        client_peer
            .write_all(b"b LOGOUT\r\nc NOOP\r\n")
            .await
            .unwrap();
        let mut rest = Vec::new();
        client_peer.read_to_end(&mut rest).await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&rest),
            "* BYE msgd IMAP proxy logging out\r\nb OK LOGOUT completed\r\n"
        );
        let (end, counts, kept) = task.await.unwrap();
        assert_eq!(end, End::Logout);
        assert_eq!(counts.to_store, 8 + 18, "what the client sent");
        let mut kept = kept.expect("the store connection");
        kept.write_all(b"x\r\n").await.unwrap();
        let mut got = [0u8; 3];
        store_peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"x\r\n", "nothing of the client's after its LOGOUT");

        // Pipelined behind the login.
        let (client, mut client_peer) = tokio::io::duplex(1024);
        let (store, _store_peer) = tokio::io::duplex(1024);
        let task = relay(
            Box::new(client),
            Box::new(store),
            logout_options(b"z LOGOUT\r\n"),
        );
        let (end, _, kept) = task.await;
        assert_eq!(end, End::Logout);
        assert!(kept.is_some());
        let mut rest = Vec::new();
        client_peer.read_to_end(&mut rest).await.unwrap();
        assert!(String::from_utf8_lossy(&rest).ends_with("z OK LOGOUT completed\r\n"));
    }

    #[tokio::test]
    async fn relay_passes_a_burst_through_the_big_buffer_unchanged() {
        let (client, mut client_peer) = tokio::io::duplex(256 * 1024);
        let (store, mut store_peer) = tokio::io::duplex(256 * 1024);
        let buffers = Arc::new(BurstBuffers::new(4));
        let task = tokio::spawn(relay(
            Box::new(client),
            Box::new(store),
            Options {
                buffers: buffers.clone(),
                ..test_options()
            },
        ));
        // Responses with literals, far beyond the small buffer, in one go.
        let mut burst = Vec::new();
        for i in 0..20u32 {
            let body: Vec<u8> = (0..5000u32).map(|j| b'a' + ((i + j) % 26) as u8).collect();
            burst.extend_from_slice(format!("* {} FETCH (BODY[] {{5000}}\r\n", i + 1).as_bytes());
            burst.extend_from_slice(&body);
            burst.extend_from_slice(b")\r\n");
        }
        burst.extend_from_slice(b"a1 OK done\r\n");
        store_peer.write_all(&burst).await.unwrap();
        let mut got = vec![0u8; burst.len()];
        client_peer.read_exact(&mut got).await.unwrap();
        assert_eq!(got, burst);
        // And small exchanges after it.
        client_peer.write_all(b"a2 NOOP\r\n").await.unwrap();
        let mut cmd = [0u8; 9];
        store_peer.read_exact(&mut cmd).await.unwrap();
        assert_eq!(&cmd, b"a2 NOOP\r\n");
        drop(store_peer);
        let mut rest = Vec::new();
        client_peer.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        let (end, counts, _) = task.await.unwrap();
        assert_eq!(end, End::StoreClosed);
        assert_eq!(counts.to_client, burst.len() as u64);
        // The burst buffer went back for the next burst.
        assert_eq!(buffers.idle(), 1);
    }

    #[tokio::test]
    async fn relay_ends_when_the_client_stops_reading() {
        let (client, _client_peer) = tokio::io::duplex(1024);
        let client = crate::net::WriteDeadline::new(client, Duration::from_millis(200));
        let (store, mut store_peer) = tokio::io::duplex(1024);
        let task = tokio::spawn(relay(
            Box::new(client),
            Box::new(store),
            Options {
                goodbye: None,
                ..test_options()
            },
        ));
        // The store answers a big FETCH; the client never reads it.
        // Once the relay ends it shuts the store side down and writes fail:
        // the feed then waits, so the relay's own end is what is checked
        // (not a race between the two).
        let feed = async {
            let chunk = vec![b'x'; 4096];
            while store_peer.write_all(&chunk).await.is_ok() {}
            std::future::pending::<()>().await
        };
        let (end, _, _) = tokio::select! {
            r = task => r.unwrap(),
            _ = feed => unreachable!(),
        };
        assert_eq!(end, End::ClientError);
    }

    #[tokio::test]
    async fn relay_on_shutdown_says_bye_between_responses() {
        let (client, mut client_peer) = tokio::io::duplex(1024);
        let (store, mut store_peer) = tokio::io::duplex(1024);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(relay(
            Box::new(client),
            Box::new(store),
            Options {
                shutdown: shutdown.clone(),
                ..test_options()
            },
        ));
        // The store is in the middle of a literal when shutdown comes.
        store_peer
            .write_all(b"* 1 FETCH (BODY[] {5}\r\nab")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        shutdown.cancel();
        tokio::time::sleep(Duration::from_millis(50)).await;
        store_peer.write_all(b"cde)\r\n").await.unwrap();
        let mut got = Vec::new();
        client_peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(
            got,
            b"* 1 FETCH (BODY[] {5}\r\nabcde)\r\n* BYE shutting down\r\n"
        );
        assert_eq!(task.await.unwrap().0, End::Shutdown);
    }

    #[tokio::test]
    async fn relay_idle_timeout_closes_both_sides() {
        let (client, mut client_peer) = tokio::io::duplex(1024);
        let (store, mut store_peer) = tokio::io::duplex(1024);
        let task = tokio::spawn(relay(
            Box::new(client),
            Box::new(store),
            Options {
                idle: Duration::from_millis(100),
                ..test_options()
            },
        ));
        let mut got = Vec::new();
        client_peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"* BYE Autologout; idle for too long\r\n");
        let mut got = Vec::new();
        store_peer.read_to_end(&mut got).await.unwrap();
        assert!(got.is_empty());
        assert_eq!(task.await.unwrap().0, End::IdleTimeout);
    }
}
