//! COMPRESS=DEFLATE (RFC 4978): a raw DEFLATE (RFC 1951) stream in each
//! direction. Every flush of the session ends in a sync flush, so the
//! client can decode each response as soon as it arrives.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::net::Conn;

/// Compressed output is written to the peer once this much is pending.
const HIGH_WATER: usize = 64 * 1024;

pub struct Deflated {
    inner: Conn,
    inflate: Decompress,
    deflate: Compress,
    /// Compressed input received and not yet inflated.
    in_buf: Box<[u8]>,
    in_pos: usize,
    in_len: usize,
    in_eof: bool,
    /// Compressed output not yet written.
    out: Vec<u8>,
    out_pos: usize,
    /// Data was written since the last sync flush.
    dirty: bool,
}

impl Deflated {
    pub fn new(inner: Conn) -> Deflated {
        Deflated {
            inner,
            inflate: Decompress::new(false),
            deflate: Compress::new(Compression::new(5), false),
            in_buf: vec![0u8; 16 * 1024].into_boxed_slice(),
            in_pos: 0,
            in_len: 0,
            in_eof: false,
            out: Vec::new(),
            out_pos: 0,
            dirty: false,
        }
    }

    fn compress(&mut self, mut input: &[u8], flush: FlushCompress) -> io::Result<()> {
        loop {
            if self.out.capacity() - self.out.len() < 1024 {
                self.out.reserve(input.len() / 2 + 4096);
            }
            let before_in = self.deflate.total_in();
            let before_out = self.deflate.total_out();
            self.deflate
                .compress_vec(input, &mut self.out, flush)
                .map_err(io::Error::other)?;
            let used = (self.deflate.total_in() - before_in) as usize;
            let produced = (self.deflate.total_out() - before_out) as usize;
            input = input.get(used..).unwrap_or_default();
            let room_left = self.out.capacity() > self.out.len();
            if input.is_empty() && (room_left || produced == 0) {
                return Ok(());
            }
        }
    }

    /// Writes pending compressed bytes to the peer.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.out.len() {
            let chunk = self.out.get(self.out_pos..).unwrap_or_default();
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, chunk))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }
        self.out.clear();
        self.out_pos = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Deflated {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if me.in_pos < me.in_len || me.in_eof {
                let input = me.in_buf.get(me.in_pos..me.in_len).unwrap_or_default();
                let before_in = me.inflate.total_in();
                let before_out = me.inflate.total_out();
                let out = buf.initialize_unfilled();
                let status = me
                    .inflate
                    .decompress(input, out, FlushDecompress::None)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                let used = (me.inflate.total_in() - before_in) as usize;
                let produced = (me.inflate.total_out() - before_out) as usize;
                me.in_pos += used;
                buf.advance(produced);
                if produced > 0 || status == Status::StreamEnd || me.in_eof {
                    return Poll::Ready(Ok(()));
                }
                if used > 0 {
                    continue;
                }
            }
            let mut rb = ReadBuf::new(&mut me.in_buf);
            ready!(Pin::new(&mut me.inner).poll_read(cx, &mut rb))?;
            let n = rb.filled().len();
            me.in_pos = 0;
            me.in_len = n;
            if n == 0 {
                me.in_eof = true;
            }
        }
    }
}

impl AsyncWrite for Deflated {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        if me.out.len() - me.out_pos >= HIGH_WATER {
            ready!(me.poll_drain(cx))?;
        }
        me.compress(data, FlushCompress::None)?;
        me.dirty = true;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if me.dirty {
            me.compress(&[], FlushCompress::Sync)?;
            me.dirty = false;
        }
        ready!(me.poll_drain(cx))?;
        Pin::new(&mut me.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn rfc4978_round_trip_with_sync_flush() {
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let mut z = Deflated::new(Box::new(a));
        z.write_all(b"* OK hello\r\n").await.unwrap();
        z.flush().await.unwrap();
        // The peer can inflate what arrived so far (sync flush).
        let mut got = vec![0u8; 4096];
        let n = b.read(&mut got).await.unwrap();
        let mut d = flate2::read::DeflateDecoder::new(&got[..n]);
        let mut text = vec![0u8; 64];
        let m = d.read(&mut text).unwrap();
        assert_eq!(&text[..m], b"* OK hello\r\n");
        // And what the peer sends compressed, we read in plain.
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"a NOOP\r\n").unwrap();
        enc.flush().unwrap();
        b.write_all(enc.get_ref()).await.unwrap();
        let mut line = vec![0u8; 64];
        let n = z.read(&mut line).await.unwrap();
        assert_eq!(&line[..n], b"a NOOP\r\n");
    }
}
