//! The cluster key and its file: 32 bytes written as 64 hexadecimal
//! characters, surrounding ASCII whitespace allowed (`qbd keygen` writes
//! one with a trailing newline).
//!
//! The file is parsed as bytes, never as a string sliced at byte offsets:
//! whatever it holds (invalid UTF-8, multi-byte characters, any length) is
//! an error naming what is wrong and what is expected, never a panic. Every
//! binary that takes `--cluster-key FILE` reads it with [`ClusterKey::load`].

use std::path::{Path, PathBuf};

/// A cluster key: 32 bytes, written as 64 hex characters in its file.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey(pub [u8; 32]);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

/// Hex characters in a key file.
pub const KEY_HEX_LEN: usize = 64;

/// What is wrong with the text of a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Nothing but whitespace.
    #[error("empty, expected {KEY_HEX_LEN} hexadecimal characters")]
    Empty,
    /// The wrong number of bytes once whitespace is trimmed.
    #[error("{0} bytes, expected {KEY_HEX_LEN} hexadecimal characters")]
    Length(usize),
    /// A byte that is not an ASCII hex digit (a multi-byte UTF-8
    /// character, invalid UTF-8, whitespace inside the key...).
    #[error("byte {byte:#04x} at offset {offset} is not a hexadecimal digit (0-9, a-f, A-F)")]
    NotHex {
        /// Offset from the first non-whitespace byte.
        offset: usize,
        /// The byte found.
        byte: u8,
    },
}

/// A key file that cannot be used; the operator's fault.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read.
    #[error("cluster key file {}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file does not hold a key.
    #[error("cluster key file {}: {source} (make one with `qbd keygen`)", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: KeyError,
    },
}

impl ClusterKey {
    /// The all-zero key used with `--insecure` (authenticates nothing).
    pub const INSECURE: ClusterKey = ClusterKey([0; 32]);

    /// Reads and parses the key file at `path`.
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let bytes = std::fs::read(path).map_err(|source| KeyFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&bytes).map_err(|source| KeyFileError::Invalid {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Parses 64 hex digits, surrounding ASCII whitespace allowed, from
    /// any bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, KeyError> {
        let t = bytes.trim_ascii();
        if t.is_empty() {
            return Err(KeyError::Empty);
        }
        if let Some(offset) = t.iter().position(|b| !b.is_ascii_hexdigit()) {
            return Err(KeyError::NotHex {
                offset,
                byte: t[offset],
            });
        }
        if t.len() != KEY_HEX_LEN {
            return Err(KeyError::Length(t.len()));
        }
        let mut k = [0u8; 32];
        for (byte, pair) in k.iter_mut().zip(t.chunks_exact(2)) {
            *byte = nibble(pair[0]) << 4 | nibble(pair[1]);
        }
        Ok(ClusterKey(k))
    }

    /// [`parse`](Self::parse) of a string.
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        Self::parse(text.as_bytes())
    }

    /// 64 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The value of an ASCII hex digit (checked by the caller).
fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ClusterKey {
        ClusterKey(core::array::from_fn(|i| i as u8 * 7))
    }

    #[test]
    fn hex_round_trips_with_surrounding_whitespace_and_any_case() {
        let k = key();
        assert_eq!(
            ClusterKey::from_hex(&format!(" {}\n", k.to_hex())),
            Ok(k.clone())
        );
        let upper = k.to_hex().to_ascii_uppercase();
        assert_eq!(ClusterKey::parse(format!("{upper}\r\n").as_bytes()), Ok(k));
    }

    #[test]
    fn wrong_lengths_and_empty_files_are_named() {
        assert_eq!(ClusterKey::parse(b""), Err(KeyError::Empty));
        assert_eq!(ClusterKey::parse(b" \n\t"), Err(KeyError::Empty));
        assert_eq!(ClusterKey::parse(b"abcd"), Err(KeyError::Length(4)));
        let long = "a".repeat(65);
        assert_eq!(ClusterKey::from_hex(&long), Err(KeyError::Length(65)));
    }

    #[test]
    fn multibyte_and_invalid_utf8_are_errors_not_panics() {
        // 64 bytes with a two-byte character straddling a digit pair: the
        // old parser sliced the string inside it and panicked.
        let mut text = "a".repeat(61);
        text.insert(1, 'é');
        text.push('b');
        assert_eq!(text.len(), 64);
        let e = ClusterKey::from_hex(&text);
        assert_eq!(
            e,
            Err(KeyError::NotHex {
                offset: 1,
                byte: 0xc3
            })
        );
        let mut bytes = key().to_hex().into_bytes();
        bytes[10] = 0xff;
        let e = ClusterKey::parse(&bytes);
        assert_eq!(
            e,
            Err(KeyError::NotHex {
                offset: 10,
                byte: 0xff
            })
        );
        assert!(ClusterKey::from_hex(&"zz".repeat(32)).is_err());
        // from_str_radix would take a sign; a key digit is a digit.
        assert!(ClusterKey::from_hex(&format!("+a{}", "0".repeat(62))).is_err());
        let spaced = format!("{} {}", "a".repeat(32), "b".repeat(31));
        assert!(matches!(
            ClusterKey::from_hex(&spaced),
            Err(KeyError::NotHex { offset: 32, .. })
        ));
    }

    #[test]
    fn every_byte_string_parses_or_errs() {
        // A cheap fuzz: seeded pseudo-random bytes of every length 0..=80,
        // plus every single byte value at every position of a valid key.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..=80usize {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = ClusterKey::parse(&bytes);
        }
        let good = key().to_hex().into_bytes();
        for pos in 0..good.len() {
            for b in 0..=255u8 {
                let mut bytes = good.clone();
                bytes[pos] = b;
                let r = ClusterKey::parse(&bytes);
                assert_eq!(r.is_ok(), b.is_ascii_hexdigit(), "byte {b:#x} at {pos}");
            }
        }
    }

    #[test]
    fn file_errors_name_the_file_and_what_is_expected() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("cluster.key");
        std::fs::write(&path, "ключ\n")?;
        let msg = ClusterKey::load(&path).err().ok_or("parsed")?.to_string();
        assert!(
            msg.contains("cluster.key") && msg.contains("hexadecimal"),
            "{msg}"
        );
        let missing = dir.path().join("none");
        let msg = ClusterKey::load(&missing).err().ok_or("read")?.to_string();
        assert!(msg.contains("none") && msg.contains("cannot read"), "{msg}");
        std::fs::write(&path, format!("{}\n", key().to_hex()))?;
        assert_eq!(ClusterKey::load(&path)?, key());
        Ok(())
    }
}
