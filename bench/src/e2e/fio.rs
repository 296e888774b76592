//! fio's nbd engine: the workloads, one bounded run, and its JSON.
//!
//! Every run is one job on one NBD connection (`--ioengine=nbd`), time
//! based, over the whole export, with total-latency percentiles
//! (`--lat_percentiles=1`: submit to completion, as the transport suite
//! measures), output as JSON to a file. A run is killed when it overstays
//! its bound or when the bench is interrupted.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use super::targets::Target;
use crate::report::{PERCENTILES, RoundResult};

/// One fio workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    /// fio's `rw`.
    pub rw: &'static str,
    /// Block size, bytes.
    pub bs: u64,
    /// Queue depth (`iodepth`).
    pub qd: u32,
}

/// The issue's six: 4 KiB random read and write at QD1 and QD32, 1 MiB
/// sequential read and write (QD8).
pub const WORKLOADS: [Workload; 6] = [
    Workload {
        rw: "randread",
        bs: 4096,
        qd: 1,
    },
    Workload {
        rw: "randread",
        bs: 4096,
        qd: 32,
    },
    Workload {
        rw: "randwrite",
        bs: 4096,
        qd: 1,
    },
    Workload {
        rw: "randwrite",
        bs: 4096,
        qd: 32,
    },
    Workload {
        rw: "read",
        bs: 1 << 20,
        qd: 8,
    },
    Workload {
        rw: "write",
        bs: 1 << 20,
        qd: 8,
    },
];

impl Workload {
    /// `randread 4k qd1`, `read 1m qd8`, ...
    pub fn label(&self) -> String {
        let size = if self.bs >= 1 << 20 {
            format!("{}m", self.bs >> 20)
        } else {
            format!("{}k", self.bs >> 10)
        };
        format!("{} {size} qd{}", self.rw, self.qd)
    }

    /// The label as one word, for `--workloads`: `randread-4k-qd1`.
    pub fn name(&self) -> String {
        self.label().replace(' ', "-")
    }

    /// Whether it reads (else writes).
    fn reads(&self) -> bool {
        self.rw.contains("read")
    }
}

/// Time of one run: measured and ramp.
#[derive(Debug, Clone, Copy)]
pub struct RunTime {
    /// Measured.
    pub runtime: Duration,
    /// Ramp before measuring.
    pub ramp: Duration,
}

/// fio running `w` against `target` for `time`, JSON to `json`.
pub fn command(
    fio: &Path,
    target: &Target,
    w: Workload,
    time: RunTime,
    size: u64,
    json: &Path,
) -> Command {
    let mut cmd = match &target.ns {
        Some(ns) => ns.command(fio),
        None => Command::new(fio),
    };
    // --thread: the job runs in fio's own process, so killing fio stops it.
    cmd.args(["--name=e2e", "--ioengine=nbd", "--thread"])
        .arg(format!("--uri={}", target.uri))
        .arg(format!("--rw={}", w.rw))
        .arg(format!("--bs={}", w.bs))
        .arg(format!("--iodepth={}", w.qd))
        .arg(format!("--size={size}"))
        .args(["--time_based", "--lat_percentiles=1", "--randrepeat=0"])
        .arg(format!("--runtime={}ms", time.runtime.as_millis()))
        .arg(format!("--ramp_time={}ms", time.ramp.as_millis()))
        .args(["--output-format=json"])
        .arg(format!("--output={}", json.display()));
    cmd
}

/// fio writing all of `target` once (1 MiB sequential, QD8), so reads hit data.
pub fn fill_command(fio: &Path, target: &Target, size: u64, json: &Path) -> Command {
    let mut cmd = match &target.ns {
        Some(ns) => ns.command(fio),
        None => Command::new(fio),
    };
    cmd.args([
        "--name=fill",
        "--ioengine=nbd",
        "--thread",
        "--rw=write",
        "--bs=1M",
    ])
    .arg("--iodepth=8")
    .arg(format!("--uri={}", target.uri))
    .arg(format!("--size={size}"))
    .args(["--output-format=json"])
    .arg(format!("--output={}", json.display()));
    cmd
}

/// Runs `cmd` to its end within `bound`; kills it when the bound passes
/// or the bench is interrupted. `Err` names the failure with fio's stderr.
pub fn run(mut cmd: Command, bound: Duration) -> Result<(), String> {
    crate::interrupt::check()?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start fio: {e}"))?;
    let (tx, rx) = mpsc::channel::<Option<String>>();
    if let Some(mut stderr) = child.stderr.take() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
            let _ = tx.send(Some(text));
        });
    }
    let _sub = crate::interrupt::subscribe(move || {
        let _ = tx.send(None);
    });
    // stderr reaches EOF when fio exits (or closes it).
    let outcome = rx.recv_timeout(bound);
    let stderr = match outcome {
        Ok(Some(text)) => text,
        Ok(None) | Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            crate::interrupt::check()?;
            return Err(format!(
                "fio did not finish within {} s: killed",
                bound.as_secs()
            ));
        }
    };
    let status = child.wait().map_err(|e| format!("waiting for fio: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("fio failed ({status}): {}", stderr.trim()))
    }
}

/// The round's figures from fio's JSON output for workload `w`.
pub fn parse(text: &str, w: Workload) -> Result<RoundResult, String> {
    // The nbd engine prints "fio: connected to NBD server" into the output
    // file before the JSON document.
    let start = text.find("\n{").map_or(0, |i| i + 1);
    let start = if text.starts_with('{') { 0 } else { start };
    let v: Value = serde_json::from_str(&text[start..]).map_err(|e| format!("fio JSON: {e}"))?;
    let job = &v["jobs"][0];
    if job.is_null() {
        return Err("fio JSON has no job".into());
    }
    if job["error"].as_i64().unwrap_or(0) != 0 {
        return Err(format!("fio job error {}", job["error"]));
    }
    let side = &job[if w.reads() { "read" } else { "write" }];
    let iops = side["iops"].as_f64().ok_or("fio JSON: no iops")?;
    let lat = if side["lat_ns"]["percentile"].is_object() {
        &side["lat_ns"]
    } else {
        &side["clat_ns"]
    };
    let pct = |p: f64| -> Result<f64, String> {
        lat["percentile"][format!("{p:.6}")]
            .as_f64()
            .map(|ns| ns / 1000.0)
            .ok_or_else(|| format!("fio JSON: no {p} percentile"))
    };
    let mut lat_us = [f64::NAN; PERCENTILES.len()];
    for (slot, &p) in lat_us.iter_mut().zip(&PERCENTILES) {
        *slot = pct(p)?;
    }
    Ok(RoundResult {
        median_us: pct(50.0)?,
        p99_us: pct(99.0)?,
        iops,
        samples: lat["N"].as_u64().unwrap_or(0),
        lat_us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> String {
        let pcts: Vec<String> = PERCENTILES
            .iter()
            .map(|p| format!("\"{p:.6}\": {}", (p * 1000.0) as u64))
            .collect();
        format!(
            r#"{{"jobs": [{{"error": 0,
                "read": {{"iops": 12345.5, "lat_ns": {{"N": 99, "percentile": {{{}}}}}}},
                "write": {{"iops": 0.0, "lat_ns": {{"N": 0}}, "clat_ns": {{"N": 0}}}}}}]}}"#,
            pcts.join(", ")
        )
    }

    #[test]
    fn fio_json_gives_iops_and_latency_percentiles() {
        let r = parse(&sample(), WORKLOADS[0]).expect("parse");
        assert_eq!(r.iops, 12345.5);
        assert_eq!((r.median_us, r.p99_us, r.samples), (50.0, 99.0, 99));
        assert_eq!(r.lat_us[0], 1.0);
        // The write side has no percentiles: an error, not zeros.
        assert!(parse(&sample(), WORKLOADS[2]).is_err());
        let noisy = format!("fio: connected to NBD server\n{}", sample());
        assert_eq!(parse(&noisy, WORKLOADS[0]).expect("parse").iops, 12345.5);
        assert!(parse("{}", WORKLOADS[0]).is_err());
        assert!(parse(r#"{"jobs": [{"error": 5}]}"#, WORKLOADS[0]).is_err());
    }

    #[test]
    fn workloads_have_readable_labels() {
        assert_eq!(WORKLOADS[1].label(), "randread 4k qd32");
        assert_eq!(WORKLOADS[5].label(), "write 1m qd8");
        assert_eq!(WORKLOADS[0].name(), "randread-4k-qd1");
    }
}
