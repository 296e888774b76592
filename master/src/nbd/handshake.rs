//! The fixed-newstyle handshake: a sans-IO option state machine
//! ([`Negotiation`]) and a thin async driver ([`negotiate`]).
//!
//! Calling contract of [`Negotiation`]: the driver sends
//! [`wire::encode_greeting`]`(`[`HANDSHAKE_FLAGS`]`)`, reads the 4-byte client
//! flags and calls [`Negotiation::new`]; then, for every option, reads the
//! 16-byte header and the data, calls [`Negotiation::handle_option`] (or
//! [`Negotiation::handle_oversized`] when the data is longer than
//! [`MAX_OPTION_LEN`]), writes whatever was appended to `out`, and acts on the
//! returned [`Step`].
//!
//! Policy:
//! - The server offers `FIXED_NEWSTYLE | NO_ZEROES`. A client that does not
//!   set `C_FIXED_NEWSTYLE` gets plain newstyle: `OPT_EXPORT_NAME` works,
//!   any other option drops it (it could not parse an option reply).
//! - `OPT_INFO` and `OPT_GO` always answer `INFO_EXPORT`, `INFO_NAME`,
//!   `INFO_BLOCK_SIZE` (and `INFO_DESCRIPTION` if configured), whatever was
//!   requested, and never demand `INFO_BLOCK_SIZE`: INFO and GO share one
//!   code path so they report the same size and flags.
//! - Metadata contexts (block status) are not supported yet: a valid
//!   `OPT_SET/LIST_META_CONTEXT` gets a bare `ACK` (no contexts).
//! - TLS is not supported: `OPT_STARTTLS` gets `ERR_UNSUP`.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::Error;
use super::wire::{
    self, InfoRequest, MetaContextRequest, OptionHeader, client_flags, handshake_flags, info, opt,
    rep, transmission_flags as tf,
};

/// Handshake flags this server sends.
pub const HANDSHAKE_FLAGS: u16 = handshake_flags::FIXED_NEWSTYLE | handshake_flags::NO_ZEROES;

/// Longest option data the server reads into memory (names are ≤ 4 KiB).
pub const MAX_OPTION_LEN: u32 = 64 << 10;

/// Longest oversized option data the driver skips (answering `ERR_TOO_BIG`)
/// rather than dropping the client.
pub const MAX_OPTION_SKIP: u32 = 1 << 20;

/// What the handshake advertises about the one export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// Canonical name (the empty name selects it too).
    pub name: String,
    /// Optional human-readable description.
    pub description: Option<String>,
    /// Size in bytes, < 2^63.
    pub size: u64,
    /// Preferred block size: a power of two in 512 ..= [`wire::MAX_PAYLOAD`].
    pub preferred_block_size: u32,
    /// Whether writes are refused.
    pub read_only: bool,
}

impl Export {
    /// Builds an export, clamping values the protocol cannot carry: the
    /// size is capped below 2^63 and the preferred block size made a power
    /// of two in 512 ..= 32 MiB.
    pub fn new(
        name: String,
        description: Option<String>,
        size: u64,
        preferred: u32,
        ro: bool,
    ) -> Self {
        let size = size.min(i64::MAX as u64 & !4095);
        let preferred = preferred
            .clamp(512, wire::MAX_PAYLOAD)
            .next_power_of_two()
            .min(wire::MAX_PAYLOAD);
        Self {
            name,
            description,
            size,
            preferred_block_size: preferred,
            read_only: ro,
        }
    }

    /// Whether a client-supplied name selects this export.
    pub fn matches(&self, name: &[u8]) -> bool {
        name.is_empty() || name == self.name.as_bytes()
    }

    /// Transmission flags for a connection (DF only with structured replies).
    pub fn transmission_flags(&self, structured: bool) -> u16 {
        let mut f = tf::HAS_FLAGS | tf::SEND_FLUSH | tf::SEND_FUA | tf::CAN_MULTI_CONN;
        if self.read_only {
            f |= tf::READ_ONLY;
        } else {
            f |= tf::SEND_TRIM | tf::SEND_WRITE_ZEROES;
        }
        if structured {
            f |= tf::SEND_DF;
        }
        f
    }
}

/// What the handshake agreed on; the transmission phase runs on this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Export size sent to the client.
    pub size: u64,
    /// Transmission flags sent to the client.
    pub flags: u16,
    /// Whether READ replies must be structured.
    pub structured: bool,
}

impl Negotiated {
    /// Whether the export was advertised read-only.
    pub fn read_only(&self) -> bool {
        self.flags & tf::READ_ONLY != 0
    }
}

/// What the driver does after an option.
#[derive(Debug)]
pub enum Step {
    /// Read the next option.
    Continue,
    /// The client sent `OPT_ABORT`: send the reply (best effort) and close.
    Abort,
    /// Send the reply, then enter the transmission phase.
    Transmission(Negotiated),
    /// Send the reply (if any), then drop the client for this reason.
    Disconnect(Error),
}

/// Option-haggling state of one connection (phase "option haggling" of the spec).
#[derive(Debug)]
pub struct Negotiation<'a> {
    export: &'a Export,
    fixed: bool,
    no_zeroes: bool,
    structured: bool,
    /// Set when the server will not serve this client (too many
    /// connections): every option is answered `ERR_POLICY` with this text.
    refusal: Option<String>,
}

impl<'a> Negotiation<'a> {
    /// Starts haggling once the client flags arrived; unknown flags are fatal.
    pub fn new(export: &'a Export, flags: u32) -> Result<Self, Error> {
        if flags & !client_flags::KNOWN != 0 {
            return Err(Error::ClientFlags(flags));
        }
        Ok(Self {
            export,
            fixed: flags & client_flags::FIXED_NEWSTYLE != 0,
            no_zeroes: flags & client_flags::NO_ZEROES != 0,
            structured: false,
            refusal: None,
        })
    }

    /// Refuses the client, telling it `why`: `ABORT` is acknowledged,
    /// `EXPORT_NAME` (which has no error reply) disconnects, every other
    /// option is answered `ERR_POLICY` with `why` as its message, which
    /// clients show.
    pub fn refusing(mut self, why: impl Into<String>) -> Self {
        self.refusal = Some(why.into());
        self
    }

    /// Handles one option whose data is `data`, appending replies to `out`.
    pub fn handle_option(&mut self, option: u32, data: &[u8], out: &mut Vec<u8>) -> Step {
        if let Some(why) = &self.refusal {
            return refuse(option, why, out);
        }
        if option == opt::EXPORT_NAME {
            return self.export_name(data, out);
        }
        if !self.fixed {
            return Step::Disconnect(Error::NotFixedNewstyle(option));
        }
        match option {
            opt::ABORT => {
                wire::encode_option_reply(out, option, rep::ACK, &[]);
                return Step::Abort;
            }
            opt::LIST => self.list(data, out),
            opt::INFO | opt::GO => return self.info_or_go(option, data, out),
            opt::STRUCTURED_REPLY => self.structured_reply(data, out),
            opt::LIST_META_CONTEXT | opt::SET_META_CONTEXT => self.meta_context(option, data, out),
            opt::STARTTLS => error(out, option, rep::ERR_UNSUP, "TLS is not supported"),
            _ => error(out, option, rep::ERR_UNSUP, "unsupported option"),
        }
        Step::Continue
    }

    /// Handles an option whose data (longer than [`MAX_OPTION_LEN`]) the
    /// driver skipped.
    pub fn handle_oversized(&mut self, option: u32, len: u32, out: &mut Vec<u8>) -> Step {
        if let Some(why) = &self.refusal {
            return refuse(option, why, out);
        }
        if option == opt::EXPORT_NAME || !self.fixed {
            // No way to report an error: hard disconnect.
            return Step::Disconnect(Error::OptionTooLong(len));
        }
        error(out, option, rep::ERR_TOO_BIG, "option data too long");
        Step::Continue
    }

    fn negotiated(&self) -> Negotiated {
        Negotiated {
            size: self.export.size,
            flags: self.export.transmission_flags(self.structured),
            structured: self.structured,
        }
    }

    fn export_name(&self, name: &[u8], out: &mut Vec<u8>) -> Step {
        if !self.export.matches(name) {
            return Step::Disconnect(Error::UnknownExport(String::from_utf8_lossy(name).into()));
        }
        let n = self.negotiated();
        wire::encode_export_name_reply(out, n.size, n.flags, self.no_zeroes);
        Step::Transmission(n)
    }

    fn list(&self, data: &[u8], out: &mut Vec<u8>) {
        if !data.is_empty() {
            return error(out, opt::LIST, rep::ERR_INVALID, "OPT_LIST takes no data");
        }
        let name = self.export.name.as_bytes();
        let desc = self.export.description.as_deref().unwrap_or("").as_bytes();
        let mut server = Vec::with_capacity(4 + name.len() + desc.len());
        server.extend_from_slice(&(name.len() as u32).to_be_bytes());
        server.extend_from_slice(name);
        server.extend_from_slice(desc);
        wire::encode_option_reply(out, opt::LIST, rep::SERVER, &server);
        wire::encode_option_reply(out, opt::LIST, rep::ACK, &[]);
    }

    fn info_or_go(&mut self, option: u32, data: &[u8], out: &mut Vec<u8>) -> Step {
        let Ok(req) = InfoRequest::decode(data) else {
            error(
                out,
                option,
                rep::ERR_INVALID,
                "malformed OPT_INFO/OPT_GO data",
            );
            return Step::Continue;
        };
        if !self.export.matches(req.name) {
            error(out, option, rep::ERR_UNKNOWN, "unknown export");
            return Step::Continue;
        }
        let n = self.negotiated();
        let e = self.export;
        let r = rep::INFO;
        wire::encode_option_reply(out, option, r, &wire::encode_info_export(n.size, n.flags));
        wire::encode_option_reply(
            out,
            option,
            r,
            &wire::encode_info_string(info::NAME, e.name.as_bytes()),
        );
        if let Some(d) = &e.description {
            wire::encode_option_reply(
                out,
                option,
                r,
                &wire::encode_info_string(info::DESCRIPTION, d.as_bytes()),
            );
        }
        let bs = wire::encode_info_block_size(1, e.preferred_block_size, wire::MAX_PAYLOAD);
        wire::encode_option_reply(out, option, r, &bs);
        wire::encode_option_reply(out, option, rep::ACK, &[]);
        if option == opt::GO {
            Step::Transmission(n)
        } else {
            Step::Continue
        }
    }

    fn structured_reply(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if !data.is_empty() {
            return error(
                out,
                opt::STRUCTURED_REPLY,
                rep::ERR_INVALID,
                "OPT_STRUCTURED_REPLY takes no data",
            );
        }
        self.structured = true;
        wire::encode_option_reply(out, opt::STRUCTURED_REPLY, rep::ACK, &[]);
    }

    fn meta_context(&self, option: u32, data: &[u8], out: &mut Vec<u8>) {
        if !self.structured {
            return error(
                out,
                option,
                rep::ERR_INVALID,
                "negotiate structured replies first",
            );
        }
        let Ok(req) = MetaContextRequest::decode(data) else {
            return error(
                out,
                option,
                rep::ERR_INVALID,
                "malformed meta context request",
            );
        };
        if !self.export.matches(req.name) {
            return error(out, option, rep::ERR_UNKNOWN, "unknown export");
        }
        // No metadata contexts exist yet (block status is not supported).
        wire::encode_option_reply(out, option, rep::ACK, &[]);
    }
}

/// The answer to `option` from a refused client.
fn refuse(option: u32, why: &str, out: &mut Vec<u8>) -> Step {
    match option {
        opt::ABORT => {
            wire::encode_option_reply(out, option, rep::ACK, &[]);
            Step::Abort
        }
        opt::EXPORT_NAME => Step::Disconnect(Error::Refused(why.into())),
        _ => {
            error(out, option, rep::ERR_POLICY, why);
            Step::Continue
        }
    }
}

fn error(out: &mut Vec<u8>, option: u32, reply_type: u32, msg: &str) {
    wire::encode_option_reply(out, option, reply_type, msg.as_bytes());
}

/// Runs the handshake on a stream: `Ok(Some(_))` enters transmission,
/// `Ok(None)` means the client aborted. Not bounded in time: the caller
/// wraps it in a timeout.
pub async fn negotiate<R, W>(
    r: &mut R,
    w: &mut W,
    export: &Export,
) -> Result<Option<Negotiated>, Error>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    negotiate_as(r, w, export, None).await
}

/// [`negotiate`], refusing the client with the message `refusal` if given
/// ([`Negotiation::refusing`]): it then never enters transmission and ends
/// with `Error::Refused`, or `Ok(None)` if it aborts.
pub async fn negotiate_as<R, W>(
    r: &mut R,
    w: &mut W,
    export: &Export,
    refusal: Option<&str>,
) -> Result<Option<Negotiated>, Error>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    w.write_all(&wire::encode_greeting(HANDSHAKE_FLAGS)).await?;
    w.flush().await?;
    let mut flags = [0; 4];
    r.read_exact(&mut flags).await?;
    let mut neg = Negotiation::new(export, u32::from_be_bytes(flags))?;
    if let Some(why) = refusal {
        neg = neg.refusing(why);
    }
    let (mut data, mut out) = (Vec::new(), Vec::new());
    loop {
        let mut hdr = [0; OptionHeader::LEN];
        r.read_exact(&mut hdr).await?;
        let h = OptionHeader::decode(&hdr)?;
        out.clear();
        let step = if h.len > MAX_OPTION_LEN {
            if h.len > MAX_OPTION_SKIP {
                return Err(Error::OptionTooLong(h.len));
            }
            skip(r, u64::from(h.len)).await?;
            neg.handle_oversized(h.option, h.len, &mut out)
        } else {
            data.resize(h.len as usize, 0);
            r.read_exact(&mut data).await?;
            neg.handle_option(h.option, &data, &mut out)
        };
        let sent = send(w, &out).await;
        match step {
            Step::Continue => sent?,
            Step::Abort => return Ok(None), // the client may already be gone
            Step::Transmission(n) => return sent.map(|()| Some(n)).map_err(Error::from),
            Step::Disconnect(e) => return Err(e),
        }
    }
}

async fn send<W: AsyncWrite + Unpin>(w: &mut W, out: &[u8]) -> std::io::Result<()> {
    if !out.is_empty() {
        w.write_all(out).await?;
        w.flush().await?;
    }
    Ok(())
}

/// Reads and throws away exactly `n` bytes.
pub(crate) async fn skip<R: AsyncRead + Unpin>(r: &mut R, n: u64) -> std::io::Result<()> {
    let copied = tokio::io::copy(&mut r.take(n), &mut tokio::io::sink()).await?;
    if copied < n {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nbd::wire::OptionReplyHeader;

    fn export() -> Export {
        Export::new("vol".into(), None, 1 << 20, 4096, false)
    }

    /// Splits a byte stream of option replies into (option, type, data).
    fn replies(mut b: &[u8]) -> Vec<(u32, u32, Vec<u8>)> {
        let mut v = Vec::new();
        while !b.is_empty() {
            let h = OptionReplyHeader::decode(&b[..20]).expect("reply header");
            let end = 20 + h.len as usize;
            v.push((h.option, h.reply_type, b[20..end].to_vec()));
            b = &b[end..];
        }
        v
    }

    fn go_data(name: &[u8], reqs: &[u16]) -> Vec<u8> {
        InfoRequest {
            name,
            requests: reqs.to_vec(),
        }
        .encode()
    }

    const FIXED: u32 = client_flags::FIXED_NEWSTYLE | client_flags::NO_ZEROES;

    #[test]
    fn export_clamps_size_and_block_size() {
        let e = Export::new("x".into(), None, u64::MAX, 3000, false);
        assert!(e.size < 1 << 63);
        assert_eq!(e.preferred_block_size, 4096);
        assert_eq!(
            Export::new("x".into(), None, 0, 1, false).preferred_block_size,
            512
        );
        assert_eq!(
            Export::new("x".into(), None, 0, u32::MAX, false).preferred_block_size,
            wire::MAX_PAYLOAD
        );
    }

    #[test]
    fn unknown_client_flags_are_fatal() {
        let e = export();
        assert!(matches!(
            Negotiation::new(&e, 4),
            Err(Error::ClientFlags(4))
        ));
        assert!(Negotiation::new(&e, 0).is_ok());
    }

    #[test]
    fn info_equals_go_and_always_has_block_size() {
        let e = export();
        let mut n = Negotiation::new(&e, FIXED).expect("flags");
        let (mut a, mut b) = (Vec::new(), Vec::new());
        assert!(matches!(
            n.handle_option(opt::INFO, &go_data(b"", &[]), &mut a),
            Step::Continue
        ));
        let Step::Transmission(neg) = n.handle_option(opt::GO, &go_data(b"", &[]), &mut b) else {
            panic!("GO must enter transmission");
        };
        let ra: Vec<_> = replies(&a).into_iter().map(|(_, t, d)| (t, d)).collect();
        let rb: Vec<_> = replies(&b).into_iter().map(|(_, t, d)| (t, d)).collect();
        assert_eq!(ra, rb);
        assert_eq!(ra.last().map(|r| r.0), Some(rep::ACK));
        let export_info = &ra[0].1;
        assert_eq!(
            export_info,
            &wire::encode_info_export(1 << 20, neg.flags).to_vec()
        );
        assert!(
            ra.iter()
                .any(|(_, d)| d == &wire::encode_info_block_size(1, 4096, 32 << 20))
        );
        assert!(
            ra.iter()
                .any(|(_, d)| d == &wire::encode_info_string(info::NAME, b"vol"))
        );
        assert!(!neg.structured);
        assert_eq!(neg.flags & tf::SEND_DF, 0);
        assert_ne!(neg.flags & tf::CAN_MULTI_CONN, 0);
    }

    #[test]
    fn unknown_export_and_malformed_go() {
        let e = export();
        let mut n = Negotiation::new(&e, FIXED).expect("flags");
        let mut out = Vec::new();
        assert!(matches!(
            n.handle_option(opt::GO, &go_data(b"nope", &[]), &mut out),
            Step::Continue
        ));
        assert_eq!(replies(&out)[0].1, rep::ERR_UNKNOWN);
        out.clear();
        assert!(matches!(
            n.handle_option(opt::GO, &[0, 0, 0, 9], &mut out),
            Step::Continue
        ));
        assert_eq!(replies(&out)[0].1, rep::ERR_INVALID);
        out.clear();
        assert!(matches!(
            n.handle_option(opt::GO, &go_data(b"vol", &[7]), &mut out),
            Step::Transmission(_)
        ));
    }

    #[test]
    fn a_refused_client_gets_policy_errors_and_never_transmission() {
        let e = export();
        let mut n = Negotiation::new(&e, FIXED)
            .expect("flags")
            .refusing("too many");
        for (o, data) in [
            (opt::GO, go_data(b"vol", &[])),
            (opt::INFO, go_data(b"vol", &[])),
            (opt::LIST, Vec::new()),
            (opt::STRUCTURED_REPLY, Vec::new()),
            (999, b"x".to_vec()),
        ] {
            let mut out = Vec::new();
            assert!(matches!(
                n.handle_option(o, &data, &mut out),
                Step::Continue
            ));
            let r = replies(&out);
            assert_eq!((r.len(), r[0].0, r[0].1), (1, o, rep::ERR_POLICY));
            assert_eq!(r[0].2, b"too many");
        }
        let mut out = Vec::new();
        let step = n.handle_option(opt::EXPORT_NAME, b"vol", &mut out);
        assert!(matches!(step, Step::Disconnect(Error::Refused(_))) && out.is_empty());
        assert!(matches!(
            n.handle_option(opt::ABORT, &[], &mut out),
            Step::Abort
        ));
        assert_eq!(replies(&out)[0].1, rep::ACK);
    }

    #[test]
    fn unknown_options_and_starttls_are_unsupported() {
        let e = export();
        let mut n = Negotiation::new(&e, FIXED).expect("flags");
        for o in [opt::STARTTLS, 4, 11, 999] {
            let mut out = Vec::new();
            assert!(matches!(
                n.handle_option(o, b"abc", &mut out),
                Step::Continue
            ));
            let r = replies(&out);
            assert_eq!((r[0].0, r[0].1), (o, rep::ERR_UNSUP));
        }
    }

    #[test]
    fn structured_reply_enables_df() {
        let e = export();
        let mut n = Negotiation::new(&e, FIXED).expect("flags");
        let mut out = Vec::new();
        n.handle_option(opt::STRUCTURED_REPLY, b"x", &mut out);
        assert_eq!(replies(&out)[0].1, rep::ERR_INVALID);
        out.clear();
        n.handle_option(opt::STRUCTURED_REPLY, &[], &mut out);
        assert_eq!(replies(&out)[0].1, rep::ACK);
        let Step::Transmission(neg) =
            n.handle_option(opt::GO, &go_data(b"vol", &[]), &mut Vec::new())
        else {
            panic!("GO");
        };
        assert!(neg.structured);
        assert_ne!(neg.flags & tf::SEND_DF, 0);
    }

    #[test]
    fn meta_context_needs_structured_and_lists_nothing() {
        let e = export();
        let mut n = Negotiation::new(&e, FIXED).expect("flags");
        let q = MetaContextRequest {
            name: b"vol",
            queries: vec![b"base:allocation".as_slice()],
        }
        .encode();
        let mut out = Vec::new();
        n.handle_option(opt::SET_META_CONTEXT, &q, &mut out);
        assert_eq!(replies(&out)[0].1, rep::ERR_INVALID);
        n.handle_option(opt::STRUCTURED_REPLY, &[], &mut Vec::new());
        out.clear();
        n.handle_option(opt::SET_META_CONTEXT, &q, &mut out);
        assert_eq!(
            replies(&out),
            vec![(opt::SET_META_CONTEXT, rep::ACK, vec![])]
        );
        out.clear();
        n.handle_option(opt::LIST_META_CONTEXT, &q[..5], &mut out);
        assert_eq!(replies(&out)[0].1, rep::ERR_INVALID);
    }

    #[test]
    fn list_and_abort() {
        let e = Export::new("vol".into(), Some("d".into()), 512, 512, true);
        let mut n = Negotiation::new(&e, FIXED).expect("flags");
        let mut out = Vec::new();
        n.handle_option(opt::LIST, &[], &mut out);
        let r = replies(&out);
        assert_eq!(
            r[0],
            (
                opt::LIST,
                rep::SERVER,
                vec![0, 0, 0, 3, b'v', b'o', b'l', b'd']
            )
        );
        assert_eq!(r[1].1, rep::ACK);
        out.clear();
        n.handle_option(opt::LIST, b"x", &mut out);
        assert_eq!(replies(&out)[0].1, rep::ERR_INVALID);
        out.clear();
        assert!(matches!(
            n.handle_option(opt::ABORT, b"ignored", &mut out),
            Step::Abort
        ));
        assert_eq!(replies(&out)[0].1, rep::ACK);
    }

    #[test]
    fn export_name_reply_and_zeroes() {
        let e = Export::new("vol".into(), None, 512, 512, true);
        let mut out = Vec::new();
        let mut n = Negotiation::new(&e, client_flags::FIXED_NEWSTYLE).expect("flags");
        let Step::Transmission(neg) = n.handle_option(opt::EXPORT_NAME, b"", &mut out) else {
            panic!("EXPORT_NAME");
        };
        assert_eq!(out.len(), 8 + 2 + 124);
        assert!(neg.read_only());
        let mut n = Negotiation::new(&e, FIXED).expect("flags");
        out.clear();
        n.handle_option(opt::EXPORT_NAME, b"vol", &mut out);
        assert_eq!(out.len(), 10);
        assert!(matches!(
            n.handle_option(opt::EXPORT_NAME, b"x", &mut out),
            Step::Disconnect(_)
        ));
    }

    #[test]
    fn non_fixed_client_only_gets_export_name() {
        let e = export();
        let mut n = Negotiation::new(&e, 0).expect("flags");
        let mut out = Vec::new();
        assert!(matches!(
            n.handle_option(opt::LIST, &[], &mut out),
            Step::Disconnect(_)
        ));
        assert!(out.is_empty());
        assert!(matches!(
            n.handle_oversized(opt::LIST, 1 << 20, &mut out),
            Step::Disconnect(_)
        ));
    }

    #[test]
    fn oversized_option_gets_too_big() {
        let e = export();
        let mut n = Negotiation::new(&e, FIXED).expect("flags");
        let mut out = Vec::new();
        assert!(matches!(
            n.handle_oversized(opt::GO, 1 << 20, &mut out),
            Step::Continue
        ));
        assert_eq!(replies(&out)[0].1, rep::ERR_TOO_BIG);
        assert!(matches!(
            n.handle_oversized(opt::EXPORT_NAME, 1 << 20, &mut out),
            Step::Disconnect(_)
        ));
    }

    #[tokio::test]
    async fn driver_over_duplex_go() {
        let (client, server) = tokio::io::duplex(4096);
        let e = export();
        let srv = tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(server);
            negotiate(&mut r, &mut w, &e).await
        });
        let (mut cr, mut cw) = tokio::io::split(client);
        let mut greet = [0; 18];
        cr.read_exact(&mut greet).await.expect("greeting");
        assert_eq!(greet, wire::encode_greeting(HANDSHAKE_FLAGS));
        cw.write_all(&FIXED.to_be_bytes()).await.expect("flags");
        // An oversized option is skipped and refused; GO still works.
        let big = vec![0u8; MAX_OPTION_LEN as usize + 1];
        cw.write_all(
            &OptionHeader {
                option: opt::INFO,
                len: big.len() as u32,
            }
            .encode(),
        )
        .await
        .expect("w");
        cw.write_all(&big).await.expect("w");
        let mut rh = [0; 20];
        cr.read_exact(&mut rh).await.expect("reply");
        let h = OptionReplyHeader::decode(&rh).expect("decode");
        assert_eq!(h.reply_type, rep::ERR_TOO_BIG);
        let mut msg = vec![0; h.len as usize];
        cr.read_exact(&mut msg).await.expect("msg");
        let go = go_data(b"vol", &[]);
        cw.write_all(
            &OptionHeader {
                option: opt::GO,
                len: go.len() as u32,
            }
            .encode(),
        )
        .await
        .expect("w");
        cw.write_all(&go).await.expect("w");
        let neg = srv
            .await
            .expect("join")
            .expect("negotiated")
            .expect("not aborted");
        assert_eq!(neg.size, 1 << 20);
    }

    #[tokio::test]
    async fn driver_drops_absurd_option_length() {
        let (client, server) = tokio::io::duplex(4096);
        let e = export();
        let srv = tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(server);
            negotiate(&mut r, &mut w, &e).await
        });
        let (mut cr, mut cw) = tokio::io::split(client);
        let mut greet = [0; 18];
        cr.read_exact(&mut greet).await.expect("greeting");
        cw.write_all(&FIXED.to_be_bytes()).await.expect("flags");
        cw.write_all(
            &OptionHeader {
                option: opt::GO,
                len: u32::MAX,
            }
            .encode(),
        )
        .await
        .expect("w");
        let r = srv.await.expect("join");
        assert!(matches!(r, Err(Error::OptionTooLong(u32::MAX))));
    }
}
