//! One Exotel AgentStream WebSocket as a [`Transport`]: Exotel's JSON in, parsed tolerantly and
//! checked (bad frames become [`Inbound::Bad`], never an error), and `media`/`mark`/`clear`
//! out, written without allocating. Every write has a deadline; a peer that stops reading
//! counts as gone.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message};
use futures::{Sink, SinkExt, Stream, StreamExt};

use crate::call::playout::ChunkRules;
use crate::call::{CallEnd, Gone, Inbound, StreamStart, Transport};
use crate::transport::exotel::CHUNK_RULES;
use crate::transport::exotel::wire::{self, decode_payload, write_clear, write_mark, write_media};

/// A text message larger than this is skipped unread (Exotel's own are a few KB).
pub(crate) const MAX_TEXT_BYTES: usize = 256 * 1024;
/// How long a socket write may take before the peer counts as gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// Kinds of bad input, skipped and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum BadInput {
    /// Not JSON, or JSON without an `event`.
    Malformed,
    /// A `media` payload that is not base64.
    BadBase64,
    /// A `media` payload with an odd number of bytes (not whole PCM16 samples).
    OddBytes,
    /// An event we do not know.
    UnknownEvent,
    /// A text message over [`MAX_TEXT_BYTES`].
    Oversized,
    /// A binary frame (Exotel sends text only).
    Binary,
    /// A `dtmf` without a valid digit.
    BadDtmf,
}

impl BadInput {
    /// The metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            BadInput::Malformed => "malformed",
            BadInput::BadBase64 => "bad_base64",
            BadInput::OddBytes => "odd_bytes",
            BadInput::UnknownEvent => "unknown_event",
            BadInput::Oversized => "oversized",
            BadInput::Binary => "binary",
            BadInput::BadDtmf => "bad_dtmf",
        }
    }
}

/// An Exotel stream over a WebSocket (axum's, or anything with the same message type).
pub(crate) struct ExotelSocket<S> {
    socket: S,
    /// Exotel's stream id, once `start` has named it (outbound messages carry it).
    stream_sid: String,
    /// Outbound JSON, reused.
    text: String,
    /// Decoded caller audio, reused.
    payload: Vec<u8>,
    /// The last mark name echoed, reused.
    mark: String,
}

impl<S> ExotelSocket<S> {
    /// Wraps an upgraded socket.
    pub(crate) fn new(socket: S) -> ExotelSocket<S> {
        ExotelSocket {
            socket,
            stream_sid: String::new(),
            text: String::new(),
            payload: Vec::new(),
            mark: String::new(),
        }
    }
}

/// What one text message was, before borrowing the socket's buffers for the answer.
enum Parsed {
    Start(StreamStart),
    Media,
    Dtmf(char),
    Mark,
    Stop,
    Bad(BadInput),
    Other,
}

impl<S> ExotelSocket<S> {
    /// Parses one text message, decoding a media payload into `self.payload` and a mark's
    /// name into `self.mark`.
    fn parse(&mut self, text: &str) -> Parsed {
        if text.len() > MAX_TEXT_BYTES {
            return Parsed::Bad(BadInput::Oversized);
        }
        let Ok(msg) = wire::Inbound::parse(text) else {
            return Parsed::Bad(BadInput::Malformed);
        };
        match msg.event.as_ref() {
            "media" => {
                let Some(media) = msg.media.as_ref() else {
                    return Parsed::Bad(BadInput::Malformed);
                };
                // Bot audio on the caller's track (Exotel's "both tracks" option) is not the
                // caller.
                if media.track.as_deref().is_some_and(|t| t != "inbound") {
                    return Parsed::Other;
                }
                match decode_payload(&media.payload, &mut self.payload) {
                    Ok(audio) if audio.len() % 2 == 0 => {
                        let n = audio.len();
                        self.payload.truncate(n);
                        Parsed::Media
                    }
                    Ok(_) => Parsed::Bad(BadInput::OddBytes),
                    Err(_) => Parsed::Bad(BadInput::BadBase64),
                }
            }
            "start" => {
                let stream_sid = msg.stream_sid.as_deref().map(str::to_owned);
                let start = msg.start.unwrap_or_default();
                let stream_sid = stream_sid.or(start.stream_sid).unwrap_or_default();
                Parsed::Start(StreamStart {
                    call_sid: start.call_sid,
                    stream_sid,
                    from: start.from,
                    to: start.to,
                    sample_rate: start.media_format.and_then(|mf| mf.sample_rate),
                })
            }
            "dtmf" => {
                let digit = msg
                    .dtmf
                    .as_ref()
                    .and_then(|d| d.digit.as_deref())
                    .and_then(|d| d.trim_matches('"').chars().next())
                    .filter(|c| c.is_ascii_digit() || *c == '*' || *c == '#');
                match digit {
                    Some(digit) => Parsed::Dtmf(digit),
                    None => Parsed::Bad(BadInput::BadDtmf),
                }
            }
            "mark" => match msg.mark.as_ref().and_then(|m| m.name.as_deref()) {
                Some(name) => {
                    self.mark.clear();
                    self.mark.push_str(name);
                    Parsed::Mark
                }
                None => Parsed::Other,
            },
            "connected" => Parsed::Other,
            "stop" | "closed" => Parsed::Stop,
            _ => Parsed::Bad(BadInput::UnknownEvent),
        }
    }
}

impl<S> ExotelSocket<S>
where
    S: Sink<Message, Error = axum::Error> + Unpin + Send,
{
    async fn send_text(&mut self) -> Result<(), Gone> {
        self.write_text(true).await
    }

    /// Writes the text; without `flush` it waits in the socket for the next flushed write, and
    /// both go in one.
    async fn write_text(&mut self, flush: bool) -> Result<(), Gone> {
        let message = Message::Text(self.text.as_str().into());
        let socket = &mut self.socket;
        let write = async move {
            if flush {
                socket.send(message).await
            } else {
                socket.feed(message).await
            }
        };
        match tokio::time::timeout(SEND_TIMEOUT, write).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(Gone),
        }
    }
}

impl<S> Transport for ExotelSocket<S>
where
    S: Stream<Item = Result<Message, axum::Error>>
        + Sink<Message, Error = axum::Error>
        + Unpin
        + Send,
{
    fn chunk_rules(&self) -> ChunkRules {
        CHUNK_RULES
    }

    async fn recv(&mut self) -> Option<Inbound<'_>> {
        let parsed = loop {
            let message = match self.socket.next().await {
                None | Some(Err(_)) => return None,
                Some(Ok(message)) => message,
            };
            match message {
                Message::Text(text) => break self.parse(text.as_str()),
                Message::Binary(_) => break Parsed::Bad(BadInput::Binary),
                Message::Close(_) => return None,
                Message::Ping(_) | Message::Pong(_) => {}
            }
        };
        Some(match parsed {
            Parsed::Start(start) => {
                if self.stream_sid.is_empty() {
                    self.stream_sid.clone_from(&start.stream_sid);
                }
                Inbound::Start(start)
            }
            Parsed::Media => Inbound::Media(&self.payload),
            Parsed::Dtmf(digit) => Inbound::Dtmf(digit),
            Parsed::Mark => Inbound::Mark(&self.mark),
            Parsed::Stop => Inbound::Stop,
            Parsed::Bad(kind) => Inbound::Bad(kind.label()),
            Parsed::Other => Inbound::Other,
        })
    }

    async fn send_audio(&mut self, pcm: &[u8], mark: &str) -> Result<(), Gone> {
        // The media is queued and goes out with its mark: one write to the socket for both.
        write_media(&mut self.text, &self.stream_sid, pcm);
        self.write_text(false).await?;
        write_mark(&mut self.text, &self.stream_sid, mark);
        self.send_text().await
    }

    async fn send_clear(&mut self) -> Result<(), Gone> {
        write_clear(&mut self.text, &self.stream_sid);
        self.send_text().await
    }

    async fn close(&mut self, end: CallEnd) {
        // Exotel closed it (or it is gone): nothing to say.
        if !matches!(end, CallEnd::SocketLost | CallEnd::Hangup) {
            let code = match end {
                CallEnd::Shutdown => 1001,
                CallEnd::StartFailed | CallEnd::PipelineFailed => 1011,
                _ => 1000,
            };
            let frame = CloseFrame {
                code,
                reason: end.label().into(),
            };
            let _ =
                tokio::time::timeout(SEND_TIMEOUT, self.socket.send(Message::Close(Some(frame))))
                    .await;
        }
        let _ = tokio::time::timeout(SEND_TIMEOUT, self.socket.close()).await;
    }
}
