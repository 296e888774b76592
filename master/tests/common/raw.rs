//! A hand-rolled NBD client over `TcpStream`, for the robustness tests: it can stop anywhere,
//! send anything, and reads only simple replies (it never negotiates structured replies).
//!
//! Constants are from the protocol specification (`shared/reference/nbd-protocol.md`).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
pub const REP_ERR_UNSUP: u32 = (1 << 31) + 1;
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const EPERM: u32 = 1;
pub const EINVAL: u32 = 22;
pub const ENOSPC: u32 = 28;
pub const EOVERFLOW: u32 = 75;
/// Transmission flag: the export is read-only.
pub const TFLAG_READ_ONLY: u16 = 1 << 1;

/// How long any single read from the server may block.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// Opens a TCP connection with the I/O timeout set.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect to server");
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .expect("read timeout");
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .expect("write timeout");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// Reads the server's greeting (NBDMAGIC, IHAVEOPT, handshake flags); returns the flags.
pub fn read_greeting(stream: &mut TcpStream) -> u16 {
    let mut buf = [0u8; 18];
    stream.read_exact(&mut buf).expect("server greeting");
    assert_eq!(
        u64::from_be_bytes(buf[0..8].try_into().expect("8")),
        NBDMAGIC,
        "NBDMAGIC"
    );
    assert_eq!(
        u64::from_be_bytes(buf[8..16].try_into().expect("8")),
        IHAVEOPT,
        "IHAVEOPT"
    );
    let flags = u16::from_be_bytes([buf[16], buf[17]]);
    assert!(
        flags & FLAG_FIXED_NEWSTYLE != 0,
        "server must offer fixed newstyle"
    );
    flags
}

/// Reads until the server closes the connection, which it must do within the I/O timeout.
/// Returns the bytes it sent first. A reset counts as closing.
pub fn expect_closed(stream: &mut TcpStream, what: &str) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return got,
            Err(e) => {
                panic!("{what}: server neither answered nor closed within {IO_TIMEOUT:?}: {e}")
            }
        }
    }
}

/// Reads one option reply: (option, reply type, data).
pub fn read_option_reply(stream: &mut TcpStream) -> (u32, u32, Vec<u8>) {
    let mut buf = [0u8; 20];
    stream.read_exact(&mut buf).expect("option reply header");
    let magic = u64::from_be_bytes(buf[0..8].try_into().expect("8"));
    assert_eq!(magic, OPTION_REPLY_MAGIC, "option reply magic");
    let option = u32::from_be_bytes(buf[8..12].try_into().expect("4"));
    let reply_type = u32::from_be_bytes(buf[12..16].try_into().expect("4"));
    let len = u32::from_be_bytes(buf[16..20].try_into().expect("4"));
    let mut data = vec![0u8; len as usize];
    stream.read_exact(&mut data).expect("option reply data");
    (option, reply_type, data)
}

/// A client in the transmission phase, reached with NBD_OPT_EXPORT_NAME.
#[derive(Debug)]
pub struct Client {
    pub stream: TcpStream,
    pub size: u64,
    pub transmission_flags: u16,
    next_handle: u64,
}

/// What a simple reply said.
#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    pub error: u32,
    pub handle: u64,
}

impl Client {
    /// Connects and completes the fixed newstyle handshake for `export`.
    pub fn connect(addr: SocketAddr, export: &str) -> Client {
        Client::connect_after(addr, export, |_| {})
    }

    /// Like [`Client::connect`], but runs `haggle` on the stream after the client flags are sent
    /// and before NBD_OPT_EXPORT_NAME, to send other options first.
    pub fn connect_after(
        addr: SocketAddr,
        export: &str,
        haggle: impl FnOnce(&mut TcpStream),
    ) -> Client {
        Client::try_connect_after(addr, export, haggle).expect("EXPORT_NAME reply (size and flags)")
    }

    /// Like [`Client::connect`], but a server that closes the connection instead of answering
    /// NBD_OPT_EXPORT_NAME (an unknown export, a refused client) is an error.
    pub fn try_connect(addr: SocketAddr, export: &str) -> io::Result<Client> {
        Client::try_connect_after(addr, export, |_| {})
    }

    fn try_connect_after(
        addr: SocketAddr,
        export: &str,
        haggle: impl FnOnce(&mut TcpStream),
    ) -> io::Result<Client> {
        let mut stream = connect(addr);
        let server_flags = read_greeting(&mut stream);
        let no_zeroes = server_flags & FLAG_NO_ZEROES != 0;
        let client_flags =
            u32::from(FLAG_FIXED_NEWSTYLE | if no_zeroes { FLAG_NO_ZEROES } else { 0 });
        stream
            .write_all(&client_flags.to_be_bytes())
            .expect("send client flags");
        haggle(&mut stream);
        let mut msg = option_header(OPT_EXPORT_NAME, export.len());
        msg.extend_from_slice(export.as_bytes());
        stream.write_all(&msg).expect("send EXPORT_NAME");
        let mut reply = vec![0u8; if no_zeroes { 10 } else { 134 }];
        stream.read_exact(&mut reply)?;
        let size = u64::from_be_bytes(reply[0..8].try_into().expect("8"));
        let transmission_flags = u16::from_be_bytes([reply[8], reply[9]]);
        Ok(Client {
            stream,
            size,
            transmission_flags,
            next_handle: 1,
        })
    }

    /// Sends one request header; returns its handle.
    pub fn send_request(&mut self, cmd: u16, offset: u64, len: u32) -> u64 {
        self.send_request_with(cmd, 0, offset, len)
    }

    /// Sends a request header with command flags `flags`; returns its handle.
    pub fn send_request_with(&mut self, cmd: u16, flags: u16, offset: u64, len: u32) -> u64 {
        let handle = self.next_handle;
        self.next_handle += 1;
        let mut header = request_header(cmd, handle, offset, len);
        header[4..6].copy_from_slice(&flags.to_be_bytes());
        self.stream.write_all(&header).expect("send request");
        handle
    }

    /// Reads one simple reply header.
    pub fn read_reply(&mut self) -> io::Result<Reply> {
        let mut buf = [0u8; 16];
        self.stream.read_exact(&mut buf)?;
        let magic = u32::from_be_bytes(buf[0..4].try_into().expect("4"));
        assert_eq!(
            magic, SIMPLE_REPLY_MAGIC,
            "simple reply magic (no structured replies negotiated)"
        );
        let error = u32::from_be_bytes(buf[4..8].try_into().expect("4"));
        let handle = u64::from_be_bytes(buf[8..16].try_into().expect("8"));
        Ok(Reply { error, handle })
    }

    /// Reads `len` bytes at `offset`: Ok(data) or Err(NBD errno).
    pub fn read(&mut self, offset: u64, len: u32) -> Result<Vec<u8>, u32> {
        let handle = self.send_request(CMD_READ, offset, len);
        let reply = self.read_reply().expect("read reply");
        assert_eq!(reply.handle, handle, "reply handle");
        if reply.error != 0 {
            return Err(reply.error);
        }
        let mut data = vec![0u8; len as usize];
        self.stream.read_exact(&mut data).expect("read payload");
        Ok(data)
    }

    /// Writes `data` at `offset`: Ok or Err(NBD errno).
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), u32> {
        self.write_with(0, offset, data)
    }

    /// Writes `data` at `offset` with command flags `flags`: Ok or Err(NBD errno).
    fn write_with(&mut self, flags: u16, offset: u64, data: &[u8]) -> Result<(), u32> {
        let len = u32::try_from(data.len()).expect("payload fits u32");
        let handle = self.send_request_with(CMD_WRITE, flags, offset, len);
        self.stream.write_all(data).expect("send payload");
        let reply = self.read_reply().expect("write reply");
        assert_eq!(reply.handle, handle, "reply handle");
        if reply.error != 0 {
            Err(reply.error)
        } else {
            Ok(())
        }
    }

    /// NBD_CMD_FLUSH: Ok or Err(NBD errno).
    pub fn flush(&mut self) -> Result<(), u32> {
        let handle = self.send_request(CMD_FLUSH, 0, 0);
        let reply = self.read_reply().expect("flush reply");
        assert_eq!(reply.handle, handle, "reply handle");
        if reply.error != 0 {
            Err(reply.error)
        } else {
            Ok(())
        }
    }

    /// Sends NBD_CMD_DISC, which has no reply, and closes.
    pub fn disconnect(mut self) {
        self.send_request(CMD_DISC, 0, 0);
    }
}

/// An option header: IHAVEOPT, option, data length.
pub fn option_header(option: u32, len: usize) -> Vec<u8> {
    let mut buf = IHAVEOPT.to_be_bytes().to_vec();
    buf.extend_from_slice(&option.to_be_bytes());
    buf.extend_from_slice(&u32::try_from(len).expect("option length").to_be_bytes());
    buf
}

/// A 28-byte request header with no command flags.
pub fn request_header(cmd: u16, handle: u64, offset: u64, len: u32) -> [u8; 28] {
    let mut buf = [0u8; 28];
    buf[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    buf[6..8].copy_from_slice(&cmd.to_be_bytes());
    buf[8..16].copy_from_slice(&handle.to_be_bytes());
    buf[16..24].copy_from_slice(&offset.to_be_bytes());
    buf[24..28].copy_from_slice(&len.to_be_bytes());
    buf
}

/// NBD_CMD_FLAG_FUA: the write is durable before its reply.
pub const CMD_FLAG_FUA: u16 = 1 << 0;

impl Client {
    /// Writes `data` at `offset` with FUA: Ok or Err(NBD errno).
    pub fn write_fua(&mut self, offset: u64, data: &[u8]) -> Result<(), u32> {
        self.write_with(CMD_FLAG_FUA, offset, data)
    }
}
