//! A deterministic simulated link for the engine tests: a virtual clock, a
//! seeded xorshift RNG, loss, duplication, reordering (jitter) and delay
//! spikes in both directions, one client engine, one server engine and a
//! fake node application that counts executions per request tag.
//!
//! Request message: tag u64 LE, response length u32 LE, payload. Response:
//! tag u64, FNV-1a of the request payload u64, then `response length` bytes
//! of `pattern(tag)`.

#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use qbd_transport_l2::engine::{
    Client, ClientEvent, Config, FailReason, Mac, MsgId, ReqId, Server, ServerEvent,
};

pub const MASTER: Mac = Mac([0x02, 0, 0, 0, 0, 0x01]);
pub const NODE: Mac = Mac([0x02, 0, 0, 0, 0, 0x02]);

/// xorshift64.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// True with probability `per_mille`/1000.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

/// Link impairments (per direction, per frame).
#[derive(Debug, Clone)]
pub struct LinkParams {
    pub loss_per_mille: u64,
    pub dup_per_mille: u64,
    pub base_delay: Duration,
    /// Uniform extra delay 0..jitter: reorders frames.
    pub jitter: Duration,
    pub spike_per_mille: u64,
    pub spike: Duration,
}

impl LinkParams {
    pub fn clean() -> Self {
        LinkParams {
            loss_per_mille: 0,
            dup_per_mille: 0,
            base_delay: Duration::from_micros(5),
            jitter: Duration::ZERO,
            spike_per_mille: 0,
            spike: Duration::ZERO,
        }
    }
    pub fn hostile() -> Self {
        LinkParams {
            loss_per_mille: 50,
            dup_per_mille: 20,
            base_delay: Duration::from_micros(5),
            jitter: Duration::from_micros(30),
            spike_per_mille: 10,
            spike: Duration::from_millis(3),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dir {
    ToServer,
    ToClient,
}

pub fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x100_0000_01b3)
    })
}

pub fn pattern(tag: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (tag as usize).wrapping_mul(31).wrapping_add(i) as u8)
        .collect()
}

pub fn request(tag: u64, resp_len: u32, payload: &[u8]) -> Vec<u8> {
    let mut m = tag.to_le_bytes().to_vec();
    m.extend_from_slice(&resp_len.to_le_bytes());
    m.extend_from_slice(payload);
    m
}

/// What the client side saw for one request tag.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub delivered: u32,
    pub failed: Vec<FailReason>,
    pub bad_response: u32,
}

/// The fake node application: executes requests, counting per tag.
#[derive(Debug, Default)]
pub struct App {
    /// Executions per tag, per server incarnation (index = incarnation).
    pub executions: Vec<HashMap<u64, u32>>,
    pub queue: VecDeque<(ReqId, Vec<u8>)>,
    /// Requests processed per tick (`None`: all, immediately).
    pub per_tick: Option<usize>,
    pub tick: Duration,
    pub max_queue: usize,
}

/// A frame on the link: arrival time, tie-break, direction, bytes.
type InFlight = (Instant, u64, Dir, Vec<u8>);

pub struct Sim {
    pub t0: Instant,
    pub now: Instant,
    pub rng: Rng,
    pub params: LinkParams,
    pub client: Client,
    pub server: Server,
    pub server_cfg: Config,
    pub app: App,
    link: BinaryHeap<Reverse<InFlight>>,
    order: u64,
    next_tick: Instant,
    /// Tag of each message id, and the expected request checksum.
    pub sent: HashMap<MsgId, (u64, u64, u32)>,
    pub outcomes: BTreeMap<u64, Outcome>,
    pub events: Vec<ClientEvent>,
    /// Frames seen going to the server (for replay tests), if recording.
    pub recording: Option<Vec<Vec<u8>>>,
    /// Drop every frame in this direction (a partition) while set.
    pub cut: Option<Dir>,
    pub frames: [u64; 2],
    /// The node's engine is descheduled until then: frames to it wait in
    /// the socket buffer, its timers do not run.
    pub server_paused_until: Option<Instant>,
}

impl Sim {
    pub fn new(seed: u64, mtu: usize, params: LinkParams) -> Sim {
        let t0 = Instant::now();
        let client_cfg = Config {
            mtu,
            epoch: 7,
            ..Config::default()
        };
        let server_cfg = Config {
            mtu,
            epoch: 100,
            ..Config::default()
        };
        Sim {
            t0,
            now: t0,
            rng: Rng(seed | 1),
            params,
            client: Client::new(client_cfg, MASTER, NODE),
            server: Server::new(server_cfg.clone(), NODE, MASTER, 7),
            server_cfg,
            app: App {
                executions: vec![HashMap::new()],
                ..App::default()
            },
            link: BinaryHeap::new(),
            order: 0,
            next_tick: t0,
            sent: HashMap::new(),
            outcomes: BTreeMap::new(),
            events: Vec::new(),
            recording: None,
            cut: None,
            frames: [0; 2],
            server_paused_until: None,
        }
    }

    /// Sends a request for `tag` asking `resp_len` response bytes.
    pub fn submit(&mut self, tag: u64, resp_len: u32, payload: &[u8]) -> MsgId {
        let msg = request(tag, resp_len, payload);
        let id = self.client.send(self.now, msg).expect("message fits");
        self.sent.insert(id, (tag, fnv(payload), resp_len));
        self.outcomes.entry(tag).or_default();
        id
    }

    /// Replaces the server with a fresh engine of a higher epoch (a node
    /// restart; the app's store survives, its queue does not).
    pub fn restart_server(&mut self) {
        self.server_cfg.epoch += 1;
        self.server = Server::new(self.server_cfg.clone(), NODE, MASTER, 7);
        self.app.queue.clear();
        self.app.executions.push(HashMap::new());
    }

    /// Puts a frame on the link towards `dir`, with impairments.
    pub fn inject(&mut self, dir: Dir, frame: Vec<u8>) {
        self.push(dir, frame, Duration::ZERO);
    }

    fn push(&mut self, dir: Dir, frame: Vec<u8>, extra: Duration) {
        self.frames[dir as usize] += 1;
        if self.cut == Some(dir) || self.rng.chance(self.params.loss_per_mille) {
            return;
        }
        let copies = if self.rng.chance(self.params.dup_per_mille) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut delay = self.params.base_delay + extra;
            let jitter = self.params.jitter.as_nanos() as u64;
            delay += Duration::from_nanos(self.rng.below(jitter.max(1)));
            if self.rng.chance(self.params.spike_per_mille) {
                delay += self.params.spike;
            }
            self.order += 1;
            self.link
                .push(Reverse((self.now + delay, self.order, dir, frame.clone())));
        }
    }

    /// Drains events and transmissions of both engines (the contract:
    /// events, then frames).
    pub fn pump(&mut self) {
        loop {
            self.client_events();
            self.server_events();
            let mut buf = vec![0u8; 9100];
            let mut any = false;
            while let Some(n) = self.client.poll_transmit(self.now, &mut buf) {
                let f = buf[..n].to_vec();
                if let Some(r) = self.recording.as_mut() {
                    r.push(f.clone());
                }
                self.push(Dir::ToServer, f, Duration::ZERO);
                any = true;
            }
            while let Some(n) = self.server.poll_transmit(self.now, &mut buf) {
                self.push(Dir::ToClient, buf[..n].to_vec(), Duration::ZERO);
                any = true;
            }
            if !any {
                break;
            }
        }
    }

    fn client_events(&mut self) {
        while let Some(ev) = self.client.poll_event() {
            match &ev {
                ClientEvent::Delivered { id, response } => {
                    let (tag, sum, len) = self.sent.get(id).copied().expect("known id");
                    let o = self.outcomes.entry(tag).or_default();
                    let mut want = tag.to_le_bytes().to_vec();
                    want.extend_from_slice(&sum.to_le_bytes());
                    want.extend_from_slice(&pattern(tag, len as usize));
                    if *response == want {
                        o.delivered += 1;
                    } else {
                        o.bad_response += 1;
                    }
                }
                ClientEvent::Failed { id, why } => {
                    let (tag, _, _) = self.sent.get(id).copied().expect("known id");
                    self.outcomes.entry(tag).or_default().failed.push(*why);
                }
                ClientEvent::PeerRestarted { .. } => {}
            }
            self.events.push(ev);
        }
    }

    fn server_events(&mut self) {
        while let Some(ServerEvent::Request { id, message }) = self.server.poll_event() {
            self.app.queue.push_back((id, message));
        }
        self.app.max_queue = self.app.max_queue.max(self.app.queue.len());
        if self.app.per_tick.is_none() {
            self.execute(usize::MAX);
        }
    }

    fn execute(&mut self, n: usize) {
        for _ in 0..n {
            let Some((id, m)) = self.app.queue.pop_front() else {
                break;
            };
            let tag = u64::from_le_bytes(m[0..8].try_into().expect("tag"));
            let len = u32::from_le_bytes(m[8..12].try_into().expect("len"));
            let execs = self.app.executions.last_mut().expect("incarnation");
            *execs.entry(tag).or_default() += 1;
            let mut r = tag.to_le_bytes().to_vec();
            r.extend_from_slice(&fnv(&m[12..]).to_le_bytes());
            r.extend_from_slice(&pattern(tag, len as usize));
            self.server.respond(self.now, id, r).expect("fits");
        }
    }

    fn server_paused(&self) -> Option<Instant> {
        self.server_paused_until.filter(|&t| t > self.now)
    }

    /// The next instant something happens.
    fn next_event(&self) -> Option<Instant> {
        let link = self.link.peek().map(|Reverse((t, ..))| *t);
        let tick =
            (self.app.per_tick.is_some() && !self.app.queue.is_empty()).then_some(self.next_tick);
        let server = match self.server_paused() {
            Some(until) => self.server.poll_timeout().map(|t| t.max(until)),
            None => self.server.poll_timeout(),
        };
        [link, self.client.poll_timeout(), server, tick]
            .into_iter()
            .flatten()
            .min()
    }

    /// Advances the clock to the next event and processes it. Returns false
    /// if nothing is scheduled.
    pub fn step(&mut self) -> bool {
        self.pump();
        let Some(next) = self.next_event() else {
            return false;
        };
        self.now = self.now.max(next);
        while let Some(Reverse((t, ..))) = self.link.peek() {
            if *t > self.now {
                break;
            }
            let Some(Reverse((_, order, dir, f))) = self.link.pop() else {
                break;
            };
            if let Some(until) = self.server_paused()
                && dir == Dir::ToServer
            {
                self.link.push(Reverse((until, order, dir, f)));
                continue;
            }
            match dir {
                Dir::ToServer => self.server.handle_frame(self.now, &f),
                Dir::ToClient => self.client.handle_frame(self.now, &f),
            }
            self.pump();
        }
        if self.client.poll_timeout().is_some_and(|t| t <= self.now) {
            self.client.handle_timeout(self.now);
        }
        if self.server_paused().is_none()
            && self.server.poll_timeout().is_some_and(|t| t <= self.now)
        {
            self.server.handle_timeout(self.now);
        }
        if let Some(n) = self.app.per_tick
            && self.now >= self.next_tick
        {
            self.next_tick = self.now + self.app.tick;
            self.server_events();
            self.execute(n);
        }
        self.pump();
        true
    }

    /// Steps until the client has nothing unfinished, or `limit` of virtual
    /// time passed.
    pub fn settle(&mut self, limit: Duration) {
        let end = self.now + limit;
        while self.client.unfinished() > 0 && self.now < end && self.step() {}
    }

    /// Steps for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end && self.step() {}
    }

    /// Total executions of `tag` over all incarnations.
    pub fn executions(&self, tag: u64) -> u32 {
        self.app
            .executions
            .iter()
            .map(|m| m.get(&tag).copied().unwrap_or(0))
            .sum()
    }
}
