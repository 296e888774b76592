//! The block device the NBD server exports.
//!
//! The NBD layer (`crate::nbd`) knows nothing of chunks, parts or backends: it
//! speaks to anything implementing [`BlockDevice`]. The volume layer
//! (`crate::volume`) implements it over QBD backends; tests implement it in
//! memory or wrap it to inject delays.
//!
//! Contract (what the NBD layer may rely on):
//! - `offset + len <= size()`; the NBD layer checks ranges before calling.
//! - Calls may run concurrently and complete in any order; the device orders
//!   overlapping writes itself.
//! - `flush()` makes durable every write that completed before `flush()` was
//!   called, whichever connection issued it.
//! - `fua = true` makes that request durable before it returns.
//! - Unaligned offsets and lengths are allowed (the device does
//!   read-modify-write).

use std::future::Future;

/// Errors a device reports; each maps to one NBD errno.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Storage failed (missing or corrupt part with no good copy, backend I/O error).
    #[error("I/O error: {0}")]
    Io(String),
    /// The device is read-only.
    #[error("device is read-only")]
    ReadOnly,
    /// The request is malformed or out of range.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// No space left on a backend.
    #[error("no space: {0}")]
    NoSpace(String),
    /// The device is shutting down.
    #[error("shutting down")]
    Shutdown,
}

impl DeviceError {
    /// The NBD errno value (from the spec's list only) for this error.
    pub fn nbd_errno(&self) -> u32 {
        match self {
            DeviceError::Io(_) => 5,       // NBD_EIO
            DeviceError::ReadOnly => 1,    // NBD_EPERM
            DeviceError::Invalid(_) => 22, // NBD_EINVAL
            DeviceError::NoSpace(_) => 28, // NBD_ENOSPC
            DeviceError::Shutdown => 108,  // NBD_ESHUTDOWN
        }
    }
}

/// Result of a device operation.
pub type DeviceResult<T> = Result<T, DeviceError>;

/// A byte-addressed block device.
pub trait BlockDevice: Send + Sync + 'static {
    /// Size in bytes (always < 2^63).
    fn size(&self) -> u64;
    /// Preferred I/O size in bytes (the volume's block size).
    fn preferred_block_size(&self) -> u32;
    /// Whether writes are refused.
    fn read_only(&self) -> bool;
    /// Reads `len` bytes at `offset`.
    fn read(&self, offset: u64, len: u32) -> impl Future<Output = DeviceResult<Vec<u8>>> + Send;
    /// Writes `data` at `offset`; durable before return if `fua`.
    fn write(
        &self,
        offset: u64,
        data: Vec<u8>,
        fua: bool,
    ) -> impl Future<Output = DeviceResult<()>> + Send;
    /// Makes every previously completed write durable.
    fn flush(&self) -> impl Future<Output = DeviceResult<()>> + Send;
    /// Discards `len` bytes at `offset` (reads back as zeros afterwards).
    fn trim(
        &self,
        offset: u64,
        len: u64,
        fua: bool,
    ) -> impl Future<Output = DeviceResult<()>> + Send;
    /// Writes zeros; `no_hole` asks for allocated storage rather than holes.
    fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        no_hole: bool,
        fua: bool,
    ) -> impl Future<Output = DeviceResult<()>> + Send;
}
