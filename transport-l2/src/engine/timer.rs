//! The engines' timers: a small table indexed by an enum (one deadline per
//! kind; per-message deadlines are folded into one entry by the engine).

use std::time::Instant;

/// A kind of timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// The earliest retransmission deadline of an unacknowledged message.
    Retransmit = 0,
    /// A delayed acknowledgement is due.
    Ack = 1,
    /// Client: the earliest per-message deadline. Server: the earliest time
    /// a stored response is given up.
    Deadline = 2,
}

const COUNT: usize = 3;
const ALL: [Timer; COUNT] = [Timer::Retransmit, Timer::Ack, Timer::Deadline];

/// When each timer fires, if armed.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TimerTable {
    at: [Option<Instant>; COUNT],
}

impl TimerTable {
    /// Arms `timer` at `when`, or disarms it with `None`.
    pub(crate) fn set(&mut self, timer: Timer, when: Option<Instant>) {
        self.at[timer as usize] = when;
    }

    /// Arms `timer` at `when` unless it is armed earlier already.
    pub(crate) fn set_earliest(&mut self, timer: Timer, when: Instant) {
        let slot = &mut self.at[timer as usize];
        *slot = Some(slot.map_or(when, |t| t.min(when)));
    }

    /// When `timer` fires.
    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.at[timer as usize]
    }

    /// The earliest armed deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }

    /// Disarms and returns the timers due at `now`.
    pub(crate) fn expire(&mut self, now: Instant) -> impl Iterator<Item = Timer> + use<> {
        let mut due = [None; COUNT];
        for t in ALL {
            if self.get(t).is_some_and(|at| at <= now) {
                self.set(t, None);
                due[t as usize] = Some(t);
            }
        }
        due.into_iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn earliest_and_expiry() {
        let t0 = Instant::now();
        let mut tt = TimerTable::default();
        assert_eq!(tt.next(), None);
        tt.set(Timer::Deadline, Some(t0 + Duration::from_millis(5)));
        tt.set_earliest(Timer::Ack, t0 + Duration::from_millis(2));
        tt.set_earliest(Timer::Ack, t0 + Duration::from_millis(3));
        assert_eq!(tt.next(), Some(t0 + Duration::from_millis(2)));
        let due: Vec<_> = tt.expire(t0 + Duration::from_millis(2)).collect();
        assert_eq!(due, vec![Timer::Ack]);
        assert_eq!(tt.next(), Some(t0 + Duration::from_millis(5)));
    }
}
