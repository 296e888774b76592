//! Repair with no master running: open the volume on the backends the
//! flags name (their locks and a new epoch, as a master would; a dry run
//! only inspects and writes nothing), then run the repair here.

use std::sync::Arc;

use qbd_core::backend::Backend;
use qbd_core::meta::volume::RequestedShape;
use qbd_master::volume::repair::{Progress, RepairReport, run_repair};
use qbd_master::volume::{OpenMode, OpenRequest, Volume, open_volume_with};

use super::replace::{self, Spec};
use super::{RepairArgs, RepairError};
use crate::backends::{BackendArgs, connect_all, tool_name};

/// Runs the repair offline.
pub async fn repair(
    args: &RepairArgs,
    on_progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<RepairReport, RepairError> {
    let me = tool_name("repair");
    let spec = args.replace.as_deref().map(Spec::parse).transpose()?;
    if spec.is_some() && args.dry_run {
        return Err(RepairError::Usage(
            "--replace changes the placement table: it cannot be a dry run".into(),
        ));
    }
    let mut given = args.backends.clone();
    if let Some(s) = &spec {
        given.dirs.retain(|d| !s.is_old(&d.to_string_lossy()));
        given.nodes.retain(|n| !s.is_old(n));
    }
    let connected = connect_all(&given, &me).await?;
    let _link = connected.link;
    if connected.backends.is_empty() {
        let why: Vec<String> = connected
            .unreachable
            .iter()
            .map(|u| format!("{} ({})", u.what, u.why))
            .collect();
        return Err(RepairError::NoneReachable(why.join("; ")));
    }
    let req = OpenRequest {
        name: args.backends.volume.clone(),
        shape: RequestedShape {
            size: None,
            block_size: None,
            chunk_size: None,
            redundancy: None,
        },
        read_only: false,
        state_dir: args.state.clone(),
    };
    let backends = match &spec {
        Some(s) => switch(s, &args.backends, &me, connected.backends, &req).await?,
        None => connected.backends,
    };
    let mode = match args.dry_run {
        true => OpenMode::Inspect,
        false => OpenMode::Repair,
    };
    let volume = Arc::new(open(backends, &req, mode, args).await?);
    let mut report = run_repair(&volume, &args.state, &args.options(), on_progress)
        .await
        .map_err(|e| RepairError::Run(e.to_string()))?;
    for u in connected.unreachable {
        report.unreachable.push(format!("{} ({})", u.what, u.why));
    }
    Ok(report)
}

async fn open(
    backends: Vec<Arc<dyn Backend>>,
    req: &OpenRequest,
    mode: OpenMode,
    args: &RepairArgs,
) -> Result<Volume, RepairError> {
    open_volume_with(backends, req, mode).await.map_err(|e| {
        let mut msg = e.to_string();
        if msg.contains("locked") {
            msg.push_str(&format!(
                " (a master serves it: its admin socket was not found at {}; pass --admin-socket)",
                args.socket().display()
            ));
        }
        RepairError::Open(msg)
    })
}

/// Opens the volume without OLD, switches the table to NEW, and returns
/// the backends to reopen it on (the given ones and NEW).
async fn switch(
    spec: &Spec,
    flags: &BackendArgs,
    me: &str,
    mut backends: Vec<Arc<dyn Backend>>,
    req: &OpenRequest,
) -> Result<Vec<Arc<dyn Backend>>, RepairError> {
    let old = replace::old_id(spec, flags, me).await?;
    let new = replace::new_backend(spec, flags, me).await?;
    backends.retain(|b| b.id() != old && b.id() != new.id());
    let volume = open_volume_with(backends.clone(), req, OpenMode::Repair)
        .await
        .map_err(|e| RepairError::Open(e.to_string()))?;
    volume
        .replace_backend(old, &new)
        .await
        .map_err(|e| RepairError::Run(format!("--replace: {e}")))?;
    drop(volume);
    backends.push(new);
    Ok(backends)
}
