//! Progress of a deep scan on stderr: a bar with rate and ETA redrawn in
//! place when stderr is a terminal, else one plain line every
//! [`PLAIN_EVERY`] (nothing at all for a scan shorter than that, so test
//! output stays clean).

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Interval of plain progress lines.
pub const PLAIN_EVERY: Duration = Duration::from_secs(10);
/// Redraw interval of the bar.
const BAR_EVERY: Duration = Duration::from_millis(200);

/// Shared counters of a scan.
#[derive(Debug)]
pub struct Progress {
    total: u64,
    part_bytes: u64,
    done: AtomicU64,
    start: Instant,
    tty: bool,
    drawn: Mutex<bool>,
}

impl Progress {
    /// A scan of `total` bytes, `part_bytes` per part.
    pub fn new(total: u64, part_bytes: u64) -> Self {
        Progress {
            total,
            part_bytes,
            done: AtomicU64::new(0),
            start: Instant::now(),
            tty: std::io::stderr().is_terminal(),
            drawn: Mutex::new(false),
        }
    }

    /// Counts scanned parts.
    pub fn add_parts(&self, n: u64) {
        self.done.fetch_add(n * self.part_bytes, Ordering::Relaxed);
    }

    /// Prints a message on its own line (keeps the bar below it).
    pub fn note(&self, msg: &str) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "{}qbd verify: {msg}",
            if self.tty { "\r\x1b[K" } else { "" }
        );
    }

    /// Starts the task that draws the bar or prints the lines.
    pub fn spawn_reporter(self: &std::sync::Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = std::sync::Arc::clone(self);
        tokio::spawn(async move {
            let every = if me.tty { BAR_EVERY } else { PLAIN_EVERY };
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tick.tick().await;
                me.draw();
            }
        })
    }

    /// Draws the final state (tty only) and ends the line.
    pub fn finish(&self) {
        let drawn = *self
            .drawn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.tty && drawn {
            self.draw();
            let _ = writeln!(std::io::stderr());
        }
    }

    /// Bytes per second so far.
    pub fn rate(&self) -> f64 {
        let secs = self.start.elapsed().as_secs_f64().max(1e-6);
        self.done.load(Ordering::Relaxed) as f64 / secs
    }

    fn draw(&self) {
        let done = self.done.load(Ordering::Relaxed);
        let line = status_line(done, self.total, self.rate());
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[K{line}");
        } else {
            let _ = writeln!(err, "qbd verify: {line}");
        }
        let _ = err.flush();
        *self
            .drawn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
    }
}

/// `[#####.....]  45.0%  1.2 GiB / 2.7 GiB  310 MiB/s  ETA 0:05`.
pub fn status_line(done: u64, total: u64, rate: f64) -> String {
    const WIDTH: usize = 30;
    let frac = if total == 0 {
        1.0
    } else {
        done as f64 / total as f64
    };
    let filled = ((frac * WIDTH as f64) as usize).min(WIDTH);
    let eta = if rate > 0.0 {
        let s = (total.saturating_sub(done)) as f64 / rate;
        format!("{}:{:02}", s as u64 / 60, s as u64 % 60)
    } else {
        "?".into()
    };
    format!(
        "deep scan [{}{}] {:5.1}%  {} / {}  {}/s  ETA {eta}",
        "#".repeat(filled),
        ".".repeat(WIDTH - filled),
        frac * 100.0,
        human(done as f64),
        human(total as f64),
        human(rate)
    )
}

/// Bytes with a binary unit.
pub fn human(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line_shows_fraction_rate_and_eta() {
        let l = status_line(512 << 20, 1 << 30, f64::from(256u32 << 20));
        assert!(l.contains(" 50.0%"), "{l}");
        assert!(l.contains("512.0 MiB / 1.0 GiB"), "{l}");
        assert!(l.contains("256.0 MiB/s"), "{l}");
        assert!(l.contains("ETA 0:02"), "{l}");
    }
}
