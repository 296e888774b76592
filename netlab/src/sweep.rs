//! Namespaces left behind by crashed runs.

use std::path::Path;

use crate::{NETNS_DIR, PREFIX, ip};

/// Deletes `qbdt-<pid>-*` namespaces whose process is gone (crashed runs).
/// [`Lab::new`](crate::Lab::new) runs it once per process.
pub fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    let own = std::process::id().to_string();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        let stale =
            pid != own && pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists();
        if stale && ip(&["netns", "del", &name]).is_ok() {
            eprintln!("swept stale namespace {name}");
        }
    }
}
