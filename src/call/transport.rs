//! What the call controller needs from a telephony provider: the caller's messages in, the
//! bot's audio, marks, `clear` and the end of the stream out. Exotel is one implementation
//! (`transport::exotel`); Twilio or Plivo would be another, with the controller unchanged.

use std::future::Future;

use crate::call::playout::ChunkRules;
use crate::call::report::CallEnd;

/// The stream has started: who is calling and which stream this is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamStart {
    /// The provider's call id (Exotel's CallSid).
    pub call_sid: Option<String>,
    /// The provider's stream id.
    pub stream_sid: String,
    /// The caller's number, as the provider gave it.
    pub from: Option<String>,
    /// The number called.
    pub to: Option<String>,
    /// The rate the provider's own start message names, if any (the URL's rate wins).
    pub sample_rate: Option<u64>,
}

/// One message from the caller's side, already parsed and checked by the transport.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// The stream started.
    Start(StreamStart),
    /// Caller audio in the stream's encoding (PCM16LE for Exotel), whole samples only.
    Media(&'a [u8]),
    /// The caller pressed a key: `0`-`9`, `*` or `#`.
    Dtmf(char),
    /// The provider echoed a mark: everything sent before it has played.
    Mark(&'a str),
    /// The provider ended the stream (the caller hung up, or the flow moved on).
    Stop,
    /// A message that was skipped and should be counted, by kind (`malformed`, `bad_base64`,
    /// `odd_bytes`, `unknown_event`, `oversized`, `binary`, `bad_dtmf`).
    Bad(&'static str),
    /// A well-formed message that needs nothing (a keep-alive, `connected`, the bot's own
    /// track).
    Other,
}

/// The peer is gone: a write failed or timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the provider's socket is gone")]
pub struct Gone;

/// A telephony provider's side of one call.
pub trait Transport: Send {
    /// How the provider wants outbound audio chunked.
    fn chunk_rules(&self) -> ChunkRules;

    /// The next message from the provider; `None` once the socket has closed or failed.
    /// Cancel-safe: dropping the future loses no message.
    fn recv(&mut self) -> impl Future<Output = Option<Inbound<'_>>> + Send;

    /// Sends one chunk of bot audio (PCM16LE at the stream's rate) followed by a mark named
    /// `mark`.
    fn send_audio(
        &mut self,
        pcm: &[u8],
        mark: &str,
    ) -> impl Future<Output = Result<(), Gone>> + Send;

    /// Tells the provider to drop the bot audio it has not played yet (barge-in).
    fn send_clear(&mut self) -> impl Future<Output = Result<(), Gone>> + Send;

    /// Ends the stream for `end` (a provider that already closed it is left alone).
    fn close(&mut self, end: CallEnd) -> impl Future<Output = ()> + Send;
}
