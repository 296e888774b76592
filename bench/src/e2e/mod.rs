//! `qbd-bench e2e`: the whole path through NBD, QBD against its peers.
//!
//! - [`args`]: the flags and the effective settings.
//! - [`tools`]: fio, nbdkit, qemu-nbd on the PATH (missing ones named with
//!   their Debian package); `qbd-node`/`qbd-master` next to `qbd-bench`.
//! - [`daemon`]: a server process, ready when it says so, stopped on drop.
//! - [`targets`]: starting each system (QBD over TCP, QBD over L2 in
//!   namespaces on a bridge, nbdkit, qemu-nbd), all on tmpfs.
//! - [`fio`]: the workloads, bounded fio runs, fio's JSON.
//! - [`rounds`]: the interleaved rounds and their rows.
//!
//! Order of a run: settings and tools checked, SIGINT/SIGTERM handler
//! installed, namespaces (only for `qbd-l2`, only with the privileges),
//! targets started, each written in full, the rounds, targets stopped,
//! the report. Everything the run starts is owned by a guard (`Daemon`,
//! `Lab`, the tmpfs `TempDir`), so an error or an interrupt at any step
//! stops the processes and deletes the namespaces on the way out.

pub mod args;
pub mod daemon;
pub mod fio;
pub mod rounds;
pub mod segment;
pub mod targets;
pub mod tools;

pub use args::E2eArgs;

use qbd_netlab::Lab;

use self::args::{Kind, Settings, TcpLink};
use self::targets::{Ctx, Target, TcpLink as TcpLinkTo};
use crate::output;

/// Runs `qbd-bench e2e`.
pub fn main(args: &E2eArgs) -> Result<(), String> {
    let mut s = args.settings()?;
    let tools = tools::find(&s.kinds)?;
    crate::interrupt::install()?;
    let mut notes = Vec::new();
    let has = |k: Kind| s.kinds.contains(&k);
    let wants_lab = has(Kind::QbdL2) || (has(Kind::QbdTcp) && args.tcp_link != TcpLink::Loopback);
    let mut lab = if wants_lab { l2_lab()? } else { None };
    if lab.is_none() && has(Kind::QbdTcp) && args.tcp_link == TcpLink::Bridge {
        return Err(
            "--tcp-link bridge needs network namespaces (root: CAP_NET_ADMIN, \
                    CAP_NET_RAW, CAP_SYS_ADMIN)"
                .into(),
        );
    }
    if lab.is_none() && has(Kind::QbdL2) {
        let note = "qbd-l2 rows skipped: no network namespaces here (needs root: \
                    CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN); measuring qbd-tcp (on \
                    127.0.0.1) and the peers only";
        eprintln!("qbd-bench: note: {note}");
        notes.push(note.to_owned());
        s.kinds.retain(|&k| k != Kind::QbdL2);
    }
    let tcp_bridge = lab.is_some() && args.tcp_link != TcpLink::Loopback;
    if s.kinds.is_empty() {
        return Err("nothing left to measure (only qbd-l2 was asked for)".into());
    }
    let work = tempfile::Builder::new()
        .prefix("qbd-bench-e2e.")
        .tempdir_in("/dev/shm")
        .map_err(|e| format!("cannot make a directory on /dev/shm (tmpfs): {e}"))?;
    let header = header(args, &s, &tools, (tcp_bridge, &notes));
    eprint!("{header}");
    eprintln!("qbd-bench: work directory {}", work.path().display());
    let key = work.path().join("cluster.key");
    std::fs::write(&key, format!("{}\n", crate::node::random_key().to_hex()))
        .map_err(|e| format!("cannot write {}: {e}", key.display()))?;
    let json_dir = work.path().join("fio");
    std::fs::create_dir_all(&json_dir).map_err(|e| format!("{}: {e}", json_dir.display()))?;
    let ctx = Ctx {
        tools: &tools,
        work: work.path(),
        key: &key,
        size: s.size,
    };
    // Dropped before `lab` and `work`: processes stop, then namespaces and data go.
    let targets = start(
        &ctx,
        &s,
        &args.redundancy,
        (lab.as_mut(), tcp_bridge),
        args.mtu,
    )?;
    let failed = rounds::fill(&tools.fio, &targets, s.size, &json_dir)?;
    let time = fio::RunTime {
        runtime: s.runtime,
        ramp: s.ramp,
    };
    let out = rounds::run(
        &tools.fio,
        &targets,
        &s.workloads,
        (time, s.rounds, s.size),
        (&json_dir, failed),
    )?;
    let stats: Vec<String> = targets.into_iter().filter_map(Target::stop).collect();
    drop(lab);
    let mut header = format!("{header}load after: {}\n", crate::plan::load_average());
    stats
        .iter()
        .for_each(|l| header.push_str(&format!("{l}\n")));
    for (label, why) in &out.failures {
        header.push_str(&format!(
            "FAILED: {label} (no rows): {}\n",
            why.replace('\n', "\n  ")
        ));
    }
    output::e2e(args.out.as_deref(), &header, &out.rows)?;
    match out.failures.len() {
        0 => Ok(()),
        n => Err(format!(
            "{n} target(s) failed (see FAILED above); the others' figures were written"
        )),
    }
}

/// A lab for the L2 targets; `None` when namespaces cannot be made here
/// (after netlab's `SKIPPED:` line), `Err` when `QBD_REQUIRE_PRIVILEGED=1`.
fn l2_lab() -> Result<Option<Lab>, String> {
    // netlab panics when privilege is required but missing: turn that into
    // an error with its message (and no backtrace).
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let lab = std::panic::catch_unwind(|| Lab::new("qbd-bench e2e"));
    std::panic::set_hook(hook);
    lab.map_err(|p| {
        let why = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "no network namespaces here".into());
        format!(
            "{why}: qbd-l2 needs network namespaces (root: CAP_NET_ADMIN, CAP_NET_RAW, \
             CAP_SYS_ADMIN), as does qbd-tcp over a bridge; leave them out with --target \
             and --tcp-link loopback, or unset QBD_REQUIRE_PRIVILEGED"
        )
    })
}

/// Starts every target, QBD ones per redundancy.
fn start(
    ctx: &Ctx,
    s: &Settings,
    redundancies: &[String],
    (mut lab, tcp_bridge): (Option<&mut Lab>, bool),
    mtu: u32,
) -> Result<Vec<Target>, String> {
    let mut targets = Vec::new();
    for &kind in &s.kinds {
        match kind {
            Kind::QbdTcp => {
                for (i, r) in redundancies.iter().enumerate() {
                    let link = match lab.as_deref_mut() {
                        Some(lab) if tcp_bridge => {
                            let subnet = u8::try_from(i).map_err(|_| "too many redundancies")?;
                            TcpLinkTo::Bridge(lab, mtu, subnet)
                        }
                        _ => TcpLinkTo::Loopback,
                    };
                    targets.push(targets::qbd_tcp(ctx, r, link)?);
                }
            }
            Kind::QbdL2 => {
                let lab = lab.as_deref_mut().ok_or("qbd-l2 without namespaces")?;
                for r in redundancies {
                    targets.push(targets::qbd_l2(ctx, lab, r, mtu)?);
                }
            }
            Kind::Nbdkit | Kind::QemuNbd => targets.push(targets::peer(ctx, kind)?),
        }
        eprintln!("qbd-bench: started {}", kind.name());
    }
    Ok(targets)
}

/// The report's header: what ran where, the machine, the timing.
fn header(
    args: &E2eArgs,
    s: &Settings,
    tools: &tools::Tools,
    (tcp_bridge, notes): (bool, &[String]),
) -> String {
    let names: Vec<&str> = s.kinds.iter().map(|k| k.name()).collect();
    let volumes = if s.kinds.iter().any(|k| k.is_qbd()) {
        format!(" (QBD volumes: {})", args.redundancy.join(", "))
    } else {
        String::new()
    };
    let mut h = format!(
        "# qbd-bench e2e: fio ioengine=nbd against {}{volumes}\n",
        names.join(", ")
    );
    let lo = crate::plan::loopback_mtu().map_or_else(|| "?".into(), |m| m.to_string());
    let bridge = format!("in network namespaces on a bridge (veth, MTU {})", args.mtu);
    let mut parts = vec![format!(
        "{} MiB each, data on tmpfs (/dev/shm), written in full first",
        s.size >> 20
    )];
    if s.kinds.contains(&Kind::QbdTcp) {
        parts.push(if tcp_bridge {
            format!("qbd-tcp nodes and master {bridge}, IPv4 on the links")
        } else {
            format!("qbd-tcp nodes and master on 127.0.0.1 (lo MTU {lo})")
        });
    }
    if s.kinds.contains(&Kind::QbdL2) {
        parts.push(format!(
            "qbd-l2 nodes and master {bridge}, no IP on the links"
        ));
    }
    if s.kinds.iter().any(|k| !k.is_qbd()) {
        parts.push(format!("peers on 127.0.0.1 (lo MTU {lo})"));
    }
    parts.push("fio talks NBD to 127.0.0.1 (in the master's namespace when bridged)".into());
    h.push_str(&format!("targets: {}\n", parts.join("; ")));
    let targets: usize = s
        .kinds
        .iter()
        .map(|k| if k.is_qbd() { args.redundancy.len() } else { 1 })
        .sum();
    let runs = s.rounds as usize * s.workloads.len() * targets;
    // fio's start and the NBD handshake add about 0.2 s to each run.
    let secs = runs as f64 * (s.runtime + s.ramp).as_secs_f64() + runs as f64 * 0.2;
    h.push_str(&format!(
        "per run: ramp {:.1} s, measured {:.1} s; {} round(s) × {} workloads × {targets} \
         targets = {runs} runs, about {:.0} s; targets interleaved per workload; no CPU \
         pinning\n",
        s.ramp.as_secs_f64(),
        s.runtime.as_secs_f64(),
        s.rounds,
        s.workloads.len(),
        secs
    ));
    let mut versions = vec![format!("fio: {}", tools::version(&tools.fio))];
    for (name, p) in [("nbdkit", &tools.nbdkit), ("qemu-nbd", &tools.qemu_nbd)] {
        if let Some(p) = p {
            versions.push(format!("{name}: {}", tools::version(p)));
        }
    }
    h.push_str(&format!(
        "{}\ncpus: {}  kernel: {}  load before: {}\n",
        versions.join("  "),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "?".into(), |s| s.trim().to_owned()),
        crate::plan::load_average()
    ));
    notes
        .iter()
        .for_each(|n| h.push_str(&format!("note: {n}\n")));
    h
}
