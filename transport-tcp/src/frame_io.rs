//! Whole frames over a TCP stream, and the client handshake.
//!
//! A frame is read header first: the header's (bounded) payload length says
//! how many more bytes belong to it, so a peer can never make us allocate
//! more than `msg::MAX_PAYLOAD` plus header and MAC. Nothing here
//! authenticates: only `Session::open` / `ClientHandshake::finish` do.

use std::io;

use qbd_core::proto::frame::{FrameHeader, HEADER_LEN};
use qbd_core::proto::session::{ClientHandshake, NodeHello, Session};
use qbd_core::proto::{ClusterKey, ProtoError};
use qbd_core::transport::TransportError;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;

/// Reads one whole frame (header, payload, MAC) into `buf`, replacing its
/// contents, and returns the decoded (unauthenticated) header.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> Result<FrameHeader, TransportError> {
    buf.clear();
    buf.resize(HEADER_LEN, 0);
    r.read_exact(buf).await.map_err(|e| lost("reading", &e))?;
    let header = FrameHeader::decode(buf)?;
    buf.resize(header.frame_len(), 0);
    r.read_exact(&mut buf[HEADER_LEN..])
        .await
        .map_err(|e| lost("reading", &e))?;
    Ok(header)
}

/// Writes all of `buf` through a write half shared with other writers
/// (which must not interleave: the caller orders them).
pub async fn write_all(w: &OwnedWriteHalf, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        w.writable().await?;
        match w.try_write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Runs the client side of the handshake on a fresh stream.
pub async fn handshake(
    stream: &mut TcpStream,
    key: &ClusterKey,
    nonce: [u8; 32],
    name: &str,
) -> Result<(Session, NodeHello), TransportError> {
    let (state, hello) = ClientHandshake::start(key, nonce, name);
    stream
        .write_all(&hello)
        .await
        .map_err(|e| lost("sending the hello", &e))?;
    let mut buf = Vec::new();
    // A node refuses a hello whose MAC does not verify by closing the
    // connection without answering: say so, it is almost always the key.
    read_frame(stream, &mut buf).await.map_err(|e| match e {
        TransportError::Disconnected(why) => {
            TransportError::Protocol(ProtoError::Handshake(format!(
                "the node closed the connection instead of answering the handshake ({why}): \
             is the cluster key the one the node uses?"
            )))
        }
        other => other,
    })?;
    Ok(state.finish(&buf)?)
}

/// 32 fresh random bytes for a handshake nonce.
pub fn fresh_nonce() -> [u8; 32] {
    let mut n = [0u8; 32];
    n[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    n[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    n
}

/// An I/O error on the stream: the connection is gone.
pub fn lost(doing: &str, e: &io::Error) -> TransportError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        TransportError::Disconnected(format!("node closed the connection while {doing}"))
    } else {
        TransportError::Disconnected(format!("{doing}: {e}"))
    }
}
