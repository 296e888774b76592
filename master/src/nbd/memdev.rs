//! An in-memory [`BlockDevice`], for tests and demos (not for production:
//! everything lives in one `Vec` behind a mutex, flush is a no-op).

use std::sync::{Mutex, MutexGuard};

use crate::device::{BlockDevice, DeviceError, DeviceResult};

/// A RAM-backed device.
#[derive(Debug)]
pub struct MemDevice {
    data: Mutex<Vec<u8>>,
    read_only: bool,
    block_size: u32,
}

impl MemDevice {
    /// A zero-filled writable device of `size` bytes with 4 KiB blocks.
    pub fn new(size: usize) -> Self {
        Self {
            data: Mutex::new(vec![0; size]),
            read_only: false,
            block_size: 4096,
        }
    }

    /// Makes the device read-only.
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// A copy of the contents.
    pub fn contents(&self) -> Vec<u8> {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn range(&self, offset: u64, len: u64) -> DeviceResult<std::ops::Range<usize>> {
        let size = self.lock().len() as u64;
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(offset as usize..end as usize),
            _ => Err(DeviceError::Invalid(format!(
                "{offset}+{len} beyond {size}"
            ))),
        }
    }

    fn writable(&self) -> DeviceResult<()> {
        if self.read_only {
            Err(DeviceError::ReadOnly)
        } else {
            Ok(())
        }
    }

    fn zero(&self, offset: u64, len: u64) -> DeviceResult<()> {
        self.writable()?;
        let r = self.range(offset, len)?;
        self.lock()[r].fill(0);
        Ok(())
    }
}

impl BlockDevice for MemDevice {
    fn size(&self) -> u64 {
        self.lock().len() as u64
    }

    fn preferred_block_size(&self) -> u32 {
        self.block_size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    async fn read(&self, offset: u64, len: u32) -> DeviceResult<Vec<u8>> {
        let r = self.range(offset, u64::from(len))?;
        Ok(self.lock()[r].to_vec())
    }

    async fn write(&self, offset: u64, data: Vec<u8>, _fua: bool) -> DeviceResult<()> {
        self.writable()?;
        let r = self.range(offset, data.len() as u64)?;
        self.lock()[r].copy_from_slice(&data);
        Ok(())
    }

    async fn flush(&self) -> DeviceResult<()> {
        Ok(())
    }

    async fn trim(&self, offset: u64, len: u64, _fua: bool) -> DeviceResult<()> {
        self.zero(offset, len)
    }

    async fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        _no_hole: bool,
        _fua: bool,
    ) -> DeviceResult<()> {
        self.zero(offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn write_read_trim() {
        let d = MemDevice::new(8192);
        d.write(10, vec![1, 2, 3], false).await.expect("write");
        assert_eq!(d.read(9, 5).await.expect("read"), vec![0, 1, 2, 3, 0]);
        d.trim(11, 1, false).await.expect("trim");
        assert_eq!(d.read(10, 3).await.expect("read"), vec![1, 0, 3]);
        assert!(d.read(8190, 3).await.is_err());
        let ro = MemDevice::new(512).read_only();
        assert!(matches!(
            ro.write(0, vec![1], false).await,
            Err(DeviceError::ReadOnly)
        ));
    }
}
