//! A small synchronous NBD client over the master's unix socket (QD1 per
//! connection; the harness runs several), fixed newstyle with
//! `NBD_OPT_EXPORT_NAME`, simple replies only. Constants from the NBD
//! protocol specification.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
const FLAG_FIXED_NEWSTYLE: u32 = 1;
const OPT_EXPORT_NAME: u32 = 1;
const REQUEST_MAGIC: u32 = 0x2560_9513;
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// NBD_CMD_FLAG_FUA.
const FLAG_FUA: u16 = 1;

/// The NBD commands the workload sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    /// NBD_CMD_READ.
    Read = 0,
    /// NBD_CMD_WRITE.
    Write = 1,
    /// NBD_CMD_FLUSH.
    Flush = 3,
    /// NBD_CMD_TRIM.
    Trim = 4,
    /// NBD_CMD_WRITE_ZEROES.
    WriteZeroes = 6,
}

/// Why a request did not succeed.
#[derive(Debug)]
pub enum Failure {
    /// The server answered with this NBD error number.
    Nbd(u32),
    /// The connection broke (the master died, or the harness stopped it).
    Io(io::Error),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Nbd(5) => write!(f, "EIO"),
            Failure::Nbd(e) => write!(f, "NBD error {e}"),
            Failure::Io(e) => write!(f, "connection: {e}"),
        }
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Io(e)
    }
}

/// One connection in the transmission phase.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    /// The export's size in bytes.
    pub size: u64,
    handle: u64,
}

impl Client {
    /// Connects to `socket` and opens `export`; every read blocks at most `timeout`.
    pub fn connect(socket: &Path, export: &str, timeout: Duration) -> io::Result<Client> {
        let mut stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut greeting = [0u8; 18];
        stream.read_exact(&mut greeting)?;
        if be64(&greeting[0..8]) != NBDMAGIC || be64(&greeting[8..16]) != IHAVEOPT {
            return Err(io::Error::other("not an NBD newstyle server"));
        }
        stream.write_all(&FLAG_FIXED_NEWSTYLE.to_be_bytes())?;
        let mut opt = IHAVEOPT.to_be_bytes().to_vec();
        opt.extend_from_slice(&OPT_EXPORT_NAME.to_be_bytes());
        opt.extend_from_slice(&(export.len() as u32).to_be_bytes());
        opt.extend_from_slice(export.as_bytes());
        stream.write_all(&opt)?;
        let mut reply = [0u8; 134];
        stream.read_exact(&mut reply)?;
        Ok(Client {
            stream,
            size: be64(&reply[0..8]),
            handle: 0,
        })
    }

    /// Reads `len` bytes at `offset`.
    pub fn read(&mut self, offset: u64, len: u32) -> Result<Vec<u8>, Failure> {
        self.request(Cmd::Read, 0, offset, len, &[])?;
        let mut data = vec![0u8; len as usize];
        self.stream.read_exact(&mut data)?;
        Ok(data)
    }

    /// Writes `data` at `offset`, with FUA if `fua`.
    pub fn write(&mut self, offset: u64, data: &[u8], fua: bool) -> Result<(), Failure> {
        let len = u32::try_from(data.len()).map_err(|_| io::Error::other("write too large"))?;
        self.request(Cmd::Write, fua_flag(fua), offset, len, data)
    }

    /// TRIM or WRITE_ZEROES of `len` bytes at `offset`, with FUA if `fua`.
    pub fn zero(&mut self, cmd: Cmd, offset: u64, len: u32, fua: bool) -> Result<(), Failure> {
        self.request(cmd, fua_flag(fua), offset, len, &[])
    }

    /// FLUSH.
    pub fn flush(&mut self) -> Result<(), Failure> {
        self.request(Cmd::Flush, 0, 0, 0, &[])
    }

    /// Sends one request and reads its reply header (not a read's data).
    fn request(
        &mut self,
        cmd: Cmd,
        flags: u16,
        offset: u64,
        len: u32,
        payload: &[u8],
    ) -> Result<(), Failure> {
        self.handle += 1;
        let mut msg = Vec::with_capacity(28 + payload.len());
        msg.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        msg.extend_from_slice(&flags.to_be_bytes());
        msg.extend_from_slice(&(cmd as u16).to_be_bytes());
        msg.extend_from_slice(&self.handle.to_be_bytes());
        msg.extend_from_slice(&offset.to_be_bytes());
        msg.extend_from_slice(&len.to_be_bytes());
        msg.extend_from_slice(payload);
        self.stream.write_all(&msg)?;
        let mut reply = [0u8; 16];
        self.stream.read_exact(&mut reply)?;
        let magic = u32::from_be_bytes([reply[0], reply[1], reply[2], reply[3]]);
        if magic != SIMPLE_REPLY_MAGIC || be64(&reply[8..16]) != self.handle {
            return Err(Failure::Io(io::Error::other("malformed reply")));
        }
        match u32::from_be_bytes([reply[4], reply[5], reply[6], reply[7]]) {
            0 => Ok(()),
            e => Err(Failure::Nbd(e)),
        }
    }
}

fn fua_flag(fua: bool) -> u16 {
    if fua { FLAG_FUA } else { 0 }
}

fn be64(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[..8]);
    u64::from_be_bytes(w)
}
