//! Engine configuration and counters.

use std::time::Duration;

use super::wire::{DEFAULT_ETHERTYPE, ETH_HEADER_LEN, L2_HEADER_LEN};

/// Parameters of one engine. `Default` is the LAN profile described in
/// `docs/l2-protocol.md` §5.
#[derive(Debug, Clone)]
pub struct Config {
    /// EtherType of QBD frames.
    pub ethertype: u16,
    /// Interface MTU (Ethernet payload: 1500 or 9000).
    pub mtu: usize,
    /// This side's epoch: never 0, higher after every restart (a persisted
    /// boot counter or the realtime clock), so stale frames are told apart.
    pub epoch: u32,
    /// Retransmission timeout before any sample.
    pub initial_rto: Duration,
    /// RTO floor.
    pub min_rto: Duration,
    /// RTO ceiling (backoff stops doubling there).
    pub max_rto: Duration,
    /// How long a complete message waits for a frame to carry its ack.
    pub ack_delay: Duration,
    /// Client: a message not answered by then fails. Server: a response not
    /// acknowledged by then is dropped (the request stays deduplicated).
    pub deadline: Duration,
    /// Congestion window at start, in frames.
    pub initial_cwnd: u32,
    /// Smallest congestion window, in frames.
    pub min_cwnd: u32,
    /// Largest congestion window, in frames.
    pub max_cwnd: u32,
    /// Largest congestion window in payload bytes (caps `max_cwnd` at
    /// large MTUs): what the peer's socket buffer holds with room to spare,
    /// so a clean link never drops frames there.
    pub max_window_bytes: usize,
    /// Most unfinished messages on the wire (≤ 64, the replay window).
    pub max_in_flight: u32,
    /// Client: messages it may send before the node advertised credits.
    pub initial_credit: u32,
    /// Server: requests it holds (reassembling or executing) before its
    /// credit edge stops advancing.
    pub max_pending: u32,
    /// Longest message (the node protocol's `MAX_PAYLOAD` + header + MAC).
    pub max_message: usize,
    /// Send small fragments that fit together in one frame as a bundle
    /// (§2); receiving bundles is always on.
    pub bundle: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ethertype: DEFAULT_ETHERTYPE,
            mtu: 1500,
            epoch: 1,
            initial_rto: Duration::from_millis(1),
            min_rto: Duration::from_micros(300),
            max_rto: Duration::from_millis(200),
            ack_delay: Duration::from_micros(50),
            deadline: Duration::from_secs(5),
            initial_cwnd: 64,
            min_cwnd: 4,
            max_cwnd: 1024,
            max_window_bytes: 4 << 20,
            max_in_flight: 64,
            initial_credit: 16,
            max_pending: 64,
            max_message: 33_558_528 + 48,
            bundle: true,
        }
    }
}

impl Config {
    /// Payload bytes per frame.
    pub fn max_payload(&self) -> usize {
        self.mtu
            .saturating_sub(L2_HEADER_LEN)
            .clamp(1, usize::from(u16::MAX))
    }

    /// The buffer size `poll_transmit` needs (MTU plus Ethernet header).
    pub fn frame_capacity(&self) -> usize {
        self.mtu.max(L2_HEADER_LEN + 4) + ETH_HEADER_LEN
    }

    /// The congestion window's ceiling in frames at this MTU.
    pub fn cwnd_ceiling(&self) -> u32 {
        let by_bytes = self.max_window_bytes / self.max_payload().max(1);
        let by_bytes = u32::try_from(by_bytes).unwrap_or(u32::MAX);
        self.max_cwnd.min(by_bytes).max(self.min_cwnd)
    }

    pub(crate) fn in_flight_limit(&self) -> u64 {
        u64::from(self.max_in_flight.clamp(1, 64))
    }
}

/// What an engine counted (for tests, logs and `qbd-bench`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames returned by `poll_transmit`.
    pub frames_sent: u64,
    /// Of those, bundles: frames carrying several fragments (§2).
    pub bundles_sent: u64,
    /// Fragments those frames carried (first sends and resends).
    pub fragments_sent: u64,
    /// Frames handed to `handle_frame` that were accepted for this session.
    pub frames_received: u64,
    /// Frames that do not decode or carry inconsistent fragment fields.
    pub malformed: u64,
    /// Frames for another address, EtherType or session, or a stale epoch.
    pub foreign: u64,
    /// Data frames already received (retransmissions, network duplicates).
    pub duplicates: u64,
    /// Messages retransmitted (each retransmission of a message once).
    pub retransmissions: u64,
    /// Fragments sent again by those retransmissions.
    pub retransmitted_frames: u64,
    /// Window decreases undone because every frame sent again after them
    /// reached the peer twice (§5: the timeout was a delay, not a loss).
    pub undone_decreases: u64,
    /// Reset frames sent (server) or accepted (client).
    pub resets: u64,
    /// Messages that failed or responses given up on.
    pub expired: u64,
}

impl Stats {
    /// Adds `other`'s counts to these (summing sessions).
    pub fn absorb(&mut self, other: &Stats) {
        self.frames_sent += other.frames_sent;
        self.bundles_sent += other.bundles_sent;
        self.fragments_sent += other.fragments_sent;
        self.frames_received += other.frames_received;
        self.malformed += other.malformed;
        self.foreign += other.foreign;
        self.duplicates += other.duplicates;
        self.retransmissions += other.retransmissions;
        self.retransmitted_frames += other.retransmitted_frames;
        self.undone_decreases += other.undone_decreases;
        self.resets += other.resets;
        self.expired += other.expired;
    }
}
