//! The admin socket client: `hello` to check the master serves this
//! volume, then (with `--replace`) one `replace` request that switches the
//! table in the master, then one `repair` request whose progress lines are
//! shown until the final reply.

use std::path::{Path, PathBuf};
use std::time::Duration;

use qbd_master::admin::proto::{Reply, Request};
use qbd_master::volume::repair::{Progress, RepairOptions, RepairReport};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::RepairError;

/// How long a master has to answer `hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// A master that answered on its admin socket.
#[derive(Debug)]
pub struct Master {
    path: PathBuf,
}

/// The master on `path` if one answers for `volume`; `None` if no socket
/// is there or nobody listens (a stale socket: repair offline).
pub async fn connect(path: &Path, volume: &str) -> Result<Option<Master>, RepairError> {
    let err = |why: String| RepairError::Admin {
        path: path.to_path_buf(),
        why,
    };
    let stream = match UnixStream::connect(path).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(err(e.to_string())),
    };
    let hello = tokio::time::timeout(HELLO_TIMEOUT, exchange(stream, &Request::Hello))
        .await
        .map_err(|_| err("no answer to hello".into()))?
        .map_err(err)?;
    match hello {
        Reply::Hello { volume: v, .. } if v == volume => Ok(Some(Master {
            path: path.to_path_buf(),
        })),
        Reply::Hello { volume: v, .. } => Err(err(format!(
            "that master serves volume {v:?}, not {volume:?}"
        ))),
        other => Err(err(format!("unexpected answer {other:?}"))),
    }
}

async fn exchange(stream: UnixStream, req: &Request) -> Result<Reply, String> {
    let (rd, mut wr) = stream.into_split();
    send(&mut wr, req).await?;
    let mut lines = BufReader::new(rd).lines();
    next_reply(&mut lines).await
}

async fn send(wr: &mut tokio::net::unix::OwnedWriteHalf, req: &Request) -> Result<(), String> {
    let mut line = serde_json::to_string(req).map_err(|e| e.to_string())?;
    line.push('\n');
    wr.write_all(line.as_bytes())
        .await
        .map_err(|e| e.to_string())
}

async fn next_reply(
    lines: &mut tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
) -> Result<Reply, String> {
    let line = lines
        .next_line()
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "the master closed the connection".to_owned())?;
    serde_json::from_str(&line).map_err(|e| format!("bad reply {line:?}: {e}"))
}

impl Master {
    /// Has the master put NEW in OLD's slot (the table only; the repair
    /// that follows fills NEW). Returns the master's one-line account.
    pub async fn replace(&self, old: &str, new: &str) -> Result<String, RepairError> {
        let err = |why: String| RepairError::Admin {
            path: self.path.clone(),
            why,
        };
        let stream = UnixStream::connect(&self.path)
            .await
            .map_err(|e| err(e.to_string()))?;
        let req = Request::Replace {
            old: old.to_owned(),
            new: new.to_owned(),
        };
        match exchange(stream, &req).await.map_err(err)? {
            Reply::Replaced {
                slot,
                backend,
                epoch,
                already,
            } => Ok(match already {
                true => format!("backend {slot} is {backend} already; repairing"),
                false => format!("backend {slot} is now {backend} (epoch {epoch}); repairing"),
            }),
            Reply::Error { message } => Err(RepairError::Replace(message)),
            other => Err(err(format!("unexpected answer {other:?}"))),
        }
    }

    /// Runs a repair in the master, showing its progress.
    pub async fn repair(
        &self,
        opts: &RepairOptions,
        on_progress: &mut (dyn FnMut(&Progress) + Send),
    ) -> Result<RepairReport, RepairError> {
        let err = |why: String| RepairError::Admin {
            path: self.path.clone(),
            why,
        };
        let stream = UnixStream::connect(&self.path)
            .await
            .map_err(|e| err(e.to_string()))?;
        let (rd, mut wr) = stream.into_split();
        let req = Request::Repair {
            options: opts.clone(),
        };
        send(&mut wr, &req).await.map_err(err)?;
        let mut lines = BufReader::new(rd).lines();
        loop {
            match next_reply(&mut lines).await.map_err(err)? {
                Reply::Progress(p) => on_progress(&p),
                Reply::Done { report } => return Ok(report),
                Reply::Error { message } => return Err(RepairError::Run(message)),
                other @ (Reply::Hello { .. } | Reply::Replaced { .. }) => {
                    return Err(err(format!("unexpected answer {other:?}")));
                }
            }
        }
    }
}
