//! The admin protocol: one JSON object per line, both ways.
//!
//! ```text
//! → {"op":"hello"}
//! ← {"reply":"hello","volume":"vm1","uuid":"…","epoch":7}
//! → {"op":"repair","options":{"dry_run":false,"max_rate":null,"restart":false,"jobs":2}}
//! ← {"reply":"progress","chunk":12,"done":13,"total":96,"bytes":…,"seconds":0.4}   (repeated)
//! ← {"reply":"done","report":{…RepairReport…}}
//! ← {"reply":"error","message":"…"}                                               (instead of done)
//! ```

use serde::{Deserialize, Serialize};

use crate::volume::repair::{Progress, RepairOptions, RepairReport};

/// A request line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Which volume is served here.
    Hello,
    /// Run a repair.
    Repair {
        /// How.
        #[serde(default)]
        options: RepairOptions,
    },
}

/// A reply line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// Answer to `hello`.
    Hello {
        /// Volume name.
        volume: String,
        /// Volume UUID.
        uuid: uuid::Uuid,
        /// The master's epoch.
        epoch: u64,
    },
    /// Where a repair is.
    Progress(Progress),
    /// A repair finished.
    Done {
        /// What it found and did.
        report: RepairReport,
    },
    /// The request failed (nothing more follows).
    Error {
        /// Why.
        message: String,
    },
}

impl Reply {
    /// The reply as one line (with its newline).
    pub fn line(&self) -> String {
        let mut s = serde_json::to_string(self).unwrap_or_else(|e| {
            format!("{{\"reply\":\"error\",\"message\":\"cannot encode reply: {e}\"}}")
        });
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_from_their_documented_lines() {
        let r: Request = serde_json::from_str(r#"{"op":"hello"}"#).expect("hello");
        assert_eq!(r, Request::Hello);
        let r: Request =
            serde_json::from_str(r#"{"op":"repair","options":{"dry_run":true,"max_rate":1000}}"#)
                .expect("repair");
        let want = RepairOptions {
            dry_run: true,
            max_rate: Some(1000),
            restart: false,
            jobs: 1,
        };
        assert_eq!(r, Request::Repair { options: want });
        assert!(serde_json::from_str::<Request>(r#"{"op":"format"}"#).is_err());
    }

    #[test]
    fn replies_round_trip() {
        let p = Reply::Progress(Progress {
            chunk: 3,
            done: 4,
            total: 9,
            bytes: 100,
            seconds: 0.5,
        });
        let line = p.line();
        assert!(line.ends_with('\n') && line.contains(r#""reply":"progress""#));
        let back: Reply = serde_json::from_str(line.trim_end()).expect("parse");
        assert_eq!(back, p);
    }
}
