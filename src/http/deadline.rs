//! A deadline on reading a request body, so that a client trickling a
//! body (or a mem forwarding one) cannot hold a connection, a handler and
//! a store connection for ever. hyper bounds only the headers
//! (`header_read_timeout`); every request body goes through
//! [`DeadlineBody`] (`crate::http::serve`).
//!
//! The rule is the one of every protocol's commands (`limits.command_deadline`
//! with `limits.min_data_rate`): the body must be in within
//! `http.request_timeout` seconds of the request's arrival, pushed back by
//! `1 / limits.min_data_rate` s per byte received, so a slow but honest
//! link still uploads a large file while a trickle is cut after about
//! `request_timeout`. Past the deadline the body yields [`BodyTimeout`]:
//! the handler answers 408 (or stops forwarding) and hyper closes the
//! connection, whose body was not read to its end.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Bytes, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// The error a body yields once its deadline has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTimeout;

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body did not arrive in time")
    }
}

impl std::error::Error for BodyTimeout {}

/// Is `e`, or any error it wraps, a [`BodyTimeout`]?
pub fn is_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<BodyTimeout>() {
            return true;
        }
        cur = err.source();
    }
    false
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body that fails with [`BodyTimeout`] when it is not in by
/// its deadline (see the module doc).
pub struct DeadlineBody<B> {
    inner: B,
    start: Instant,
    base: Duration,
    /// Bytes per second that push the deadline back (0: none do).
    rate: u64,
    received: u64,
    sleep: Pin<Box<Sleep>>,
    expired: bool,
}

impl<B> DeadlineBody<B> {
    pub fn new(inner: B, base: Duration, rate: u64) -> DeadlineBody<B> {
        let start = Instant::now();
        DeadlineBody {
            inner,
            start,
            base,
            rate,
            received: 0,
            sleep: Box::pin(tokio::time::sleep_until(start + base)),
            expired: false,
        }
    }

    fn deadline(&self) -> Instant {
        let extra = if self.rate == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(self.received as f64 / self.rate as f64)
        };
        self.start + self.base + extra
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received = this.received.saturating_add(data.len() as u64);
                    let d = this.deadline();
                    this.sleep.as_mut().reset(d);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if this.sleep.as_mut().poll(cx).is_ready() {
                    this.expired = true;
                    Poll::Ready(Some(Err(Box::new(BodyTimeout))))
                } else {
                    Poll::Pending
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A body whose frames arrive when the test says.
    struct Trickle {
        rx: tokio::sync::mpsc::Receiver<Bytes>,
        buffered: VecDeque<Bytes>,
    }

    impl Body for Trickle {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            if let Some(b) = self.buffered.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            self.rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
        }
    }

    async fn next(b: &mut DeadlineBody<Trickle>) -> Option<Result<Frame<Bytes>, BoxError>> {
        std::future::poll_fn(|cx| Pin::new(&mut *b).poll_frame(cx)).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickled_body_is_cut_after_the_request_timeout() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let inner = Trickle {
            rx,
            buffered: VecDeque::new(),
        };
        let mut b = DeadlineBody::new(inner, Duration::from_secs(10), 500);
        let start = Instant::now();
        let feeder = tokio::spawn(async move {
            loop {
                if tx.send(Bytes::from_static(b"x")).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let mut got = 0;
        let err = loop {
            match next(&mut b).await {
                Some(Ok(_)) => got += 1,
                Some(Err(e)) => break e,
                None => panic!("ended"),
            }
        };
        assert!(is_body_timeout(err.as_ref()));
        // ten 1-byte frames in the first ten seconds, pushed back 2 ms each
        assert!((10..=11).contains(&got), "{got}");
        assert!(start.elapsed() < Duration::from_secs(11));
        // and stays failed
        assert!(matches!(next(&mut b).await, Some(Err(_))));
        feeder.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_body_at_the_minimum_rate_gets_more_time() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let inner = Trickle {
            rx,
            buffered: VecDeque::new(),
        };
        // 1 s base, 1000 B/s: 20 frames of 1000 bytes, one a second, take
        // 20 s and are all accepted (each buys a second).
        let mut b = DeadlineBody::new(inner, Duration::from_secs(1), 1000);
        let feeder = tokio::spawn(async move {
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_millis(900)).await;
                tx.send(Bytes::from(vec![0u8; 1000])).await.unwrap();
            }
        });
        let mut got = 0;
        while let Some(f) = next(&mut b).await {
            f.unwrap();
            got += 1;
        }
        assert_eq!(got, 20);
        feeder.await.unwrap();
    }
}
