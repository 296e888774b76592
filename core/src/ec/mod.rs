//! Erasure coding (`ec:K+M`): the codec, the row geometry and the torn-row
//! rule. Pure: no I/O, no threads, no clocks.
//!
//! - [`codec`]: [`EcCodec`], K+M Reed-Solomon on `reed-solomon-simd`'s
//!   high-rate code over GF(2^16). Its parity bytes are the on-disk format
//!   of parity parts (`docs/erasure-coding.md`).
//! - [`row`]: [`RowGeometry`], rows of K data blocks + M parity blocks at
//!   one part-block position; which rows a write touches, full or partial.
//! - [`verify`]: [`check_row`], which parts of a row agree with each other
//!   (parity records name the data generations they cover) and may be used
//!   for reconstruction; torn rows.
//!
//! Part indices: `0..K` are data parts, `K..K+M` parity parts (parity part
//! `K + j` holds the code's recovery shard `j`).
//!
//! ```
//! use qbd_core::ec::{EcCodec, EcError};
//!
//! let codec = EcCodec::new(4, 2)?;
//! let data: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 4096]).collect();
//! let parity = codec.encode(&data)?;
//! let mut shards: Vec<Option<Vec<u8>>> = data.iter().chain(&parity).cloned().map(Some).collect();
//! shards[1] = None; // a backend is down
//! shards[4] = None; // a parity block failed its checksum
//! codec.reconstruct(&mut shards)?;
//! assert_eq!(shards[1].as_deref(), Some(&data[1][..]));
//! # Ok::<(), EcError>(())
//! ```

pub mod codec;
mod error;
mod partset;
pub mod row;
pub mod verify;

pub use codec::{EcCodec, SHARD_ALIGN};
pub use error::EcError;
pub use partset::PartSet;
pub use row::{RowGeometry, RowPos, RowTouch};
pub use verify::{Cover, PartMeta, RowVerdict, Tear, check_row};
