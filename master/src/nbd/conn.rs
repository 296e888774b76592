//! The transmission phase of one connection.
//!
//! Three kinds of task cooperate:
//! - the reader (the connection task itself) reads request headers and
//!   payloads, checks them ([`check`]) and spawns one task per request;
//! - request tasks call the device and queue their [`Reply`];
//! - one writer task encodes replies into a buffer and flushes it whenever
//!   its queue runs dry, so replies never interleave and bursts cost one
//!   syscall.
//!
//! Backpressure: every request holds permits of a per-connection
//! [`Semaphore`] until its reply is written (1 permit, plus 1 per
//! [`BUDGET_UNIT`] of data buffer), so at most [`BUDGET`] requests and about
//! `BUDGET × BUDGET_UNIT` bytes of buffers are in flight; when none are left
//! the reader stops reading.
//!
//! Ending: on `NBD_CMD_DISC`, shutdown, a read error or a protocol
//! violation the reader stops; in-flight requests still complete and their
//! replies are written; then the writer closes the socket. When the writer
//! fails (client gone), the reader stops too and the remaining device calls
//! finish with nowhere to send their replies. [`serve`] returns only when no
//! request of the connection is running.

use std::io;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use super::Error;
use super::handshake::{Negotiated, skip};
use super::wire::{self, Command, MAX_PAYLOAD, RequestHeader, SimpleReply, cmd_flags, errno};
use crate::device::{BlockDevice, DeviceResult};

/// Permits per connection: the bound on in-flight requests.
pub(crate) const BUDGET: u32 = 128;
/// Buffer bytes one extra permit stands for.
pub(crate) const BUDGET_UNIT: u32 = 512 << 10;
/// Longest refused WRITE payload that is read and discarded rather than
/// dropping the client.
pub(crate) const MAX_SKIP: u32 = 2 * MAX_PAYLOAD;
const WRITE_BUFFER: usize = 256 << 10;

/// A checked request, ready for the device.
#[derive(Debug)]
enum Op {
    Read {
        offset: u64,
        len: u32,
    },
    Write {
        offset: u64,
        data: Vec<u8>,
        fua: bool,
    },
    Flush,
    Trim {
        offset: u64,
        len: u64,
        fua: bool,
    },
    Zeroes {
        offset: u64,
        len: u64,
        no_hole: bool,
        fua: bool,
    },
}

/// The outcome of a request, as the writer encodes it.
#[derive(Debug, PartialEq, Eq)]
enum Body {
    /// Success without data.
    Done,
    /// Failure of a non-READ command.
    Failed(u32),
    /// Successful READ.
    Data { offset: u64, data: Vec<u8> },
    /// Failed READ (needs an error chunk when structured).
    ReadFailed(u32),
}

/// A reply queued for the writer; its permits return when it is dropped.
#[derive(Debug)]
struct Reply {
    cookie: u64,
    body: Body,
    _permit: OwnedSemaphorePermit,
}

/// What the reader got from the socket.
enum Incoming {
    Disc,
    Immediate(u64, Body, OwnedSemaphorePermit),
    Op(u64, Op, OwnedSemaphorePermit),
}

/// Validates a request against what was negotiated; `Err` is the NBD errno.
///
/// FUA is accepted on every command (clients set it on reads too); DF only
/// on READ with structured replies; NO_HOLE only on WRITE_ZEROES. Ranges
/// beyond the end give ENOSPC for WRITE/WRITE_ZEROES and EINVAL otherwise.
pub(crate) fn check(h: &RequestHeader, n: &Negotiated) -> Result<(), u32> {
    let allowed = match h.command {
        Command::Read if n.structured => cmd_flags::FUA | cmd_flags::DF,
        Command::Read | Command::Write | Command::Flush | Command::Trim => cmd_flags::FUA,
        Command::WriteZeroes => cmd_flags::FUA | cmd_flags::NO_HOLE,
        Command::Disc | Command::Unknown(_) => return Err(errno::EINVAL),
    };
    if h.flags & !allowed != 0 {
        return Err(errno::EINVAL);
    }
    let writes = matches!(
        h.command,
        Command::Write | Command::Trim | Command::WriteZeroes
    );
    if writes && n.read_only() {
        return Err(errno::EPERM);
    }
    if h.command == Command::Flush {
        return Ok(()); // offset and length are reserved
    }
    if matches!(h.command, Command::Read | Command::Write) && h.length > MAX_PAYLOAD {
        return Err(errno::EINVAL);
    }
    match h.offset.checked_add(u64::from(h.length)) {
        Some(end) if end <= n.size => Ok(()),
        _ if matches!(h.command, Command::Write | Command::WriteZeroes) => Err(errno::ENOSPC),
        _ => Err(errno::EINVAL),
    }
}

/// Permits a request holds: one, plus one per started `BUDGET_UNIT` of buffer.
fn cost(buffer_len: u32) -> u32 {
    (1 + buffer_len.div_ceil(BUDGET_UNIT)).min(BUDGET)
}

/// Runs the transmission phase until DISC, shutdown (`stop` turns true) or
/// an error; returns once every request of the connection has finished.
pub(crate) async fn serve<D, R, W>(
    device: Arc<D>,
    r: &mut R,
    w: W,
    n: Negotiated,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), Error>
where
    D: BlockDevice,
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write_replies(w, rx, n.structured));
    let budget = Arc::new(Semaphore::new(BUDGET as usize));
    let read_result = read_loop(&device, r, &tx, &budget, &n, stop).await;
    drop(tx);
    let write_result = writer.await.unwrap_or_else(|e| Err(io::Error::other(e)));
    // Requests whose replies could not be written may still be running.
    let _ = budget.acquire_many(BUDGET).await;
    read_result?;
    Ok(write_result?)
}

async fn read_loop<D, R>(
    device: &Arc<D>,
    r: &mut R,
    tx: &mpsc::UnboundedSender<Reply>,
    budget: &Arc<Semaphore>,
    n: &Negotiated,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), Error>
where
    D: BlockDevice,
    R: AsyncRead + Unpin,
{
    loop {
        let incoming = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return Ok(()),
            () = tx.closed() => return Ok(()), // the writer failed and reports why
            incoming = read_request(r, budget, n) => incoming?,
        };
        match incoming {
            Incoming::Disc => return Ok(()),
            Incoming::Immediate(cookie, body, permit) => {
                let _ = tx.send(Reply {
                    cookie,
                    body,
                    _permit: permit,
                });
            }
            Incoming::Op(cookie, op, permit) => {
                let (device, tx) = (Arc::clone(device), tx.clone());
                tokio::spawn(async move {
                    let body = execute(&*device, op).await;
                    let _ = tx.send(Reply {
                        cookie,
                        body,
                        _permit: permit,
                    });
                });
            }
        }
    }
}

/// Reads one request (header and any payload). Cancel-safe only in the
/// sense that cancelling drops the connection's framing, which is what
/// shutdown wants.
async fn read_request<R: AsyncRead + Unpin>(
    r: &mut R,
    budget: &Arc<Semaphore>,
    n: &Negotiated,
) -> Result<Incoming, Error> {
    let mut hdr = [0; RequestHeader::LEN];
    r.read_exact(&mut hdr).await?;
    let h = RequestHeader::decode(&hdr)?;
    if h.command == Command::Disc {
        return Ok(Incoming::Disc);
    }
    let verdict = check(&h, n);
    let buffered = match (h.command, verdict) {
        (Command::Read | Command::Write, Ok(())) => h.length,
        _ => 0,
    };
    let permit = Arc::clone(budget)
        .acquire_many_owned(cost(buffered))
        .await
        .map_err(|_| io::Error::other("request budget closed"))?;
    if let Err(e) = verdict {
        if h.command == Command::Write {
            if h.length > MAX_SKIP {
                return Err(Error::PayloadTooLong(h.length));
            }
            skip(r, u64::from(h.length)).await?;
        }
        let body = if h.command == Command::Read {
            Body::ReadFailed(e)
        } else {
            Body::Failed(e)
        };
        return Ok(Incoming::Immediate(h.cookie, body, permit));
    }
    let (offset, len, fua) = (h.offset, h.length, h.flags & cmd_flags::FUA != 0);
    let op = match h.command {
        _ if len == 0 && h.command != Command::Flush => {
            // Zero-length requests: unspecified by the spec; succeed without
            // touching the device.
            let body = if h.command == Command::Read {
                Body::Data {
                    offset,
                    data: Vec::new(),
                }
            } else {
                Body::Done
            };
            return Ok(Incoming::Immediate(h.cookie, body, permit));
        }
        Command::Read => Op::Read { offset, len },
        Command::Write => Op::Write {
            offset,
            data: read_payload(r, len).await?,
            fua,
        },
        Command::Trim => Op::Trim {
            offset,
            len: u64::from(len),
            fua,
        },
        Command::WriteZeroes => {
            let no_hole = h.flags & cmd_flags::NO_HOLE != 0;
            Op::Zeroes {
                offset,
                len: u64::from(len),
                no_hole,
                fua,
            }
        }
        Command::Flush | Command::Disc | Command::Unknown(_) => Op::Flush,
    };
    Ok(Incoming::Op(h.cookie, op, permit))
}

/// Reads exactly `len` payload bytes into a fresh buffer (not zero-filled first).
async fn read_payload<R: AsyncRead + Unpin>(r: &mut R, len: u32) -> io::Result<Vec<u8>> {
    let len = len as usize;
    let mut data = Vec::with_capacity(len);
    let mut limited = r.take(len as u64);
    while data.len() < len {
        if limited.read_buf(&mut data).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(data)
}

async fn execute<D: BlockDevice>(device: &D, op: Op) -> Body {
    match op {
        Op::Read { offset, len } => match device.read(offset, len).await {
            Ok(data) if data.len() == len as usize => Body::Data { offset, data },
            Ok(_) => Body::ReadFailed(errno::EIO), // device broke its contract
            Err(e) => Body::ReadFailed(e.nbd_errno()),
        },
        Op::Write { offset, data, fua } => done(device.write(offset, data, fua).await),
        Op::Flush => done(device.flush().await),
        Op::Trim { offset, len, fua } => done(device.trim(offset, len, fua).await),
        Op::Zeroes {
            offset,
            len,
            no_hole,
            fua,
        } => done(device.write_zeroes(offset, len, no_hole, fua).await),
    }
}

fn done(r: DeviceResult<()>) -> Body {
    match r {
        Ok(()) => Body::Done,
        Err(e) => Body::Failed(e.nbd_errno()),
    }
}

/// The writer task: encodes replies in arrival order, flushing when idle.
async fn write_replies<W: AsyncWrite + Unpin>(
    w: W,
    mut rx: mpsc::UnboundedReceiver<Reply>,
    structured: bool,
) -> io::Result<()> {
    let mut w = BufWriter::with_capacity(WRITE_BUFFER, w);
    while let Some(reply) = rx.recv().await {
        put(&mut w, reply, structured).await?;
        while let Ok(reply) = rx.try_recv() {
            put(&mut w, reply, structured).await?;
        }
        w.flush().await?;
    }
    w.shutdown().await
}

async fn put<W: AsyncWrite + Unpin>(w: &mut W, reply: Reply, structured: bool) -> io::Result<()> {
    let cookie = reply.cookie;
    let simple = |error| SimpleReply { error, cookie }.encode();
    match reply.body {
        Body::Done => w.write_all(&simple(0)).await,
        Body::Failed(e) => w.write_all(&simple(e)).await,
        Body::Data { data, .. } if !structured => {
            w.write_all(&simple(0)).await?;
            w.write_all(&data).await
        }
        Body::Data { data, .. } if data.is_empty() => {
            w.write_all(&wire::encode_none_chunk(cookie)).await
        }
        Body::Data { offset, data } => {
            // `data.len()` <= MAX_PAYLOAD, checked before the read.
            let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
            w.write_all(&wire::encode_read_chunk_header(cookie, offset, len))
                .await?;
            w.write_all(&data).await
        }
        Body::ReadFailed(e) if structured => {
            w.write_all(&wire::encode_error_chunk(cookie, e)).await
        }
        Body::ReadFailed(e) => w.write_all(&simple(e)).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nbd::wire::transmission_flags as tf;

    fn neg(structured: bool, read_only: bool) -> Negotiated {
        let mut flags = tf::HAS_FLAGS;
        if read_only {
            flags |= tf::READ_ONLY;
        }
        Negotiated {
            size: 1 << 20,
            flags,
            structured,
        }
    }

    fn req(command: Command, flags: u16, offset: u64, length: u32) -> RequestHeader {
        RequestHeader {
            flags,
            command,
            cookie: 1,
            offset,
            length,
        }
    }

    #[test]
    fn check_ranges() {
        let n = neg(false, false);
        assert_eq!(check(&req(Command::Read, 0, 0, 4096), &n), Ok(()));
        assert_eq!(check(&req(Command::Read, 0, (1 << 20) - 1, 1), &n), Ok(()));
        assert_eq!(
            check(&req(Command::Read, 0, 1 << 20, 1), &n),
            Err(errno::EINVAL)
        );
        assert_eq!(
            check(&req(Command::Read, 0, u64::MAX, 2), &n),
            Err(errno::EINVAL)
        );
        assert_eq!(
            check(&req(Command::Trim, 0, 1 << 20, 1), &n),
            Err(errno::EINVAL)
        );
        assert_eq!(
            check(&req(Command::Write, 0, 1 << 20, 1), &n),
            Err(errno::ENOSPC)
        );
        assert_eq!(
            check(&req(Command::WriteZeroes, 0, 1, 1 << 20), &n),
            Err(errno::ENOSPC)
        );
        assert_eq!(check(&req(Command::Flush, 0, 77, 99), &n), Ok(()));
    }

    #[test]
    fn check_sizes_flags_and_permissions() {
        let n = neg(false, false);
        let big = Negotiated { size: 1 << 40, ..n };
        assert_eq!(
            check(&req(Command::Read, 0, 0, MAX_PAYLOAD + 1), &big),
            Err(errno::EINVAL)
        );
        assert_eq!(
            check(&req(Command::Write, 0, 0, MAX_PAYLOAD + 1), &big),
            Err(errno::EINVAL)
        );
        assert_eq!(check(&req(Command::Trim, 0, 0, u32::MAX), &big), Ok(()));
        assert_eq!(
            check(
                &req(Command::WriteZeroes, cmd_flags::NO_HOLE, 0, u32::MAX),
                &big
            ),
            Ok(())
        );
        assert_eq!(
            check(&req(Command::Write, cmd_flags::NO_HOLE, 0, 1), &n),
            Err(errno::EINVAL)
        );
        assert_eq!(
            check(&req(Command::Read, cmd_flags::DF, 0, 1), &n),
            Err(errno::EINVAL)
        );
        assert_eq!(
            check(&req(Command::Read, cmd_flags::DF, 0, 1), &neg(true, false)),
            Ok(())
        );
        assert_eq!(check(&req(Command::Read, cmd_flags::FUA, 0, 1), &n), Ok(()));
        assert_eq!(
            check(&req(Command::Read, 1 << 4, 0, 1), &n),
            Err(errno::EINVAL)
        );
        assert_eq!(
            check(&req(Command::Unknown(5), 0, 0, 1), &n),
            Err(errno::EINVAL)
        );
        let ro = neg(false, true);
        for c in [Command::Write, Command::Trim, Command::WriteZeroes] {
            assert_eq!(check(&req(c, 0, 0, 1), &ro), Err(errno::EPERM));
        }
        assert_eq!(check(&req(Command::Read, 0, 0, 1), &ro), Ok(()));
        assert_eq!(check(&req(Command::Flush, 0, 0, 0), &ro), Ok(()));
    }

    #[test]
    fn cost_bounds() {
        assert_eq!(cost(0), 1);
        assert_eq!(cost(4096), 2);
        assert_eq!(cost(BUDGET_UNIT), 2);
        assert_eq!(cost(MAX_PAYLOAD), 65);
        assert!(cost(u32::MAX) <= BUDGET);
    }

    async fn encoded(body: Body, structured: bool) -> Vec<u8> {
        let sem = Arc::new(Semaphore::new(1));
        let permit = sem.acquire_owned().await.expect("permit");
        let mut out = Vec::new();
        put(
            &mut out,
            Reply {
                cookie: 7,
                body,
                _permit: permit,
            },
            structured,
        )
        .await
        .expect("put");
        out
    }

    #[tokio::test]
    async fn reply_encoding_simple_and_structured() {
        let ok = SimpleReply {
            error: 0,
            cookie: 7,
        }
        .encode();
        assert_eq!(encoded(Body::Done, true).await, ok);
        let mut want = ok.to_vec();
        want.extend_from_slice(b"abc");
        assert_eq!(
            encoded(
                Body::Data {
                    offset: 3,
                    data: b"abc".to_vec()
                },
                false
            )
            .await,
            want
        );
        let mut want = wire::encode_read_chunk_header(7, 3, 3).to_vec();
        want.extend_from_slice(b"abc");
        assert_eq!(
            encoded(
                Body::Data {
                    offset: 3,
                    data: b"abc".to_vec()
                },
                true
            )
            .await,
            want
        );
        assert_eq!(
            encoded(
                Body::Data {
                    offset: 3,
                    data: vec![]
                },
                true
            )
            .await,
            wire::encode_none_chunk(7)
        );
        assert_eq!(
            encoded(Body::ReadFailed(22), true).await,
            wire::encode_error_chunk(7, 22)
        );
        assert_eq!(
            encoded(Body::ReadFailed(22), false).await,
            SimpleReply {
                error: 22,
                cookie: 7
            }
            .encode()
        );
        assert_eq!(
            encoded(Body::Failed(1), true).await,
            SimpleReply {
                error: 1,
                cookie: 7
            }
            .encode()
        );
    }
}
