//! Manual tool, not a test: serves an in-memory export over TCP so real
//! clients (nbdinfo, qemu-io, fio) can be pointed at the bare NBD layer,
//! without any volume underneath. Run with
//!
//! ```text
//! QBD_NBD_PORT=10809 QBD_NBD_SECS=60 QBD_NBD_SIZE=1073741824 \
//!   cargo test --release -p qbd-master --test nbd_memserve -- --ignored --nocapture
//! ```
//!
//! then e.g. `nbdinfo nbd://127.0.0.1:10809/mem`.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use qbd_master::nbd::memdev::MemDevice;
use qbd_master::nbd::{ExportConfig, Listener, Server};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
#[ignore = "manual: serves an in-memory export for real clients"]
fn serve_memdev() {
    let workers = env("QBD_NBD_WORKERS", 2) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let port = env("QBD_NBD_PORT", 10809);
        let secs = env("QBD_NBD_SECS", 60);
        let size = env("QBD_NBD_SIZE", 64 << 20) as usize;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port as u16))
            .await
            .unwrap();
        let mut cfg = ExportConfig::new("mem");
        cfg.description = Some("in-memory test export".into());
        let server = Server::new(Arc::new(MemDevice::new(size)), cfg);
        eprintln!("serving {size} bytes on 127.0.0.1:{port} for {secs} s");
        server
            .run(
                vec![Listener::Tcp(listener)],
                tokio::time::sleep(Duration::from_secs(secs)),
            )
            .await
            .unwrap();
    });
}
