//! `qbd keygen`: a fresh cluster key, 32 random bytes as 64 lowercase hex
//! characters (the format `ClusterKey::load` reads).

use qbd_core::proto::ClusterKey;

/// A fresh random key. The bytes are two UUIDv4s, which the `uuid` crate
/// draws from the operating system's CSPRNG (`getrandom`); the six fixed
/// version/variant bits of each make it 244 random bits, plenty for a MAC key.
pub fn fresh_key() -> ClusterKey {
    let mut k = [0u8; 32];
    k[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    k[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    ClusterKey(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_hex_and_differ() {
        let k = fresh_key();
        assert_eq!(ClusterKey::from_hex(&k.to_hex()).ok(), Some(k.clone()));
        assert_ne!(k, fresh_key());
    }
}
