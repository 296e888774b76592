//! The damage scenario of issue 7, on a written [`Fixture`]: one backend
//! unreachable (node stopped, directory moved away), and on the others
//! one part file deleted, one truncated, two with a flipped data byte and
//! one with a flipped header byte — each in a different chunk, so every
//! chunk stays recoverable (at most one damaged part plus the unreachable
//! one per chunk).

use super::damage;
use super::fixture::Fixture;

/// What was done, by (chunk, part).
#[derive(Debug, Clone, Default)]
pub struct Damage {
    /// The backend made unreachable (fixture index).
    pub unreachable: usize,
    /// Its identity (`.backend`).
    pub unreachable_id: String,
    pub deleted: Vec<(u64, u8)>,
    pub truncated: Vec<(u64, u8)>,
    /// (chunk, part, part block whose data was flipped).
    pub flipped: Vec<(u64, u8, u32)>,
    pub bad_header: Vec<(u64, u8)>,
}

/// Damages `f` (written, with `parts` parts per chunk) as the module says.
pub fn damage(f: &mut Fixture, parts: u8) -> Damage {
    let unreachable = f.backend_of(0, 0);
    let mut d = Damage {
        unreachable,
        unreachable_id: f.backend_id(unreachable),
        ..Damage::default()
    };
    // A part of `chunk` not on the unreachable backend (the last such).
    let pick = |chunk: u64| -> u8 {
        (0..parts)
            .rev()
            .find(|&p| f.backend_of(chunk, p) != unreachable)
            .unwrap_or_else(|| panic!("chunk {chunk}: every part on one backend"))
    };
    let (c1, c3, c5, c7, c9) = (pick(1), pick(3), pick(5), pick(7), pick(9));
    damage::delete(&f.part_path(1, c1));
    d.deleted.push((1, c1));
    damage::truncate(&f.part_path(3, c3), 4096);
    d.truncated.push((3, c3));
    damage::flip_data(&f.part_path(5, c5), 0);
    d.flipped.push((5, c5, 0));
    damage::flip_data(&f.part_path(9, c9), 3);
    d.flipped.push((9, c9, 3));
    damage::flip_header(&f.part_path(7, c7));
    d.bad_header.push((7, c7));
    f.make_unreachable(unreachable);
    d
}
