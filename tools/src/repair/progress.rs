//! Progress on stderr: a redrawn bar with rate and ETA on a terminal, a
//! plain line every 2 seconds otherwise (logs, pipes, tests).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use qbd_master::volume::repair::Progress;

const TTY_EVERY: Duration = Duration::from_millis(100);
const LINE_EVERY: Duration = Duration::from_secs(2);
const BAR: usize = 30;

/// The progress display.
#[derive(Debug)]
pub struct View {
    tty: bool,
    last: Option<Instant>,
    drawn: bool,
}

impl Default for View {
    fn default() -> Self {
        Self::new()
    }
}

impl View {
    /// A display for this process's stderr.
    pub fn new() -> Self {
        View {
            tty: std::io::stderr().is_terminal(),
            last: None,
            drawn: false,
        }
    }

    /// Shows `p` if it is time to.
    pub fn show(&mut self, p: &Progress) {
        let every = if self.tty { TTY_EVERY } else { LINE_EVERY };
        let finished = p.done == p.total;
        if self.last.is_some_and(|t| t.elapsed() < every) && !finished {
            return;
        }
        self.last = Some(Instant::now());
        let mut err = std::io::stderr().lock();
        let _ = if self.tty {
            self.drawn = true;
            let end = if finished { "\n" } else { "" };
            write!(err, "\r{}{end}", bar_line(p))
        } else {
            writeln!(err, "qbd repair: {}", plain_line(p))
        };
        let _ = err.flush();
    }
}

/// `[#####-----]  45%  123/456 chunks  85.3 MB/s  ETA 0:12`
pub fn bar_line(p: &Progress) -> String {
    let frac = fraction(p);
    let filled = (frac * BAR as f64).round() as usize;
    format!(
        "[{}{}] {:3.0}%  {}/{} chunks  {}  ETA {}",
        "#".repeat(filled),
        "-".repeat(BAR - filled.min(BAR)),
        frac * 100.0,
        p.done,
        p.total,
        rate(p),
        eta(p)
    )
}

/// `123/456 chunks (45%), 85.3 MB/s, ETA 0:12`
pub fn plain_line(p: &Progress) -> String {
    format!(
        "{}/{} chunks ({:.0}%), {}, ETA {}",
        p.done,
        p.total,
        fraction(p) * 100.0,
        rate(p),
        eta(p)
    )
}

fn fraction(p: &Progress) -> f64 {
    if p.total == 0 {
        1.0
    } else {
        p.done as f64 / p.total as f64
    }
}

fn rate(p: &Progress) -> String {
    let mbs = if p.seconds > 0.0 {
        p.bytes as f64 / p.seconds / 1e6
    } else {
        0.0
    };
    format!("{mbs:.1} MB/s")
}

fn eta(p: &Progress) -> String {
    if p.done == 0 || p.seconds <= 0.0 {
        return "?".into();
    }
    let left = (p.total - p.done.min(p.total)) as f64 * p.seconds / p.done as f64;
    let s = left.round() as u64;
    format!("{}:{:02}", s / 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_shows_fraction_rate_and_eta() {
        let p = Progress {
            chunk: 9,
            done: 10,
            total: 40,
            bytes: 20_000_000,
            seconds: 2.0,
        };
        let line = bar_line(&p);
        assert!(line.contains(" 25%"), "{line}");
        assert!(line.contains("10.0 MB/s"), "{line}");
        assert!(line.contains("ETA 0:06"), "{line}");
        assert_eq!(plain_line(&p), "10/40 chunks (25%), 10.0 MB/s, ETA 0:06");
    }
}
