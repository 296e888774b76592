//! SIGINT and SIGTERM: turned into an orderly stop, so the bench's `Drop`
//! guards run (child processes stopped, namespaces deleted).
//!
//! [`install`] starts a thread that waits for either signal (tokio's
//! signal handling, on a current-thread runtime of its own). A signal sets
//! a flag that the suites check between steps ([`check`]) and calls every
//! [`Subscription`]'s callback, which wakes a wait in progress (an fio run
//! is killed at once instead of running to its end). The suite then
//! returns an error, unwinding through the guards. A second signal
//! changes nothing: cleanup is already under way, and every wait in it is
//! bounded.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};

use tokio::signal::unix::{SignalKind, signal};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

type Callback = Box<dyn Fn() + Send>;

fn subscribers() -> &'static Mutex<Vec<(u64, Callback)>> {
    static SUBSCRIBERS: OnceLock<Mutex<Vec<(u64, Callback)>>> = OnceLock::new();
    SUBSCRIBERS.get_or_init(|| Mutex::new(Vec::new()))
}

/// Installs the handler (once per process; later calls return at once).
pub fn install() -> Result<(), String> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED.get_or_init(start).clone()
}

fn start() -> Result<(), String> {
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    std::thread::Builder::new()
        .name("qbd-bench-signals".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("signal runtime: {e}")));
                    return;
                }
            };
            rt.block_on(async move {
                let (mut int, mut term) = match (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) {
                    (Ok(i), Ok(t)) => (i, t),
                    (Err(e), _) | (_, Err(e)) => {
                        let _ = ready_tx.send(Err(format!("signal handlers: {e}")));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                // Waits for signals until the process exits.
                loop {
                    let name = tokio::select! {
                        _ = int.recv() => "SIGINT",
                        _ = term.recv() => "SIGTERM",
                    };
                    fire(name);
                }
            });
        })
        .map_err(|e| format!("signal thread: {e}"))?;
    ready_rx
        .recv()
        .map_err(|_| "the signal thread ended before installing its handlers".to_string())?
}

fn fire(name: &str) {
    let first = !INTERRUPTED.swap(true, Ordering::SeqCst);
    if first {
        eprintln!("qbd-bench: {name}: stopping; cleaning up child processes and namespaces");
    } else {
        eprintln!("qbd-bench: {name}: cleanup already under way (every wait is bounded)");
    }
    if let Ok(subs) = subscribers().lock() {
        subs.iter().for_each(|(_, f)| f());
    }
}

/// Whether SIGINT or SIGTERM arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// `Err` once interrupted, for `?` between steps.
pub fn check() -> Result<(), String> {
    if interrupted() {
        Err("interrupted (SIGINT/SIGTERM); stopped what it had started".into())
    } else {
        Ok(())
    }
}

/// A callback run on the next signal, until dropped.
#[derive(Debug)]
pub struct Subscription(u64);

/// Calls `f` when a signal arrives while the returned guard lives (and at
/// once if one already did).
pub fn subscribe(f: impl Fn() + Send + 'static) -> Subscription {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut subs) = subscribers().lock() {
        subs.push((id, Box::new(f)));
    }
    if interrupted()
        && let Ok(subs) = subscribers().lock()
    {
        subs.iter().filter(|(i, _)| *i == id).for_each(|(_, f)| f());
    }
    Subscription(id)
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Ok(mut subs) = subscribers().lock() {
            subs.retain(|(id, _)| *id != self.0);
        }
    }
}
