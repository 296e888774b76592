//! The volume as the NBD server's [`BlockDevice`].

use crate::device::{BlockDevice, DeviceError, DeviceResult};

use super::Volume;

impl Volume {
    fn check_writable(&self) -> DeviceResult<()> {
        if self.read_only {
            return Err(DeviceError::ReadOnly);
        }
        Ok(())
    }

    fn check_range(&self, offset: u64, len: u64) -> DeviceResult<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.geo.size => Ok(()),
            _ => Err(DeviceError::Invalid(format!(
                "range {offset}+{len} beyond the volume's {} bytes",
                self.geo.size
            ))),
        }
    }
}

fn logged(op: &str, e: super::VolumeError) -> DeviceError {
    eprintln!("qbd-master: {op} failed: {e}");
    e.into()
}

impl BlockDevice for Volume {
    fn size(&self) -> u64 {
        self.geo.size
    }

    fn preferred_block_size(&self) -> u32 {
        self.geo.block_size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    async fn read(&self, offset: u64, len: u32) -> DeviceResult<Vec<u8>> {
        self.check_range(offset, u64::from(len))?;
        if len == 0 {
            return Ok(Vec::new());
        }
        self.read_at(offset, len)
            .await
            .map_err(|e| logged("read", e))
    }

    async fn write(&self, offset: u64, data: Vec<u8>, fua: bool) -> DeviceResult<()> {
        self.check_writable()?;
        self.check_range(offset, data.len() as u64)?;
        if data.is_empty() {
            return Ok(());
        }
        self.write_at(offset, data, fua)
            .await
            .map_err(|e| logged("write", e))
    }

    async fn flush(&self) -> DeviceResult<()> {
        if self.read_only {
            return Ok(());
        }
        self.flush_all().await.map_err(|e| logged("flush", e))
    }

    async fn trim(&self, offset: u64, len: u64, fua: bool) -> DeviceResult<()> {
        self.check_writable()?;
        self.check_range(offset, len)?;
        if len == 0 {
            return Ok(());
        }
        self.zero_at(offset, len, true, fua)
            .await
            .map_err(|e| logged("trim", e))
    }

    async fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        no_hole: bool,
        fua: bool,
    ) -> DeviceResult<()> {
        self.check_writable()?;
        self.check_range(offset, len)?;
        if len == 0 {
            return Ok(());
        }
        self.zero_at(offset, len, !no_hole, fua)
            .await
            .map_err(|e| logged("write zeroes", e))
    }
}
