//! One master connection: handshake, then a reader that opens frames and
//! spawns one task per request, and a writer that seals the answers in the
//! order it sends them, batching whatever is ready into one write.
//!
//! - Requests run concurrently (at most `max_in_flight` per connection) and
//!   are answered out of order, each with its request id.
//! - A frame that fails its MAC, replays a sequence number or does not
//!   parse ends the connection: it is counted in [`crate::NodeStats`] and
//!   logged in one line; the requests already accepted are still answered.
//!   An authenticated frame whose payload is not a request the node knows
//!   gets an `Invalid` error reply instead (the peer holds the key: it is a
//!   newer or buggy master, not an attacker).
//! - The session is split: the reader owns its receiving half (keys and
//!   replay window), the writer its sending half, so sealing happens in the
//!   order frames go out and neither waits for the other.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use qbd_core::proto::frame::{FrameHeader, FrameKind, HEADER_LEN};
use qbd_core::proto::msg::{ErrorCode, Request, Response};
use qbd_core::proto::session::{self, Opener, Sealer, Session};
use qbd_core::proto::{ClusterKey, ProtoError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::node::Node;
use crate::stats::bump;

/// Largest `ClientHello` payload accepted (nonce + a name).
const MAX_HELLO: u32 = 4096;
/// Stop adding answers to one write beyond this many bytes.
const WRITE_BATCH: usize = 1 << 20;

/// Per-connection limits.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    /// Time a client has to send its `ClientHello`.
    pub handshake_timeout: Duration,
    /// Requests of one connection being handled at once; the reader waits
    /// beyond that (backpressure instead of unbounded tasks).
    pub max_in_flight: usize,
    /// After the node stops reading a connection that may still be sending
    /// (shutdown, violation), how long it discards what arrives before it
    /// closes: closing with unread bytes would send a reset, and a reset
    /// makes the peer's kernel drop answers it has not read yet.
    pub linger: Duration,
}

impl Default for ConnConfig {
    fn default() -> Self {
        ConnConfig {
            handshake_timeout: Duration::from_secs(10),
            max_in_flight: 256,
            linger: Duration::from_secs(1),
        }
    }
}

/// A sealed-to-be answer.
#[derive(Debug)]
struct Outgoing {
    request_id: u64,
    opcode: u16,
    payload: Vec<u8>,
}

impl Outgoing {
    fn new(request_id: u64, resp: &Response) -> Self {
        let mut payload = Vec::new();
        resp.encode(&mut payload);
        Outgoing {
            request_id,
            opcode: resp.opcode(),
            payload,
        }
    }
}

/// Why the reader stopped.
#[derive(Debug)]
enum End {
    /// The peer closed between frames.
    Eof,
    /// The node is shutting down.
    Shutdown,
    /// The socket failed.
    Io(std::io::Error),
    /// The peer broke the protocol.
    Violation(ProtoError),
}

/// Serves one connection to its end.
pub(crate) async fn serve_connection(
    node: Arc<Node>,
    key: Arc<ClusterKey>,
    cfg: ConnConfig,
    stream: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::with_capacity(64 << 10, rd);
    let shaken = tokio::select! {
        r = tokio::time::timeout(cfg.handshake_timeout, handshake(&node, &key, &mut rd, &mut wr)) => r,
        _ = stopped(&mut stop) => return,
    };
    let (session, client) = match shaken {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return refuse_handshake(&node, peer, &e.to_string()),
        Err(_) => return refuse_handshake(&node, peer, "handshake timed out"),
    };
    let (sealer, mut opener) = session.split();
    let (tx, rx) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write_loop(wr, sealer, rx, peer));
    let limit = Arc::new(Semaphore::new(cfg.max_in_flight.max(1)));
    let end = read_loop(&node, &mut opener, &mut rd, tx, &limit, &mut stop).await;
    let linger = match end {
        End::Eof => false,
        End::Shutdown => true,
        End::Io(e) => {
            eprintln!("qbd-node: {peer} ({client}): connection failed: {e}");
            false
        }
        End::Violation(e) => {
            node.stats().count_violation(&e);
            eprintln!("qbd-node: {peer} ({client}): closing the connection: {e}");
            true
        }
    };
    // The writer ends (and sends FIN) once every in-flight request has been
    // answered.
    let _ = writer.await;
    if linger {
        discard_until_eof(&mut rd, cfg.linger).await;
    }
}

/// Reads and drops bytes until the peer closes or `limit` passes.
async fn discard_until_eof<R: AsyncRead + Unpin>(rd: &mut R, limit: Duration) {
    let drain = async {
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(limit, drain).await;
}

fn refuse_handshake(node: &Node, peer: SocketAddr, why: &str) {
    bump(&node.stats().handshake_failed);
    eprintln!("qbd-node: {peer}: {why}");
}

/// Reads the `ClientHello`, answers with the `ServerHello`.
async fn handshake(
    node: &Node,
    key: &ClusterKey,
    rd: &mut BufReader<OwnedReadHalf>,
    wr: &mut OwnedWriteHalf,
) -> Result<(Session, String), ProtoError> {
    let frame = read_frame(rd, MAX_HELLO)
        .await
        .map_err(|e| ProtoError::Handshake(e.to_string()))?
        .ok_or_else(|| ProtoError::Handshake("closed before the hello".into()))?;
    if FrameHeader::decode(&frame)?.kind != FrameKind::ClientHello {
        return Err(ProtoError::Handshake(
            "first frame is not a ClientHello".into(),
        ));
    }
    let (session, client, reply) = session::accept(key, fresh_nonce(), &node.hello(), &frame)?;
    wr.write_all(&reply)
        .await
        .map_err(|e| ProtoError::Handshake(format!("cannot send the hello: {e}")))?;
    Ok((session, client))
}

/// Opens frames and spawns their handling until EOF, shutdown or a
/// violation.
async fn read_loop(
    node: &Arc<Node>,
    opener: &mut Opener,
    rd: &mut BufReader<OwnedReadHalf>,
    tx: mpsc::UnboundedSender<Outgoing>,
    limit: &Arc<Semaphore>,
    stop: &mut watch::Receiver<bool>,
) -> End {
    loop {
        let frame = tokio::select! {
            biased;
            _ = stopped(stop) => return End::Shutdown,
            f = read_frame(rd, qbd_core::proto::msg::MAX_PAYLOAD) => f,
        };
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => return End::Eof,
            Err(ReadError::Io(e)) => return End::Io(e),
            Err(ReadError::Proto(e)) => return End::Violation(e),
        };
        let (hdr, payload) = match opener.open(&frame) {
            Ok(x) => x,
            Err(e) => return End::Violation(e),
        };
        if hdr.kind != FrameKind::Request {
            return End::Violation(ProtoError::malformed("frame", "not a request"));
        }
        let id = hdr.request_id;
        let req = match Request::decode(hdr.opcode, payload) {
            Ok(r) => r,
            Err(e) => {
                bump(&node.stats().malformed);
                let message = format!("undecodable request: {e}");
                let resp = Response::Error {
                    code: ErrorCode::Invalid,
                    message,
                };
                let _ = tx.send(Outgoing::new(id, &resp));
                continue;
            }
        };
        let Ok(permit) = Arc::clone(limit).acquire_owned().await else {
            return End::Shutdown;
        };
        let (node, tx) = (Arc::clone(node), tx.clone());
        tokio::spawn(async move {
            let resp = node.handle(req).await;
            bump(&node.stats().requests);
            let _ = tx.send(Outgoing::new(id, &resp));
            drop(permit);
        });
    }
}

/// Seals and sends answers, as many per write as are ready.
async fn write_loop(
    mut wr: OwnedWriteHalf,
    mut sealer: Sealer,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    peer: SocketAddr,
) {
    let mut buf = Vec::with_capacity(64 << 10);
    while let Some(first) = rx.recv().await {
        buf.clear();
        seal(&mut sealer, first, &mut buf);
        while buf.len() < WRITE_BATCH {
            let Ok(next) = rx.try_recv() else { break };
            seal(&mut sealer, next, &mut buf);
        }
        if let Err(e) = wr.write_all(&buf).await {
            eprintln!("qbd-node: {peer}: cannot send answers: {e}");
            return;
        }
    }
    let _ = wr.shutdown().await;
}

fn seal(s: &mut Sealer, o: Outgoing, out: &mut Vec<u8>) {
    s.seal(FrameKind::Response, o.opcode, o.request_id, &o.payload, out);
}

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error(transparent)]
    Io(std::io::Error),
    #[error(transparent)]
    Proto(#[from] ProtoError),
}

/// Reads one whole frame (header, payload, MAC); `None` on EOF before its
/// first byte. Checks the header's bounds before allocating the payload.
async fn read_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
    max_payload: u32,
) -> Result<Option<Vec<u8>>, ReadError> {
    let mut hdr = [0u8; HEADER_LEN];
    if rd.read(&mut hdr[..1]).await.map_err(ReadError::Io)? == 0 {
        return Ok(None);
    }
    read_exact(rd, &mut hdr[1..]).await?;
    let h = FrameHeader::decode(&hdr)?;
    if h.payload_len > max_payload {
        return Err(ProtoError::malformed("frame", "payload too long").into());
    }
    let mut frame = vec![0u8; h.frame_len()];
    frame[..HEADER_LEN].copy_from_slice(&hdr);
    read_exact(rd, &mut frame[HEADER_LEN..]).await?;
    Ok(Some(frame))
}

/// `read_exact`, with EOF in the middle of a frame counted as malformed.
async fn read_exact<R: AsyncRead + Unpin>(rd: &mut R, buf: &mut [u8]) -> Result<(), ReadError> {
    match rd.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(ProtoError::malformed("frame", "truncated").into())
        }
        Err(e) => Err(ReadError::Io(e)),
    }
}

/// Resolves once the node is shutting down.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// 32 fresh random bytes (uuid v4 draws them from the OS).
fn fresh_nonce() -> [u8; 32] {
    let mut n = [0u8; 32];
    n[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    n[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use qbd_core::proto::frame::MAC_LEN;

    fn header(payload_len: u32) -> [u8; HEADER_LEN] {
        FrameHeader {
            kind: FrameKind::Request,
            opcode: 1,
            flags: 0,
            payload_len,
            request_id: 7,
            seq: 1,
        }
        .encode()
    }

    #[tokio::test]
    async fn reads_whole_frames_and_eof_between_them() {
        let mut bytes = header(3).to_vec();
        bytes.extend_from_slice(&[1, 2, 3]);
        bytes.extend_from_slice(&[9; MAC_LEN]);
        let mut rd = &bytes[..];
        let f = read_frame(&mut rd, 100)
            .await
            .expect("frame")
            .expect("some");
        assert_eq!(f, bytes);
        assert!(read_frame(&mut rd, 100).await.expect("eof").is_none());
    }

    #[tokio::test]
    async fn rejects_garbage_truncation_and_oversize() {
        let garbage = [0x55u8; 64];
        let r = read_frame(&mut &garbage[..], 100).await;
        assert!(matches!(r, Err(ReadError::Proto(_))));
        let truncated = header(10);
        let r = read_frame(&mut &truncated[..], 100).await;
        assert!(matches!(r, Err(ReadError::Proto(_))));
        let big = header(101);
        let r = read_frame(&mut &big[..], 100).await;
        assert!(matches!(r, Err(ReadError::Proto(_))));
    }

    #[test]
    fn nonces_are_fresh() {
        assert_ne!(fresh_nonce(), fresh_nonce());
    }
}
