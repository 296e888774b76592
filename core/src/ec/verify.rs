//! The torn-row rule, as pure logic over meta records.
//!
//! A small write legitimately leaves the other data blocks of its row at
//! older generations, so generations alone cannot say whether a row is
//! consistent. Each parity record therefore names the generations of the K
//! data blocks it was computed from (its *cover*). A set of parts is a
//! codeword of one *version* V (K generations) when every data part in it
//! holds generation `V[i]` and every parity part in it covers exactly V.
//!
//! Rules ([`check_row`]):
//! - Only parts the caller considers available take part: a part that is
//!   missing, stale in the degraded map, or whose record or data failed its
//!   checksum is [`PartMeta::Unavailable`].
//! - All K data parts available: the data is the row (each block vouched
//!   for by its own checksum); V is their generations and a parity part
//!   that does not cover V is inconsistent (to be re-encoded).
//! - Some data part unavailable: every distinct cover among the available
//!   parity parts is a candidate V; its members are the parts consistent
//!   with it. A candidate with ≥ K members may be decoded; among those the
//!   newest wins (its generations, sorted newest first, compare greatest),
//!   then the one with more members. Parts outside the chosen V are never
//!   fed to the decoder, so a row whose data generations disagree with what
//!   the parity recorded is never used for reconstruction.
//! - A row with an available part inconsistent with V is *torn*.
//!
//! A data block whose own part is available is always read directly; the
//! rule governs only reconstruction, repair and scrubbing.

use super::{EcError, PartSet};
use crate::format::record::{MetaRecord, flags};
use crate::generation::Generation;
use crate::redundancy::{MAX_EC_DATA, MAX_EC_PARITY};

/// The generations of the K data blocks a parity block was computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cover {
    len: u8,
    gens: [Generation; MAX_EC_DATA],
}

impl Cover {
    /// A cover of `gens` (1..=16 generations, one per data part).
    pub fn new(gens: &[Generation]) -> Result<Self, EcError> {
        if gens.is_empty() || gens.len() > MAX_EC_DATA {
            return Err(EcError::BadCover {
                got: gens.len(),
                k: MAX_EC_DATA,
            });
        }
        let mut c = Cover {
            len: gens.len() as u8,
            gens: [Generation::NONE; MAX_EC_DATA],
        };
        c.gens[..gens.len()].copy_from_slice(gens);
        Ok(c)
    }

    /// The cover of a never-written row: K × generation 0. A never-written
    /// parity block (all-zero record, hole) is the parity of all-zero data,
    /// so it is consistent with never-written data blocks.
    pub fn unwritten(k: usize) -> Self {
        Cover {
            len: k.clamp(1, MAX_EC_DATA) as u8,
            gens: [Generation::NONE; MAX_EC_DATA],
        }
    }

    /// The generations, one per data part.
    pub fn gens(&self) -> &[Generation] {
        &self.gens[..usize::from(self.len)]
    }

    /// The newest generation covered.
    pub fn newest(&self) -> Generation {
        self.gens()
            .iter()
            .copied()
            .max()
            .unwrap_or(Generation::NONE)
    }

    /// The meta record of a parity block holding `parity` computed from
    /// data at these generations, written at `generation`.
    pub fn parity_record(&self, parity: &[u8], generation: Generation) -> MetaRecord {
        let mut r = MetaRecord::for_data(parity, generation);
        r.flags |= flags::PARITY;
        r.covered_len = self.len;
        for (c, g) in r.covered.iter_mut().zip(self.gens()) {
            *c = g.0;
        }
        r
    }

    /// Newest-first order key: generations sorted descending.
    fn recency(&self) -> [Generation; MAX_EC_DATA] {
        let mut g = self.gens;
        g.sort_unstable_by(|a, b| b.cmp(a));
        g
    }
}

/// What one part's (valid) meta record says about its block of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartMeta {
    /// Not usable: part missing or stale, record invalid, data corrupt.
    Unavailable,
    /// A data block at this generation (`Generation::NONE`: never written).
    Data(Generation),
    /// A parity block computed from data at these generations.
    Parity(Cover),
}

impl PartMeta {
    /// The meta of a data part from its decoded record. A record flagged
    /// as parity in a data part is unusable.
    pub fn data(rec: &MetaRecord) -> PartMeta {
        if rec.flags & flags::PARITY != 0 {
            return PartMeta::Unavailable;
        }
        PartMeta::Data(rec.generation)
    }

    /// The meta of a parity part from its decoded record, for a K-data
    /// profile. An empty record covers the never-written row; a written one
    /// must be flagged parity and cover exactly K generations.
    pub fn parity(rec: &MetaRecord, k: usize) -> PartMeta {
        if rec.is_empty() {
            return PartMeta::Parity(Cover::unwritten(k));
        }
        if rec.flags & flags::PARITY == 0 || usize::from(rec.covered_len) != k {
            return PartMeta::Unavailable;
        }
        let mut gens = [Generation::NONE; MAX_EC_DATA];
        for (g, c) in gens.iter_mut().zip(&rec.covered[..k]) {
            *g = Generation(*c);
        }
        Cover::new(&gens[..k]).map_or(PartMeta::Unavailable, PartMeta::Parity)
    }
}

/// How an available part disagrees with the row's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tear {
    /// The data block is newer than the version: the parity update of its
    /// write was lost (recompute parity from data).
    DataNewer {
        /// The block's generation.
        data: Generation,
        /// What the version holds.
        covered: Generation,
    },
    /// The version covers a newer write this data block lost (restore it
    /// from the version's parts).
    DataOlder {
        /// The block's generation.
        data: Generation,
        /// What the version holds.
        covered: Generation,
    },
    /// A parity block computed from other data generations (re-encode it).
    ParityDisagrees,
}

/// The verdict on one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowVerdict {
    k: u8,
    data: [Option<Generation>; MAX_EC_DATA],
    /// The row's version: the data's own generations when every data part
    /// is available, else the chosen parity cover; `None` when no parity is
    /// available to decide it.
    pub version: Option<Cover>,
    /// Available parts consistent with `version` (all available data parts
    /// when `version` is `None`).
    pub consistent: PartSet,
    /// Available parts inconsistent with `version`.
    pub inconsistent: PartSet,
    /// Parts the caller marked unavailable.
    pub unavailable: PartSet,
}

impl RowVerdict {
    /// True when an available part disagrees with the row's version.
    pub fn is_torn(&self) -> bool {
        !self.inconsistent.is_empty()
    }

    /// The parts to hand the decoder (all others as missing), when they are
    /// enough (≥ K) to restore the row at `version`.
    pub fn decode_set(&self) -> Option<PartSet> {
        (self.version.is_some() && self.consistent.len() >= usize::from(self.k))
            .then_some(self.consistent)
    }

    /// Data parts whose block can be served: read directly when available,
    /// or decoded when [`decode_set`](Self::decode_set) exists. The others
    /// fail with EIO.
    pub fn readable_data(&self) -> PartSet {
        let all = PartSet::first(usize::from(self.k));
        if self.decode_set().is_some() {
            return all;
        }
        all.minus(self.unavailable)
    }

    /// The generation a decoded block of data part `part` carries (its
    /// version's entry): what a repair writes and what a new cover records
    /// for a block that was reconstructed rather than read.
    pub fn version_generation(&self, part: usize) -> Option<Generation> {
        self.version.and_then(|v| v.gens().get(part).copied())
    }

    /// How available part `part` disagrees with the version, if it does.
    pub fn tear(&self, part: usize) -> Option<Tear> {
        if !self.inconsistent.contains(part) {
            return None;
        }
        let (Some(data), Some(covered)) = (
            self.data.get(part).copied().flatten(),
            self.version_generation(part),
        ) else {
            return Some(Tear::ParityDisagrees);
        };
        Some(if data > covered {
            Tear::DataNewer { data, covered }
        } else {
            Tear::DataOlder { data, covered }
        })
    }
}

/// Applies the torn-row rule to one row of a K+M profile. `parts` holds
/// K + M entries in part order: data parts `Data` or `Unavailable`, parity
/// parts `Parity` (with K generations) or `Unavailable`.
pub fn check_row(k: usize, m: usize, parts: &[PartMeta]) -> Result<RowVerdict, EcError> {
    let data = validate(k, m, parts)?;
    let unavailable: PartSet = (0..k + m)
        .filter(|&p| parts[p] == PartMeta::Unavailable)
        .collect();
    let version = if data[..k].iter().all(Option::is_some) {
        let gens: Vec<Generation> = data[..k].iter().flatten().copied().collect();
        Some(Cover::new(&gens)?)
    } else {
        best_cover(k, parts, &data)
    };
    let available = PartSet::first(k + m).minus(unavailable);
    let consistent = match &version {
        Some(v) => members(k, parts, &data, v),
        None => PartSet::first(k).minus(unavailable),
    };
    Ok(RowVerdict {
        k: k as u8,
        data,
        version,
        consistent,
        inconsistent: available.minus(consistent),
        unavailable,
    })
}

/// Checks shapes; returns the data generations (`None` = unavailable).
fn validate(
    k: usize,
    m: usize,
    parts: &[PartMeta],
) -> Result<[Option<Generation>; MAX_EC_DATA], EcError> {
    if !(1..=MAX_EC_DATA).contains(&k) || !(1..=MAX_EC_PARITY).contains(&m) {
        return Err(EcError::UnsupportedProfile { k, m });
    }
    if parts.len() != k + m {
        return Err(EcError::WrongShardCount {
            expected: k + m,
            got: parts.len(),
        });
    }
    let mut data = [None; MAX_EC_DATA];
    for (p, meta) in parts.iter().enumerate() {
        match (meta, p < k) {
            (PartMeta::Unavailable, _) => {}
            (PartMeta::Data(g), true) => data[p] = Some(*g),
            (PartMeta::Parity(c), false) if c.gens().len() == k => {}
            (PartMeta::Parity(c), false) => {
                return Err(EcError::BadCover {
                    got: c.gens().len(),
                    k,
                });
            }
            _ => return Err(EcError::MisplacedMeta { part: p }),
        }
    }
    Ok(data)
}

/// How a candidate version ranks: decodable first, then newest, then most
/// members.
type Score = (bool, [Generation; MAX_EC_DATA], usize);

/// The best candidate version among the available parity covers.
fn best_cover(k: usize, parts: &[PartMeta], data: &[Option<Generation>]) -> Option<Cover> {
    let mut best: Option<(Cover, Score)> = None;
    for meta in &parts[k..] {
        let PartMeta::Parity(c) = meta else { continue };
        let n = members(k, parts, data, c).len();
        let score = (n >= k, c.recency(), n);
        if best.as_ref().is_none_or(|(_, s)| score > *s) {
            best = Some((*c, score));
        }
    }
    best.map(|(c, _)| c)
}

/// The available parts consistent with version `v`.
fn members(k: usize, parts: &[PartMeta], data: &[Option<Generation>], v: &Cover) -> PartSet {
    let gens = v.gens();
    let data_ok = (0..k).filter(|&i| data[i] == Some(gens[i]));
    let parity_ok = (k..parts.len()).filter(|&p| parts[p] == PartMeta::Parity(*v));
    data_ok.chain(parity_ok).collect()
}

#[cfg(test)]
mod tests;
