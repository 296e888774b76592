//! Running `ip` and friends: output as `Ok(stdout)` or an error naming the
//! command, its status and its stderr.

use std::process::{Command, Output, Stdio};

/// `ip args...` in the caller's namespace.
pub fn ip(args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    run(cmd)
}

/// Runs `cmd` with no stdin and returns its stdout if it exits 0.
pub(crate) fn run(mut cmd: Command) -> Result<String, String> {
    let what = describe(&cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running `{what}`: {e}"))?;
    output_result(&what, out)
}

/// `program arg...` of `cmd`, for messages.
pub(crate) fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn output_result(what: &str, out: Output) -> Result<String, String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{what}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The value, or a panic saying what was being done.
pub(crate) fn must<T>(result: Result<T, String>, what: &str) -> T {
    result.unwrap_or_else(|e| panic!("{what}: {e}"))
}
