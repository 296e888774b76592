//! Shared helpers of the NBD integration tests: a server on loopback, a tiny
//! hand-rolled client, and a device whose reads can be held back.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use qbd_master::device::{BlockDevice, DeviceResult};
use qbd_master::nbd::memdev::MemDevice;
use qbd_master::nbd::wire::{
    ChunkHeader, Command, InfoRequest, OptionHeader, OptionReplyHeader, RequestHeader, SimpleReply,
    client_flags, opt, rep,
};
use qbd_master::nbd::{ExportConfig, Listener, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

pub const EXPORT: &str = "vol";
pub const SIZE: usize = 1 << 20;

/// A server running on a loopback port.
pub struct Running {
    pub addr: SocketAddr,
    pub stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<io::Result<()>>,
}

impl Running {
    /// Triggers shutdown and waits (bounded) for `run` to return.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let r = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        r.expect("run() returned in time")
            .expect("join")
            .expect("run ok");
    }
}

pub async fn serve<D: BlockDevice>(device: Arc<D>) -> Running {
    serve_with(device, ExportConfig::new(EXPORT)).await
}

pub async fn serve_with<D: BlockDevice>(device: Arc<D>, cfg: ExportConfig) -> Running {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (stop, rx) = oneshot::channel::<()>();
    let server = Server::new(device, cfg);
    let task = tokio::spawn(server.run(vec![Listener::Tcp(l)], async move {
        let _ = rx.await;
    }));
    Running {
        addr,
        stop: Some(stop),
        task,
    }
}

/// A minimal NBD client speaking raw bytes.
pub struct Client {
    pub s: TcpStream,
}

/// Result of an option: reply headers and data, up to and including the final one.
pub type OptReplies = Vec<(u32, Vec<u8>)>;

impl Client {
    /// Connects and consumes the greeting; sends `flags` as client flags.
    pub async fn connect_with_flags(addr: SocketAddr, flags: u32) -> Client {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut g = [0; 18];
        s.read_exact(&mut g).await.unwrap();
        assert_eq!(&g[..16], b"NBDMAGICIHAVEOPT");
        assert_eq!(&g[16..], &[0, 3]);
        s.write_all(&flags.to_be_bytes()).await.unwrap();
        Client { s }
    }

    pub async fn connect(addr: SocketAddr) -> Client {
        Self::connect_with_flags(addr, client_flags::FIXED_NEWSTYLE | client_flags::NO_ZEROES).await
    }

    pub async fn send_option(&mut self, option: u32, data: &[u8]) {
        let h = OptionHeader {
            option,
            len: data.len() as u32,
        };
        self.s.write_all(&h.encode()).await.unwrap();
        self.s.write_all(data).await.unwrap();
    }

    /// Reads option replies until a final one (anything but SERVER / INFO / META_CONTEXT).
    pub async fn option_replies(&mut self, option: u32) -> OptReplies {
        let mut v = Vec::new();
        loop {
            let mut h = [0; 20];
            self.s.read_exact(&mut h).await.unwrap();
            let h = OptionReplyHeader::decode(&h).unwrap();
            assert_eq!(h.option, option);
            let mut d = vec![0; h.len as usize];
            self.s.read_exact(&mut d).await.unwrap();
            let done = !matches!(h.reply_type, rep::SERVER | rep::INFO | rep::META_CONTEXT);
            v.push((h.reply_type, d));
            if done {
                return v;
            }
        }
    }

    pub async fn option(&mut self, option: u32, data: &[u8]) -> OptReplies {
        self.send_option(option, data).await;
        self.option_replies(option).await
    }

    /// INFO or GO for `name`; returns the replies.
    pub async fn info_or_go(&mut self, option: u32, name: &str) -> OptReplies {
        let d = InfoRequest {
            name: name.as_bytes(),
            requests: vec![],
        }
        .encode();
        self.option(option, &d).await
    }

    /// Full handshake with GO; returns (size, transmission flags).
    pub async fn go(addr: SocketAddr, structured: bool) -> (Client, u64, u16) {
        let mut c = Client::connect(addr).await;
        if structured {
            assert_eq!(
                c.option(opt::STRUCTURED_REPLY, &[]).await,
                vec![(rep::ACK, vec![])]
            );
        }
        let r = c.info_or_go(opt::GO, EXPORT).await;
        assert_eq!(r.last().unwrap().0, rep::ACK);
        let (size, flags) = export_info(&r);
        (c, size, flags)
    }

    pub async fn request(
        &mut self,
        command: Command,
        flags: u16,
        cookie: u64,
        offset: u64,
        length: u32,
    ) {
        let h = RequestHeader {
            flags,
            command,
            cookie,
            offset,
            length,
        };
        self.s.write_all(&h.encode()).await.unwrap();
    }

    pub async fn write(&mut self, cookie: u64, offset: u64, data: &[u8]) {
        self.request(Command::Write, 0, cookie, offset, data.len() as u32)
            .await;
        self.s.write_all(data).await.unwrap();
    }

    /// Reads a simple reply; reads `data_len` bytes of data if error == 0.
    pub async fn simple_reply(&mut self, data_len: usize) -> (u64, u32, Vec<u8>) {
        let mut h = [0; 16];
        self.s.read_exact(&mut h).await.unwrap();
        let r = SimpleReply::decode(&h).unwrap();
        let mut d = vec![0; if r.error == 0 { data_len } else { 0 }];
        self.s.read_exact(&mut d).await.unwrap();
        (r.cookie, r.error, d)
    }

    /// Reads one structured chunk: (header, payload).
    pub async fn chunk(&mut self) -> (ChunkHeader, Vec<u8>) {
        let mut h = [0; 20];
        self.s.read_exact(&mut h).await.unwrap();
        let h = ChunkHeader::decode(&h).unwrap();
        let mut d = vec![0; h.length as usize];
        self.s.read_exact(&mut d).await.unwrap();
        (h, d)
    }

    /// Whether the server closed the connection (EOF or reset) within 5 s.
    pub async fn closed_by_server(&mut self) -> bool {
        let mut b = [0; 1];
        let r = tokio::time::timeout(Duration::from_secs(5), self.s.read(&mut b)).await;
        matches!(r, Ok(Ok(0)) | Ok(Err(_)))
    }
}

/// Size and flags from the INFO_EXPORT reply.
pub fn export_info(r: &OptReplies) -> (u64, u16) {
    let (_, d) = r
        .iter()
        .find(|(t, d)| *t == rep::INFO && d[..2] == [0, 0])
        .unwrap();
    assert_eq!(d.len(), 12);
    (
        u64::from_be_bytes(d[2..10].try_into().unwrap()),
        u16::from_be_bytes([d[10], d[11]]),
    )
}

pub fn memdev() -> Arc<MemDevice> {
    Arc::new(MemDevice::new(SIZE))
}

/// A MemDevice whose reads at registered offsets wait until released.
pub struct GatedDevice {
    pub inner: MemDevice,
    gates: Mutex<HashMap<u64, Arc<Notify>>>,
    /// Notified each time a read enters a gate.
    pub entered: Notify,
}

impl GatedDevice {
    pub fn new() -> Self {
        Self {
            inner: MemDevice::new(SIZE),
            gates: Mutex::new(HashMap::new()),
            entered: Notify::new(),
        }
    }

    /// Reads at `offset` block until [`release`](Self::release).
    pub fn gate(&self, offset: u64) -> Arc<Notify> {
        let n = Arc::new(Notify::new());
        self.gates.lock().unwrap().insert(offset, Arc::clone(&n));
        n
    }
}

impl BlockDevice for GatedDevice {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn preferred_block_size(&self) -> u32 {
        self.inner.preferred_block_size()
    }
    fn read_only(&self) -> bool {
        false
    }
    async fn read(&self, offset: u64, len: u32) -> DeviceResult<Vec<u8>> {
        let gate = self.gates.lock().unwrap().get(&offset).cloned();
        if let Some(g) = gate {
            self.entered.notify_one();
            g.notified().await;
        }
        self.inner.read(offset, len).await
    }
    async fn write(&self, offset: u64, data: Vec<u8>, fua: bool) -> DeviceResult<()> {
        self.inner.write(offset, data, fua).await
    }
    async fn flush(&self) -> DeviceResult<()> {
        self.inner.flush().await
    }
    async fn trim(&self, offset: u64, len: u64, fua: bool) -> DeviceResult<()> {
        self.inner.trim(offset, len, fua).await
    }
    async fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        no_hole: bool,
        fua: bool,
    ) -> DeviceResult<()> {
        self.inner.write_zeroes(offset, len, no_hole, fua).await
    }
}
