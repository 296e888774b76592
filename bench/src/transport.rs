//! The transport suite: node round trips over each transport measured.
//!
//! Where (chosen by [`crate::plan`]): as root, between two network namespaces the
//! bench makes, joined by a veth pair, once per `--mtu`, with the node in
//! one namespace and every target in the other ([`crate::netns`]);
//! without root (or with `--loopback`), TCP over 127.0.0.1 to an
//! in-process node; with `--node`, TCP to that node. The in-process node
//! runs in its own tokio runtime on its own threads (the client's runtime
//! is separate), as two daemons would.
//!
//! A target is one connection ([`crate::case::Target`]): `tcp` and `l2`
//! are driven through the `Transport` trait from tokio tasks (the product
//! path), `l2-loop` by a closed loop on the L2 link's polling thread
//! ([`crate::closed_loop`]); a case is an op at a queue depth
//! ([`crate::case::run_case`]). `--wait` sets how idle threads wait, the
//! same way for every target. Rounds run every case once, the starting
//! case rotating, and within a case every target back to back, the first
//! one rotating too, so drift on the shared cores spreads over all cases
//! and hits the targets alike. A row holds one target's medians over
//! rounds and their ranges; the ratio table pairs each L2 target's rounds
//! with TCP's.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use qbd_core::proto::ClusterKey;
use qbd_core::transport::Transport;
use qbd_transport_l2::L2Transport;
use qbd_transport_tcp::{TcpOptions, TcpTransport};
use uuid::Uuid;

use crate::case::{Spinners, Target, run_case};
use crate::cli::{Op, TargetKind, Timing, TransportArgs, Wait};
use crate::netns;
use crate::node::{LocalNode, NodeOptions};
use crate::output;
use crate::plan::{Place, choose, header, load_average, loopback_mtu};
use crate::report::{Net, Ratio, RoundResult, Row, ratio_table, table};
use crate::threads::{self, Group, Usage};
use crate::volume::{BLOCK, Volume};

/// A connection to the node, before the volume is prepared.
#[derive(Debug)]
pub struct Conn {
    /// Which transport.
    pub kind: TargetKind,
    /// The connection.
    pub t: Arc<dyn Transport>,
    /// The same connection as an L2 transport (L2 targets).
    pub l2: Option<Arc<L2Transport>>,
    /// The backend identity the handshake proved.
    pub backend: Uuid,
}

/// What a run measured.
#[derive(Debug, Default)]
pub struct Measured {
    /// One per target and case.
    pub rows: Vec<Row>,
    /// Each L2 target against TCP per case, when both ran.
    pub ratios: Vec<Ratio>,
    /// CPU per request by thread group, one line per target and case.
    pub cpu: Vec<String>,
    /// Counters and remarks for the report.
    pub notes: Vec<String>,
}

/// Runs `qbd-bench transport`: measures, prints the tables, writes the JSON.
pub fn main(args: &TransportArgs) -> Result<(), String> {
    let timing = args.timing()?;
    let cases = cases(&args.ops, &args.qd);
    if cases.is_empty() {
        return Err("nothing to measure (--ops / --qd empty)".into());
    }
    args.check()?;
    crate::interrupt::install()?;
    let (place, kinds) = choose(args)?;
    let header = header(args, &place, &kinds, timing);
    eprint!("{header}");
    let measured = match place {
        Place::Remote { addr, key } => {
            let net = Net {
                link: "remote",
                mtu: None,
            };
            let spinners = Spinners {
                client: args.wait == Wait::Spin,
                node: None,
            };
            over_tcp(args, (addr, key), &cases, timing, net, &spinners)?
        }
        Place::Loopback { .. } => {
            let node = LocalNode::start(NodeOptions::loopback(args.node_workers()))?;
            let net = Net {
                link: "loopback",
                mtu: loopback_mtu(),
            };
            let spinners = spinners(args, &node);
            over_tcp(
                args,
                (node.addr(), node.key()),
                &cases,
                timing,
                net,
                &spinners,
            )?
        }
        Place::Veth(mut lab) => {
            let mut all = Measured::default();
            for &mtu in &args.mtu {
                let m = netns::measure_at(&mut lab, mtu, args, &kinds, &cases, timing)?;
                all.rows.extend(m.rows);
                all.ratios.extend(m.ratios);
                all.cpu.extend(m.cpu);
                all.notes.extend(m.notes);
            }
            all
        }
    };
    let load_after = load_average();

    println!("{header}load after: {load_after}\n");
    print!("{}", table(&measured.rows));
    if !measured.ratios.is_empty() {
        println!();
        print!("{}", ratio_table(&measured.ratios));
    }
    if !measured.cpu.is_empty() {
        println!(
            "\nCPU per request by thread group: µs on a CPU + µs runnable but waiting for one \
             (times scheduled in), warm-up included\n{:<7}{:>6}  {:<5}{:>5}{}",
            "target",
            "mtu",
            "op",
            "qd",
            threads::per_request_header()
        );
        measured.cpu.iter().for_each(|l| println!("{l}"));
    }
    if !measured.notes.is_empty() {
        println!();
        measured.notes.iter().for_each(|n| println!("{n}"));
    }
    if let Some(dir) = &args.out {
        let header = format!("{header}load after: {load_after}\n");
        let files = output::transport(dir, &header, &measured.rows, &measured.ratios)?;
        println!("\nresults: {}", files[0].display());
        files[1..]
            .iter()
            .for_each(|f| println!("wrote {}", f.display()));
    }
    Ok(())
}

/// TCP only, from a runtime on the calling thread.
fn over_tcp(
    args: &TransportArgs,
    (addr, key): (SocketAddr, ClusterKey),
    cases: &[(Op, u32)],
    timing: Timing,
    net: Net,
    spinners: &Spinners,
) -> Result<Measured, String> {
    let rt = client_runtime(args)?;
    rt.block_on(async {
        let conn = connect_tcp(addr, key).await?;
        let targets = prepare(vec![conn], args.blocks).await?;
        measure(&targets, cases, timing, net, spinners).await
    })
}

/// The spinners `--wait` asks for, with the in-process `node`.
pub fn spinners(args: &TransportArgs, node: &LocalNode) -> Spinners {
    let spin = args.wait == Wait::Spin;
    Spinners {
        client: spin,
        node: spin.then(|| node.runtime()),
    }
}

/// The client's runtime (its threads start in the calling thread's
/// network namespace).
pub fn client_runtime(args: &TransportArgs) -> Result<tokio::runtime::Runtime, String> {
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all().thread_name(threads::CLIENT_THREADS);
    if let Some(n) = args.client_workers() {
        rt.worker_threads(n.max(1));
    }
    rt.build().map_err(|e| format!("runtime: {e}"))
}

/// A TCP connection to the node at `addr`.
pub async fn connect_tcp(addr: SocketAddr, key: ClusterKey) -> Result<Conn, String> {
    let t = TcpTransport::connect(addr, key, "qbd-bench", TcpOptions::default())
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    Ok(Conn {
        kind: TargetKind::Tcp,
        backend: t.node().backend,
        t,
        l2: None,
    })
}

/// Prepares the bench volume through each connection in turn (they must
/// reach one node); every target then uses the last preparation's epoch.
pub async fn prepare(conns: Vec<Conn>, blocks: u32) -> Result<Vec<Arc<Target>>, String> {
    let mut volume = None;
    for c in &conns {
        if c.backend != conns[0].backend {
            return Err(format!(
                "{} reaches backend {}, {} reaches {}: not one node",
                c.kind.name(),
                c.backend,
                conns[0].kind.name(),
                conns[0].backend
            ));
        }
        let v = Volume::prepare(&*c.t, c.backend, blocks)
            .await
            .map_err(|e| format!("{}: {e}", c.kind.name()))?;
        volume = Some(Arc::new(v));
    }
    let volume = volume.ok_or("no target to measure")?;
    Ok(conns
        .into_iter()
        .map(|c| {
            Arc::new(Target {
                kind: c.kind,
                t: c.t,
                l2: c.l2,
                volume: Arc::clone(&volume),
            })
        })
        .collect())
}

/// The rounds: every case, every target; rows (case by case, targets in
/// order) and, with TCP and L2 both, their ratios.
pub async fn measure(
    targets: &[Arc<Target>],
    cases: &[(Op, u32)],
    timing: Timing,
    net: Net,
    spinners: &Spinners,
) -> Result<Measured, String> {
    // results[case][target]: one entry per round; cpu[case][target]: summed.
    let mut results = vec![vec![Vec::<RoundResult>::new(); targets.len()]; cases.len()];
    let mut cpu = vec![vec![(BTreeMap::<Group, Usage>::new(), 0u64); targets.len()]; cases.len()];
    for round in 0..timing.rounds as usize {
        for k in 0..cases.len() {
            let i = (k + round) % cases.len();
            let (op, qd) = cases[i];
            for j in 0..targets.len() {
                crate::interrupt::check()?;
                let ti = (j + k + round) % targets.len();
                let out = run_case(&targets[ti], op, qd, timing, spinners).await?;
                let r = out.result;
                threads::accumulate(&mut cpu[i][ti].0, &out.usage);
                cpu[i][ti].1 += out.requests;
                eprintln!(
                    "round {}/{} {:<3} mtu {:>5} {:<5} qd {:>3}: median {:>7.1} µs  \
                     p99 {:>7.1} µs  {:>8.0} IOPS  ({} samples)",
                    round + 1,
                    timing.rounds,
                    targets[ti].kind.name(),
                    net.mtu.map_or_else(|| "-".into(), |m| m.to_string()),
                    op.name(),
                    qd,
                    r.median_us,
                    r.p99_us,
                    r.iops,
                    r.samples
                );
                results[i][ti].push(r);
            }
        }
    }
    let mut m = Measured::default();
    let tcp = targets.iter().position(|t| t.kind == TargetKind::Tcp);
    let mtu = net.mtu.map_or_else(|| "-".into(), |m| m.to_string());
    for ((&(op, qd), per_target), cpu) in cases.iter().zip(&results).zip(&cpu) {
        for ((t, rounds), (usage, requests)) in targets.iter().zip(per_target).zip(cpu) {
            let row = Row::from_rounds(t.kind.name(), net, op.name(), size_of(op), qd, rounds);
            m.rows.push(row);
            m.cpu.push(format!(
                "{:<7}{mtu:>6}  {:<5}{qd:>5}{}",
                t.kind.name(),
                op.name(),
                threads::per_request(usage, *requests)
            ));
        }
        let Some(tcp) = tcp else { continue };
        for (i, t) in targets.iter().enumerate().filter(|(_, t)| t.kind.is_l2()) {
            let rounds = (&per_target[i][..], &per_target[tcp][..]);
            m.ratios
                .push(Ratio::of(t.kind.name(), net, op.name(), qd, rounds));
        }
    }
    Ok(m)
}

/// The cases in a stable order (ops as given, each at every QD), duplicates dropped.
pub fn cases(ops: &[Op], qds: &[u32]) -> Vec<(Op, u32)> {
    let mut out = Vec::new();
    for &op in ops {
        for &qd in qds {
            if !out.contains(&(op, qd)) {
                out.push((op, qd));
            }
        }
    }
    out
}

/// Payload bytes per request.
fn size_of(op: Op) -> u64 {
    match op {
        Op::Ping => 0,
        Op::Read | Op::Write => u64::from(BLOCK),
    }
}
