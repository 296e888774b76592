//! What the run needs from the machine: client and peer programs on the
//! PATH (a missing one is named with its Debian package), and the qbd
//! daemons built next to `qbd-bench`.

use std::path::{Path, PathBuf};

use super::args::Kind;

/// The programs and binaries a run uses.
#[derive(Debug, Clone, Default)]
pub struct Tools {
    /// `fio` (always).
    pub fio: PathBuf,
    /// `nbdkit`, for the nbdkit target.
    pub nbdkit: Option<PathBuf>,
    /// `qemu-nbd`, for the qemu-nbd target.
    pub qemu_nbd: Option<PathBuf>,
    /// `qbd-node`, for QBD targets.
    pub node: Option<PathBuf>,
    /// `qbd-master`, for QBD targets.
    pub master: Option<PathBuf>,
}

/// Finds what `kinds` need, or says what is missing and how to get it.
pub fn find(kinds: &[Kind]) -> Result<Tools, String> {
    let mut missing = Vec::new();
    let mut program = |name: &str, package: &str| {
        let found = on_path(name);
        if found.is_none() {
            missing.push(format!("{name} (Debian package {package})"));
        }
        found
    };
    let fio = program("fio", "fio");
    let nbdkit = kinds
        .contains(&Kind::Nbdkit)
        .then(|| program("nbdkit", "nbdkit"))
        .flatten();
    let qemu_nbd = kinds
        .contains(&Kind::QemuNbd)
        .then(|| program("qemu-nbd", "qemu-utils"))
        .flatten();
    if !missing.is_empty() {
        return Err(format!(
            "missing: {}; install with `apt-get install {}`, or leave the target out \
             with --target",
            missing.join(", "),
            packages(&missing)
        ));
    }
    let mut tools = Tools {
        fio: fio.unwrap_or_default(),
        nbdkit,
        qemu_nbd,
        ..Tools::default()
    };
    if kinds.iter().any(|k| k.is_qbd()) {
        let dir = bin_dir()?;
        tools.node = Some(daemon(&dir, "qbd-node")?);
        tools.master = Some(daemon(&dir, "qbd-master")?);
    }
    Ok(tools)
}

/// The package names in `missing` ("prog (Debian package P)" entries).
fn packages(missing: &[String]) -> String {
    missing
        .iter()
        .filter_map(|m| m.split("package ").nth(1))
        .map(|p| p.trim_end_matches(')'))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The directory of the running `qbd-bench`, where cargo puts every
/// binary of the workspace built with the same profile.
fn bin_dir() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate qbd-bench: {e}"))?;
    exe.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("{} has no directory", exe.display()))
}

fn daemon(dir: &Path, name: &str) -> Result<PathBuf, String> {
    let path = dir.join(name);
    if is_executable(&path) {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing: qbd-bench e2e runs the {name} built next to it; build the \
             daemons with the same profile (`cargo build --release --workspace` for a \
             release qbd-bench)",
            path.display()
        ))
    }
}

/// `name` on the PATH (or in the sbin directories), if executable.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = ["/usr/sbin", "/sbin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(extra)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A program's version line (`--version`'s first line), for the header.
pub fn version(program: &Path) -> String {
    std::process::Command::new(program)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::packages;

    #[test]
    fn missing_programs_name_their_packages() {
        let missing = vec![
            "fio (Debian package fio)".to_owned(),
            "qemu-nbd (Debian package qemu-utils)".to_owned(),
        ];
        assert_eq!(packages(&missing), "fio qemu-utils");
    }
}
