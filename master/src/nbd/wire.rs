//! NBD wire format: constants and plain encode/decode functions. No I/O.
//!
//! All integers are big-endian (network byte order). Decoders take a byte
//! slice and check its length first; once a length check has passed no
//! accessor can panic. Unknown codes decode to `Unknown(_)` variants instead
//! of failing, so the caller decides what an unknown command means.
//!
//! Only the parts of the protocol QBD speaks are here: fixed newstyle
//! handshake, simple and structured replies (no extended headers).

/// `NBDMAGIC`: first 8 bytes the server sends.
pub const NBD_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: newstyle magic; also prefixes every client option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Magic of every fixed-newstyle option reply.
pub const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Magic of a transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic of a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Magic of a structured reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Handshake flags (server → client, 16 bits).
pub mod handshake_flags {
    /// The server speaks fixed newstyle.
    pub const FIXED_NEWSTYLE: u16 = 1 << 0;
    /// The server can omit the 124 zero bytes after `OPT_EXPORT_NAME`.
    pub const NO_ZEROES: u16 = 1 << 1;
}

/// Client flags (client → server, 32 bits).
pub mod client_flags {
    /// The client speaks fixed newstyle.
    pub const FIXED_NEWSTYLE: u32 = 1 << 0;
    /// The client does not want the 124 zero bytes.
    pub const NO_ZEROES: u32 = 1 << 1;
    /// Every flag this server understands.
    pub const KNOWN: u32 = FIXED_NEWSTYLE | NO_ZEROES;
}

/// Transmission flags (16 bits, sent with the export size).
pub mod transmission_flags {
    /// Always set.
    pub const HAS_FLAGS: u16 = 1 << 0;
    /// The export refuses writes.
    pub const READ_ONLY: u16 = 1 << 1;
    /// `CMD_FLUSH` is supported.
    pub const SEND_FLUSH: u16 = 1 << 2;
    /// `CMD_FLAG_FUA` is supported.
    pub const SEND_FUA: u16 = 1 << 3;
    /// `CMD_TRIM` is supported.
    pub const SEND_TRIM: u16 = 1 << 5;
    /// `CMD_WRITE_ZEROES` (and `CMD_FLAG_NO_HOLE`) is supported.
    pub const SEND_WRITE_ZEROES: u16 = 1 << 6;
    /// `CMD_FLAG_DF` is supported (only with structured replies).
    pub const SEND_DF: u16 = 1 << 7;
    /// Flush/FUA effects are visible across all connections.
    pub const CAN_MULTI_CONN: u16 = 1 << 8;
}

/// Option codes (`NBD_OPT_*`).
pub mod opt {
    /// Select an export and enter transmission (old style, no errors).
    pub const EXPORT_NAME: u32 = 1;
    /// Soft disconnect during the handshake.
    pub const ABORT: u32 = 2;
    /// List the exports.
    pub const LIST: u32 = 3;
    /// Upgrade to TLS (not supported).
    pub const STARTTLS: u32 = 5;
    /// Describe an export.
    pub const INFO: u32 = 6;
    /// Describe an export and enter transmission.
    pub const GO: u32 = 7;
    /// Use structured replies.
    pub const STRUCTURED_REPLY: u32 = 8;
    /// List metadata contexts.
    pub const LIST_META_CONTEXT: u32 = 9;
    /// Select metadata contexts.
    pub const SET_META_CONTEXT: u32 = 10;
}

/// Option reply types (`NBD_REP_*`).
pub mod rep {
    /// Success / end of a list.
    pub const ACK: u32 = 1;
    /// One export in an `OPT_LIST` answer.
    pub const SERVER: u32 = 2;
    /// One `NBD_INFO_*` item.
    pub const INFO: u32 = 3;
    /// One metadata context.
    pub const META_CONTEXT: u32 = 4;
    const ERR: u32 = 1 << 31;
    /// Unknown option.
    pub const ERR_UNSUP: u32 = ERR + 1;
    /// Refused by policy.
    pub const ERR_POLICY: u32 = ERR + 2;
    /// Syntactically or semantically invalid option.
    pub const ERR_INVALID: u32 = ERR + 3;
    /// Unknown export.
    pub const ERR_UNKNOWN: u32 = ERR + 6;
    /// The server is shutting down.
    pub const ERR_SHUTDOWN: u32 = ERR + 7;
    /// Request or reply too large.
    pub const ERR_TOO_BIG: u32 = ERR + 9;

    /// Whether `reply_type` is an error reply.
    pub fn is_error(reply_type: u32) -> bool {
        reply_type & ERR != 0
    }
}

/// Information types (`NBD_INFO_*`).
pub mod info {
    /// Size and transmission flags.
    pub const EXPORT: u16 = 0;
    /// Canonical export name.
    pub const NAME: u16 = 1;
    /// Human-readable description.
    pub const DESCRIPTION: u16 = 2;
    /// Minimum, preferred and maximum block sizes.
    pub const BLOCK_SIZE: u16 = 3;
}

/// Command flags (`NBD_CMD_FLAG_*`).
pub mod cmd_flags {
    /// Force unit access.
    pub const FUA: u16 = 1 << 0;
    /// `WRITE_ZEROES` must allocate.
    pub const NO_HOLE: u16 = 1 << 1;
    /// `READ` must answer with at most one content chunk.
    pub const DF: u16 = 1 << 2;
}

/// Structured reply chunk types (`NBD_REPLY_TYPE_*`).
pub mod reply_type {
    /// Empty final chunk.
    pub const NONE: u16 = 0;
    /// Data at an offset.
    pub const OFFSET_DATA: u16 = 1;
    /// Error without an offset.
    pub const ERROR: u16 = (1 << 15) + 1;
}

/// Structured reply flag: this is the last chunk of the reply.
pub const REPLY_FLAG_DONE: u16 = 1;

/// NBD error values (the only ones allowed on the wire).
pub mod errno {
    /// Operation not permitted.
    pub const EPERM: u32 = 1;
    /// Input/output error.
    pub const EIO: u32 = 5;
    /// Invalid argument.
    pub const EINVAL: u32 = 22;
    /// No space left on device.
    pub const ENOSPC: u32 = 28;
    /// Value too large.
    pub const EOVERFLOW: u32 = 75;
    /// Server shutting down.
    pub const ESHUTDOWN: u32 = 108;
}

/// Largest READ/WRITE payload the server accepts (and advertises): 32 MiB.
pub const MAX_PAYLOAD: u32 = 32 << 20;

/// Decoding failures. All are the peer's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer bytes than the message needs.
    #[error("truncated message: need {need} bytes, got {got}")]
    Truncated {
        /// Bytes the message needs.
        need: usize,
        /// Bytes available.
        got: usize,
    },
    /// More bytes than the message has room for.
    #[error("{0} trailing bytes")]
    Trailing(usize),
    /// A magic number did not match.
    #[error("bad magic {0:#x}")]
    BadMagic(u64),
    /// A length field points past the end of the message.
    #[error("inner length {0} exceeds the message")]
    BadLength(u64),
}

fn need(buf: &[u8], n: usize) -> Result<(), WireError> {
    if buf.len() < n {
        Err(WireError::Truncated {
            need: n,
            got: buf.len(),
        })
    } else {
        Ok(())
    }
}

fn exact(buf: &[u8], n: usize) -> Result<(), WireError> {
    need(buf, n)?;
    if buf.len() > n {
        return Err(WireError::Trailing(buf.len() - n));
    }
    Ok(())
}

// Callers check lengths first; these then cannot fail.
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
fn be32(b: &[u8], at: usize) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}
fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// The server's first 18 bytes: `NBDMAGIC`, `IHAVEOPT`, handshake flags.
pub fn encode_greeting(handshake_flags: u16) -> [u8; 18] {
    let mut b = [0; 18];
    b[0..8].copy_from_slice(&NBD_MAGIC.to_be_bytes());
    b[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    b[16..18].copy_from_slice(&handshake_flags.to_be_bytes());
    b
}

/// Header of a client option (16 bytes); `len` bytes of data follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    /// The `NBD_OPT_*` code.
    pub option: u32,
    /// Length of the option data.
    pub len: u32,
}

impl OptionHeader {
    /// Encoded size.
    pub const LEN: usize = 16;

    /// Decodes exactly 16 bytes.
    pub fn decode(b: &[u8]) -> Result<Self, WireError> {
        exact(b, Self::LEN)?;
        let magic = be64(b, 0);
        if magic != IHAVEOPT {
            return Err(WireError::BadMagic(magic));
        }
        Ok(Self {
            option: be32(b, 8),
            len: be32(b, 12),
        })
    }

    /// Encodes (used by clients and tests).
    pub fn encode(&self) -> [u8; 16] {
        let mut b = [0; 16];
        b[0..8].copy_from_slice(&IHAVEOPT.to_be_bytes());
        b[8..12].copy_from_slice(&self.option.to_be_bytes());
        b[12..16].copy_from_slice(&self.len.to_be_bytes());
        b
    }
}

/// Appends one option reply (20-byte header + `data`) to `out`.
///
/// Panics never; `data` longer than `u32::MAX` cannot occur (callers build
/// small replies).
pub fn encode_option_reply(out: &mut Vec<u8>, option: u32, reply_type: u32, data: &[u8]) {
    out.extend_from_slice(&OPT_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&reply_type.to_be_bytes());
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(data);
}

/// Header of an option reply (20 bytes; decoded by clients and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionReplyHeader {
    /// The option this answers.
    pub option: u32,
    /// The `NBD_REP_*` type.
    pub reply_type: u32,
    /// Length of the reply data that follows.
    pub len: u32,
}

impl OptionReplyHeader {
    /// Encoded size.
    pub const LEN: usize = 20;

    /// Decodes exactly 20 bytes.
    pub fn decode(b: &[u8]) -> Result<Self, WireError> {
        exact(b, Self::LEN)?;
        let magic = be64(b, 0);
        if magic != OPT_REPLY_MAGIC {
            return Err(WireError::BadMagic(magic));
        }
        Ok(Self {
            option: be32(b, 8),
            reply_type: be32(b, 12),
            len: be32(b, 16),
        })
    }
}

/// The reply to `OPT_EXPORT_NAME`: size, flags and (unless `no_zeroes`) 124 zeroes.
pub fn encode_export_name_reply(out: &mut Vec<u8>, size: u64, flags: u16, no_zeroes: bool) {
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    if !no_zeroes {
        out.extend_from_slice(&[0; 124]);
    }
}

/// `NBD_INFO_EXPORT` payload (12 bytes).
pub fn encode_info_export(size: u64, flags: u16) -> [u8; 12] {
    let mut b = [0; 12];
    b[0..2].copy_from_slice(&info::EXPORT.to_be_bytes());
    b[2..10].copy_from_slice(&size.to_be_bytes());
    b[10..12].copy_from_slice(&flags.to_be_bytes());
    b
}

/// `NBD_INFO_BLOCK_SIZE` payload (14 bytes).
pub fn encode_info_block_size(min: u32, preferred: u32, max: u32) -> [u8; 14] {
    let mut b = [0; 14];
    b[0..2].copy_from_slice(&info::BLOCK_SIZE.to_be_bytes());
    b[2..6].copy_from_slice(&min.to_be_bytes());
    b[6..10].copy_from_slice(&preferred.to_be_bytes());
    b[10..14].copy_from_slice(&max.to_be_bytes());
    b
}

/// `NBD_INFO_NAME` / `NBD_INFO_DESCRIPTION` payload: type then the string.
pub fn encode_info_string(info_type: u16, s: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(2 + s.len());
    v.extend_from_slice(&info_type.to_be_bytes());
    v.extend_from_slice(s);
    v
}

/// The data of `OPT_INFO` / `OPT_GO`: an export name and info requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoRequest<'a> {
    /// Export name (raw bytes; empty = default export).
    pub name: &'a [u8],
    /// Requested `NBD_INFO_*` types.
    pub requests: Vec<u16>,
}

impl<'a> InfoRequest<'a> {
    /// Decodes the whole option data (trailing bytes rejected).
    pub fn decode(b: &'a [u8]) -> Result<Self, WireError> {
        need(b, 4)?;
        let name_len = be32(b, 0) as usize;
        let rest = &b[4..];
        if name_len > rest.len().saturating_sub(2) {
            return Err(WireError::BadLength(name_len as u64));
        }
        let name = &rest[..name_len];
        let rest = &rest[name_len..];
        let n = be16(rest, 0) as usize;
        exact(&rest[2..], 2 * n)?;
        let requests = rest[2..].chunks_exact(2).map(|c| be16(c, 0)).collect();
        Ok(Self { name, requests })
    }

    /// Encodes (used by clients and tests).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(6 + self.name.len() + 2 * self.requests.len());
        v.extend_from_slice(&(self.name.len() as u32).to_be_bytes());
        v.extend_from_slice(self.name);
        v.extend_from_slice(&(self.requests.len() as u16).to_be_bytes());
        for r in &self.requests {
            v.extend_from_slice(&r.to_be_bytes());
        }
        v
    }
}

/// The data of `OPT_LIST_META_CONTEXT` / `OPT_SET_META_CONTEXT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaContextRequest<'a> {
    /// Export name.
    pub name: &'a [u8],
    /// Queries such as `base:allocation`.
    pub queries: Vec<&'a [u8]>,
}

impl<'a> MetaContextRequest<'a> {
    /// Decodes the whole option data (trailing bytes rejected).
    pub fn decode(b: &'a [u8]) -> Result<Self, WireError> {
        let (name, mut rest) = take_string(b)?;
        need(rest, 4)?;
        let count = be32(rest, 0);
        rest = &rest[4..];
        let mut queries = Vec::new();
        for _ in 0..count {
            let (q, r) = take_string(rest)?;
            queries.push(q);
            rest = r;
        }
        exact(rest, 0)?;
        Ok(Self { name, queries })
    }

    /// Encodes (used by clients and tests).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(self.name.len() as u32).to_be_bytes());
        v.extend_from_slice(self.name);
        v.extend_from_slice(&(self.queries.len() as u32).to_be_bytes());
        for q in &self.queries {
            v.extend_from_slice(&(q.len() as u32).to_be_bytes());
            v.extend_from_slice(q);
        }
        v
    }
}

/// Splits a 32-bit-length-prefixed string off the front of `b`.
fn take_string(b: &[u8]) -> Result<(&[u8], &[u8]), WireError> {
    need(b, 4)?;
    let len = be32(b, 0) as usize;
    if len > b.len() - 4 {
        return Err(WireError::BadLength(len as u64));
    }
    Ok((&b[4..4 + len], &b[4 + len..]))
}

/// A transmission command type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `NBD_CMD_READ` (0).
    Read,
    /// `NBD_CMD_WRITE` (1).
    Write,
    /// `NBD_CMD_DISC` (2).
    Disc,
    /// `NBD_CMD_FLUSH` (3).
    Flush,
    /// `NBD_CMD_TRIM` (4).
    Trim,
    /// `NBD_CMD_WRITE_ZEROES` (6).
    WriteZeroes,
    /// Anything else (including CACHE and BLOCK_STATUS, which QBD does not serve).
    Unknown(u16),
}

impl From<u16> for Command {
    fn from(v: u16) -> Self {
        match v {
            0 => Command::Read,
            1 => Command::Write,
            2 => Command::Disc,
            3 => Command::Flush,
            4 => Command::Trim,
            6 => Command::WriteZeroes,
            other => Command::Unknown(other),
        }
    }
}

impl From<Command> for u16 {
    fn from(c: Command) -> u16 {
        match c {
            Command::Read => 0,
            Command::Write => 1,
            Command::Disc => 2,
            Command::Flush => 3,
            Command::Trim => 4,
            Command::WriteZeroes => 6,
            Command::Unknown(v) => v,
        }
    }
}

/// A transmission request header (28 bytes); a WRITE's payload follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    /// `NBD_CMD_FLAG_*` bits.
    pub flags: u16,
    /// Command type.
    pub command: Command,
    /// Opaque cookie echoed in the reply.
    pub cookie: u64,
    /// Byte offset.
    pub offset: u64,
    /// Byte length (the payload length for WRITE).
    pub length: u32,
}

impl RequestHeader {
    /// Encoded size.
    pub const LEN: usize = 28;

    /// Decodes exactly 28 bytes.
    pub fn decode(b: &[u8]) -> Result<Self, WireError> {
        exact(b, Self::LEN)?;
        let magic = be32(b, 0);
        if magic != REQUEST_MAGIC {
            return Err(WireError::BadMagic(u64::from(magic)));
        }
        Ok(Self {
            flags: be16(b, 4),
            command: Command::from(be16(b, 6)),
            cookie: be64(b, 8),
            offset: be64(b, 16),
            length: be32(b, 24),
        })
    }

    /// Encodes (used by clients and tests).
    pub fn encode(&self) -> [u8; 28] {
        let mut b = [0; 28];
        b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.to_be_bytes());
        b[6..8].copy_from_slice(&u16::from(self.command).to_be_bytes());
        b[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        b[16..24].copy_from_slice(&self.offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.length.to_be_bytes());
        b
    }
}

/// A simple reply header (16 bytes); a successful READ's data follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimpleReply {
    /// NBD errno, 0 for success.
    pub error: u32,
    /// The request's cookie.
    pub cookie: u64,
}

impl SimpleReply {
    /// Encoded size.
    pub const LEN: usize = 16;

    /// Encodes the header.
    pub fn encode(&self) -> [u8; 16] {
        let mut b = [0; 16];
        b[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
        b[4..8].copy_from_slice(&self.error.to_be_bytes());
        b[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        b
    }

    /// Decodes exactly 16 bytes (used by clients and tests).
    pub fn decode(b: &[u8]) -> Result<Self, WireError> {
        exact(b, Self::LEN)?;
        let magic = be32(b, 0);
        if magic != SIMPLE_REPLY_MAGIC {
            return Err(WireError::BadMagic(u64::from(magic)));
        }
        Ok(Self {
            error: be32(b, 4),
            cookie: be64(b, 8),
        })
    }
}

/// A structured reply chunk header (20 bytes); `length` payload bytes follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    /// `REPLY_FLAG_*` bits.
    pub flags: u16,
    /// `reply_type::*`.
    pub chunk_type: u16,
    /// The request's cookie.
    pub cookie: u64,
    /// Payload length.
    pub length: u32,
}

impl ChunkHeader {
    /// Encoded size.
    pub const LEN: usize = 20;

    /// Encodes the header into the first 20 bytes of `b`.
    pub fn encode_into(&self, b: &mut [u8; 20]) {
        b[0..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.to_be_bytes());
        b[6..8].copy_from_slice(&self.chunk_type.to_be_bytes());
        b[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        b[16..20].copy_from_slice(&self.length.to_be_bytes());
    }

    /// Encodes the header.
    pub fn encode(&self) -> [u8; 20] {
        let mut b = [0; 20];
        self.encode_into(&mut b);
        b
    }

    /// Decodes exactly 20 bytes (used by clients and tests).
    pub fn decode(b: &[u8]) -> Result<Self, WireError> {
        exact(b, Self::LEN)?;
        let magic = be32(b, 0);
        if magic != STRUCTURED_REPLY_MAGIC {
            return Err(WireError::BadMagic(u64::from(magic)));
        }
        Ok(Self {
            flags: be16(b, 4),
            chunk_type: be16(b, 6),
            cookie: be64(b, 8),
            length: be32(b, 16),
        })
    }
}

/// Header (chunk header + offset, 28 bytes) of a final `OFFSET_DATA` chunk
/// carrying `data_len` bytes read at `offset`.
pub fn encode_read_chunk_header(cookie: u64, offset: u64, data_len: u32) -> [u8; 28] {
    let mut b = [0; 28];
    let header = ChunkHeader {
        flags: REPLY_FLAG_DONE,
        chunk_type: reply_type::OFFSET_DATA,
        cookie,
        length: data_len.saturating_add(8),
    };
    let (h, rest) = b.split_at_mut(20);
    if let Ok(h) = <&mut [u8; 20]>::try_from(h) {
        header.encode_into(h);
    }
    rest.copy_from_slice(&offset.to_be_bytes());
    b
}

/// A final `ERROR` chunk (26 bytes) with `error` and no message.
pub fn encode_error_chunk(cookie: u64, error: u32) -> [u8; 26] {
    let mut b = [0; 26];
    let header = ChunkHeader {
        flags: REPLY_FLAG_DONE,
        chunk_type: reply_type::ERROR,
        cookie,
        length: 6,
    };
    b[..20].copy_from_slice(&header.encode());
    b[20..24].copy_from_slice(&error.to_be_bytes());
    // b[24..26]: message length 0.
    b
}

/// A final `NONE` chunk (20 bytes).
pub fn encode_none_chunk(cookie: u64) -> [u8; 20] {
    ChunkHeader {
        flags: REPLY_FLAG_DONE,
        chunk_type: reply_type::NONE,
        cookie,
        length: 0,
    }
    .encode()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_golden() {
        let g = encode_greeting(handshake_flags::FIXED_NEWSTYLE | handshake_flags::NO_ZEROES);
        assert_eq!(&g[..8], b"NBDMAGIC");
        assert_eq!(&g[8..16], b"IHAVEOPT");
        assert_eq!(&g[16..], &[0, 3]);
    }

    const REQ_GOLDEN: [u8; 28] = [
        0x25, 0x60, 0x95, 0x13, // magic
        0x00, 0x01, // flags: FUA
        0x00, 0x01, // type: WRITE
        1, 2, 3, 4, 5, 6, 7, 8, // cookie
        0, 0, 0, 0, 0, 0, 0x10, 0x00, // offset 4096
        0, 0, 0x02, 0x00, // length 512
    ];

    #[test]
    fn request_golden_both_ways() {
        let r = RequestHeader::decode(&REQ_GOLDEN).expect("decodes");
        let want = RequestHeader {
            flags: cmd_flags::FUA,
            command: Command::Write,
            cookie: 0x0102_0304_0506_0708,
            offset: 4096,
            length: 512,
        };
        assert_eq!(r, want);
        assert_eq!(want.encode(), REQ_GOLDEN);
    }

    #[test]
    fn request_roundtrip_and_unknown_command() {
        for cmd in [0u16, 1, 2, 3, 4, 5, 6, 7, 0xffff] {
            let r = RequestHeader {
                flags: 0xabcd,
                command: Command::from(cmd),
                cookie: u64::MAX,
                offset: 7,
                length: 9,
            };
            assert_eq!(RequestHeader::decode(&r.encode()), Ok(r));
            assert_eq!(u16::from(r.command), cmd);
        }
        assert_eq!(Command::from(5), Command::Unknown(5));
    }

    #[test]
    fn request_rejects_truncated_trailing_and_bad_magic() {
        for n in 0..28 {
            assert!(matches!(
                RequestHeader::decode(&REQ_GOLDEN[..n]),
                Err(WireError::Truncated { .. })
            ));
        }
        let mut long = REQ_GOLDEN.to_vec();
        long.push(0);
        assert_eq!(RequestHeader::decode(&long), Err(WireError::Trailing(1)));
        let mut bad = REQ_GOLDEN;
        bad[0] = 0;
        assert_eq!(
            RequestHeader::decode(&bad),
            Err(WireError::BadMagic(0x0060_9513))
        );
    }

    #[test]
    fn simple_reply_golden_and_roundtrip() {
        let r = SimpleReply {
            error: errno::EINVAL,
            cookie: 0x1122_3344_5566_7788,
        };
        let golden = [
            0x67, 0x44, 0x66, 0x98, 0, 0, 0, 22, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
        ];
        assert_eq!(r.encode(), golden);
        assert_eq!(SimpleReply::decode(&golden), Ok(r));
        assert!(SimpleReply::decode(&golden[..15]).is_err());
    }

    #[test]
    fn read_chunk_golden() {
        let b = encode_read_chunk_header(9, 0x200, 4096);
        let golden = [
            0x66, 0x8e, 0x33, 0xef, // magic
            0, 1, // flags: DONE
            0, 1, // type: OFFSET_DATA
            0, 0, 0, 0, 0, 0, 0, 9, // cookie
            0, 0, 0x10, 0x08, // length 4096 + 8
            0, 0, 0, 0, 0, 0, 0x02, 0x00, // offset
        ];
        assert_eq!(b, golden);
        let h = ChunkHeader::decode(&b[..20]).expect("decodes");
        assert_eq!(
            h,
            ChunkHeader {
                flags: 1,
                chunk_type: reply_type::OFFSET_DATA,
                cookie: 9,
                length: 4104
            }
        );
        assert_eq!(h.encode(), b[..20]);
    }

    #[test]
    fn error_and_none_chunks_golden() {
        let e = encode_error_chunk(1, errno::EIO);
        assert_eq!(
            e,
            [
                0x66, 0x8e, 0x33, 0xef, 0, 1, 0x80, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 6, 0, 0, 0,
                5, 0, 0
            ]
        );
        let n = encode_none_chunk(2);
        assert_eq!(
            n,
            [
                0x66, 0x8e, 0x33, 0xef, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0
            ]
        );
        assert!(ChunkHeader::decode(&n[..19]).is_err());
    }

    #[test]
    fn option_header_golden_roundtrip_truncated() {
        let h = OptionHeader {
            option: opt::GO,
            len: 10,
        };
        let b = h.encode();
        assert_eq!(&b[..8], b"IHAVEOPT");
        assert_eq!(&b[8..], &[0, 0, 0, 7, 0, 0, 0, 10]);
        assert_eq!(OptionHeader::decode(&b), Ok(h));
        assert!(matches!(
            OptionHeader::decode(&b[..15]),
            Err(WireError::Truncated { .. })
        ));
        let mut bad = b;
        bad[0] = b'X';
        assert!(matches!(
            OptionHeader::decode(&bad),
            Err(WireError::BadMagic(_))
        ));
    }

    #[test]
    fn option_reply_golden_and_decode() {
        let mut out = Vec::new();
        encode_option_reply(&mut out, opt::GO, rep::ERR_UNSUP, b"x");
        assert_eq!(
            out,
            [
                0, 3, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9, 0, 0, 0, 7, 0x80, 0, 0, 1, 0, 0, 0, 1,
                b'x'
            ]
        );
        let h = OptionReplyHeader::decode(&out[..20]).expect("decodes");
        assert_eq!(
            h,
            OptionReplyHeader {
                option: opt::GO,
                reply_type: rep::ERR_UNSUP,
                len: 1
            }
        );
        assert!(rep::is_error(h.reply_type));
        assert!(!rep::is_error(rep::ACK));
        assert!(OptionReplyHeader::decode(&out[..19]).is_err());
    }

    #[test]
    fn info_payloads_golden() {
        assert_eq!(
            encode_info_export(0x1_0000_0000, 0x0143),
            [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0x01, 0x43]
        );
        assert_eq!(
            encode_info_block_size(1, 4096, MAX_PAYLOAD),
            [0, 3, 0, 0, 0, 1, 0, 0, 0x10, 0, 0x02, 0, 0, 0]
        );
        assert_eq!(
            encode_info_string(info::NAME, b"vol"),
            [0, 1, b'v', b'o', b'l']
        );
    }

    #[test]
    fn export_name_reply_with_and_without_zeroes() {
        let mut a = Vec::new();
        encode_export_name_reply(&mut a, 1024, 1, false);
        assert_eq!(a.len(), 134);
        assert_eq!(&a[..10], &[0, 0, 0, 0, 0, 0, 4, 0, 0, 1]);
        let mut b = Vec::new();
        encode_export_name_reply(&mut b, 1024, 1, true);
        assert_eq!(b, a[..10]);
    }

    #[test]
    fn info_request_golden_roundtrip_truncated() {
        let golden = [0, 0, 0, 2, b'v', b'1', 0, 2, 0, 3, 0, 1];
        let r = InfoRequest::decode(&golden).expect("decodes");
        assert_eq!(
            r,
            InfoRequest {
                name: b"v1",
                requests: vec![info::BLOCK_SIZE, info::NAME]
            }
        );
        assert_eq!(r.encode(), golden);
        for n in 0..golden.len() {
            assert!(InfoRequest::decode(&golden[..n]).is_err(), "prefix {n}");
        }
        let mut long = golden.to_vec();
        long.push(0);
        assert!(InfoRequest::decode(&long).is_err());
        // A name length pointing past the end must not panic.
        assert!(InfoRequest::decode(&[0xff, 0xff, 0xff, 0xff, 0, 0]).is_err());
    }

    #[test]
    fn meta_context_request_roundtrip_and_truncated() {
        let r = MetaContextRequest {
            name: b"",
            queries: vec![b"base:allocation".as_slice()],
        };
        let b = r.encode();
        assert_eq!(MetaContextRequest::decode(&b), Ok(r));
        for n in 0..b.len() {
            assert!(MetaContextRequest::decode(&b[..n]).is_err(), "prefix {n}");
        }
        assert!(MetaContextRequest::decode(&[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
