//! The admin protocol: one JSON object per line, both ways.
//!
//! ```text
//! → {"op":"hello"}
//! ← {"reply":"hello","volume":"vm1","uuid":"…","epoch":7}
//! → {"op":"repair","options":{"dry_run":false,"max_rate":null,"restart":false,"jobs":2}}
//! ← {"reply":"progress","chunk":12,"done":13,"total":96,"bytes":…,"seconds":0.4}   (repeated)
//! ← {"reply":"done","report":{…RepairReport…}}
//! ← {"reply":"error","message":"…"}                                               (instead of done)
//! → {"op":"replace","old":"<uuid>|/srv/b|10.0.0.7:7000","new":"/srv/z|10.0.0.8:7000"}
//! ← {"reply":"replaced","slot":1,"backend":"dir:/srv/z","epoch":8,"already":false}
//! ```
//!
//! `replace` switches the placement table only (`docs/repair.md` §6); the
//! client sends `repair` next to fill NEW.

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
    /// Put the fresh backend `new` in `old`'s placement slot.
    Replace {
        /// A backend of the table: its UUID, directory path (absolute) or
        /// node `HOST:PORT`.
        old: String,
        /// The fresh backend: an absolute directory path or a node
        /// `HOST:PORT`, reached by the master.
        new: String,
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
    /// The table names NEW now (`already`: it did before this request).
    Replaced {
        /// The placement slot NEW holds.
        slot: usize,
        /// NEW, as the master describes it.
        backend: String,
        /// The master's epoch now.
        epoch: u64,
        /// Nothing was switched: an earlier replace had done it.
        already: bool,
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
        let r: Request = serde_json::from_str(r#"{"op":"replace","old":"/srv/b","new":"/srv/z"}"#)
            .expect("replace");
        assert_eq!(
            r,
            Request::Replace {
                old: "/srv/b".into(),
                new: "/srv/z".into()
            }
        );
        assert!(serde_json::from_str::<Request>(r#"{"op":"replace","old":"x"}"#).is_err());
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
