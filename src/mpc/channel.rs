//! Messages between the parties: framed byte messages over a [`Transport`]
//! (in-process queues for tests, TCP for real use), and the encoding of
//! ring elements and bits on the wire.
//!
//! Sends never block (TCP writes happen on a writer thread), so two parties
//! that both send a large message before receiving cannot deadlock. Every
//! receive has a timeout: a peer that hangs produces an error, not a hang.

use super::bits::BitVec;
use crate::fixed::Ring;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::Duration;

/// Frames larger than this are refused as garbage (a BERT-large layer at
/// 512 tokens sends well under 1 GiB per message).
pub const MAX_FRAME: usize = 1 << 30;

/// What can go wrong between the parties. Each names what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("the peer hung up{0}")]
    Closed(String),
    #[error("no message from the peer within {0} s{1}")]
    Timeout(u64, String),
    #[error("connection error: {0}")]
    Io(String),
    #[error("the peer sent a malformed message{at}: {msg}")]
    Garbage { at: String, msg: String },
}

impl ChannelError {
    /// The same error with where it happened appended.
    pub fn at(self, what: &str) -> Self {
        let w = format!(" (during {what})");
        match self {
            ChannelError::Closed(s) => ChannelError::Closed(s + &w),
            ChannelError::Timeout(t, s) => ChannelError::Timeout(t, s + &w),
            ChannelError::Garbage { at, msg } => ChannelError::Garbage { at: at + &w, msg },
            e => e,
        }
    }
}

/// A bidirectional message pipe to one peer.
pub trait Transport: Send {
    /// Queue a message; does not wait for the peer.
    fn send(&mut self, msg: Vec<u8>) -> Result<(), ChannelError>;
    /// The next message, waiting at most the transport's timeout.
    fn recv(&mut self) -> Result<Vec<u8>, ChannelError>;
}

/// One end of an in-process pipe.
pub struct MemTransport {
    tx: mpsc::Sender<Vec<u8>>,
    rx: mpsc::Receiver<Vec<u8>>,
    timeout: Duration,
}

/// Two connected in-process ends.
pub fn mem_pair(timeout: Duration) -> (MemTransport, MemTransport) {
    let (ta, rb) = mpsc::channel();
    let (tb, ra) = mpsc::channel();
    (MemTransport { tx: ta, rx: ra, timeout }, MemTransport { tx: tb, rx: rb, timeout })
}

impl Transport for MemTransport {
    fn send(&mut self, msg: Vec<u8>) -> Result<(), ChannelError> {
        self.tx.send(msg).map_err(|_| ChannelError::Closed(String::new()))
    }

    fn recv(&mut self) -> Result<Vec<u8>, ChannelError> {
        self.rx.recv_timeout(self.timeout).map_err(|e| match e {
            mpsc::RecvTimeoutError::Timeout => ChannelError::Timeout(self.timeout.as_secs(), String::new()),
            mpsc::RecvTimeoutError::Disconnected => ChannelError::Closed(String::new()),
        })
    }
}

/// A TCP connection: 4-byte little-endian length, then the payload.
pub struct TcpTransport {
    reader: TcpStream,
    writer: Option<mpsc::Sender<Vec<u8>>>,
    writer_thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    timeout: Duration,
}

impl TcpTransport {
    /// # Errors
    /// When the socket cannot be configured or cloned.
    pub fn new(stream: TcpStream, timeout: Duration) -> Result<Self, ChannelError> {
        let io = |e: std::io::Error| ChannelError::Io(e.to_string());
        stream.set_nodelay(true).map_err(io)?;
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        let mut w = stream.try_clone().map_err(io)?;
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let writer_thread = std::thread::spawn(move || {
            for msg in rx {
                w.write_all(&(msg.len() as u32).to_le_bytes())?;
                w.write_all(&msg)?;
            }
            w.flush()
        });
        Ok(TcpTransport { reader: stream, writer: Some(tx), writer_thread: Some(writer_thread), timeout })
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), ChannelError> {
        self.reader.read_exact(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => {
                ChannelError::Closed(String::new())
            }
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                ChannelError::Timeout(self.timeout.as_secs(), String::new())
            }
            _ => ChannelError::Io(e.to_string()),
        })
    }
}

impl Transport for TcpTransport {
    fn send(&mut self, msg: Vec<u8>) -> Result<(), ChannelError> {
        assert!(msg.len() <= MAX_FRAME, "message of {} bytes", msg.len());
        let closed = || ChannelError::Closed(" (while sending)".into());
        self.writer.as_ref().ok_or_else(closed)?.send(msg).map_err(|_| closed())
    }

    fn recv(&mut self) -> Result<Vec<u8>, ChannelError> {
        let mut len = [0u8; 4];
        self.read_exact(&mut len)?;
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(ChannelError::Garbage {
                at: String::new(),
                msg: format!("a frame of {len} bytes exceeds the {MAX_FRAME}-byte limit"),
            });
        }
        let mut buf = vec![0u8; len];
        self.read_exact(&mut buf)?;
        Ok(buf)
    }
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        // Close the queue so the writer drains what was sent, then stops.
        self.writer.take();
        if let Some(t) = self.writer_thread.take() {
            let _ = t.join();
        }
        let _ = self.reader.shutdown(std::net::Shutdown::Both);
    }
}

/// Bytes per ring element on the wire: ⌈ℓ/8⌉.
pub fn ring_bytes(r: Ring) -> usize {
    (r.bits() as usize).div_ceil(8)
}

/// Builds one message from ring elements and bit vectors.
pub struct MsgWriter {
    ring: Ring,
    buf: Vec<u8>,
}

impl MsgWriter {
    pub fn new(ring: Ring) -> Self {
        MsgWriter { ring, buf: Vec::new() }
    }

    pub fn ring(mut self, v: &[u64]) -> Self {
        let w = ring_bytes(self.ring);
        self.buf.reserve(v.len() * w);
        for x in v {
            self.buf.extend_from_slice(&x.to_le_bytes()[..w]);
        }
        self
    }

    pub fn bits(mut self, b: &BitVec) -> Self {
        self.buf.extend_from_slice(&b.to_bytes());
        self
    }

    /// Opaque bytes (function-secret-sharing keys).
    pub fn raw(mut self, b: &[u8]) -> Self {
        self.buf.extend_from_slice(b);
        self
    }

    pub fn u64s(mut self, v: &[u64]) -> Self {
        for x in v {
            self.buf.extend_from_slice(&x.to_le_bytes());
        }
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// Reads a message back in the order it was written, checking sizes and
/// that ring elements lie in the ring.
pub struct MsgReader<'a> {
    ring: Ring,
    buf: &'a [u8],
    at: usize,
}

impl<'a> MsgReader<'a> {
    pub fn new(ring: Ring, buf: &'a [u8]) -> Self {
        MsgReader { ring, buf, at: 0 }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], ChannelError> {
        if self.buf.len() - self.at < n {
            return Err(ChannelError::Garbage {
                at: String::new(),
                msg: format!("{} bytes where at least {} were expected ({what})", self.buf.len(), self.at + n),
            });
        }
        let s = &self.buf[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    pub fn ring(&mut self, n: usize) -> Result<Vec<u64>, ChannelError> {
        let w = ring_bytes(self.ring);
        let mask = self.ring.mask();
        let bytes = self.take(n * w, "ring elements")?;
        let mut out = Vec::with_capacity(n);
        for c in bytes.chunks(w) {
            let mut b = [0u8; 8];
            b[..w].copy_from_slice(c);
            let v = u64::from_le_bytes(b);
            if v & !mask != 0 {
                return Err(ChannelError::Garbage {
                    at: String::new(),
                    msg: format!("value {v:#x} is outside Z_2^{}", self.ring.bits()),
                });
            }
            out.push(v);
        }
        Ok(out)
    }

    pub fn bits(&mut self, n: usize) -> Result<BitVec, ChannelError> {
        let bytes = self.take(n.div_ceil(8), "bits")?;
        BitVec::from_bytes(n, bytes)
            .ok_or_else(|| ChannelError::Garbage { at: String::new(), msg: "padding bits are set".into() })
    }

    pub fn raw(&mut self, n: usize) -> Result<Vec<u8>, ChannelError> {
        Ok(self.take(n, "key bytes")?.to_vec())
    }

    pub fn u64s(&mut self, n: usize) -> Result<Vec<u64>, ChannelError> {
        let bytes = self.take(8 * n, "integers")?;
        Ok(bytes.chunks(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).collect())
    }

    /// Fails when bytes are left over.
    pub fn done(self) -> Result<(), ChannelError> {
        if self.at != self.buf.len() {
            return Err(ChannelError::Garbage {
                at: String::new(),
                msg: format!("{} bytes where {} were expected", self.buf.len(), self.at),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_refuse_garbage() {
        let r = Ring::BOLT;
        let v = vec![0, 1, r.mask(), 12345];
        let b = BitVec::from_bools(&[true, false, true]);
        let msg = MsgWriter::new(r).ring(&v).bits(&b).finish();
        assert_eq!(msg.len(), 4 * 5 + 1);
        let mut rd = MsgReader::new(r, &msg);
        assert_eq!(rd.ring(4).unwrap(), v);
        assert_eq!(rd.bits(3).unwrap(), b);
        rd.done().unwrap();
        // Too short, too long, out of the ring.
        assert!(MsgReader::new(r, &msg[..7]).ring(4).is_err());
        let mut rd = MsgReader::new(r, &msg);
        rd.ring(4).unwrap();
        assert!(rd.done().is_err());
        let bad = MsgWriter::new(Ring::CRYPTEN).ring(&[1 << 38]).finish();
        let err = MsgReader::new(Ring::CRYPTEN, &bad).ring(1).map(|_| ());
        assert!(err.is_ok());
        let err = MsgReader::new(r, &bad[..5]).ring(1).unwrap_err();
        assert!(err.to_string().contains("outside"), "{err}");
    }

    #[test]
    fn tcp_frames_and_hangups() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut t = TcpTransport::new(s, Duration::from_secs(5)).unwrap();
            let m = t.recv().unwrap();
            t.send(m.iter().map(|b| b + 1).collect()).unwrap();
            // Then hang up.
        });
        let mut c = TcpTransport::new(TcpStream::connect(addr).unwrap(), Duration::from_secs(5)).unwrap();
        c.send(vec![1, 2, 3]).unwrap();
        assert_eq!(c.recv().unwrap(), vec![2, 3, 4]);
        t.join().unwrap();
        assert!(matches!(c.recv(), Err(ChannelError::Closed(_))));
    }
}
