//! The check after a fault: with no request in flight, every block of the
//! volume is read through a fresh connection and compared with the model;
//! then each block is settled to what it showed (see `model`).

use super::client::Client;
use super::cluster::VOLUME;
use super::pattern::{BLOCK, Seen, decode};
use super::workload::{IO_TIMEOUT, Shared};

/// Blocks per read of the pass (1 MiB).
const STEP: u64 = 256;

/// Reads the whole volume through `socket`; wrong blocks are findings,
/// an error reading is returned.
pub fn full_pass(shared: &Shared, socket: &std::path::Path) -> Result<(), String> {
    let mut c = Client::connect(socket, VOLUME, IO_TIMEOUT)
        .map_err(|e| format!("check pass: cannot connect: {e}"))?;
    let blocks = shared.model().len();
    let mut wrong = 0u64;
    let mut first_wrong = None;
    let mut at = 0;
    while at < blocks {
        let n = STEP.min(blocks - at);
        let t = shared.model().begin_read();
        let data = c
            .read(at * BLOCK as u64, (n as usize * BLOCK) as u32)
            .map_err(|e| format!("check pass: reading blocks {at}..{}: {e}", at + n))?;
        let mut model = shared.model();
        for (i, buf) in data.chunks(BLOCK).enumerate() {
            let block = at + i as u64;
            let seen = match decode(buf, block) {
                Seen::Value(v) => Some(v),
                Seen::Garbage => None,
            };
            match model.check(block, t, seen) {
                Ok(()) => {
                    if let Some(v) = seen {
                        model.settle(block, v);
                    }
                }
                Err(v) => {
                    wrong += 1;
                    first_wrong.get_or_insert(v.to_string());
                }
            }
        }
        model.end_read(t);
        at += n;
    }
    if let Some(f) = first_wrong {
        shared.finding(format!("check pass: {wrong} wrong block(s); first: {f}"));
    }
    Ok(())
}
