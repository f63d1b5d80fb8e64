//! Bot audio on its way to the caller: chunked to the provider's byte rules, paced to real
//! time, and followed by a mark per chunk so Caly knows what the caller has heard.
//!
//! The rules come from the transport ([`ChunkRules`]; Exotel's: every chunk a multiple of 320
//! bytes, 3,200 to 100,000 bytes, PROTOCOLS.md §1.7). Chunks carry `target` of audio (100 ms);
//! a reply's last piece is padded with silence up to the rules, never sent short; a chunk never
//! spans two replies. Pacing keeps at most `lead` of audio queued at the far end (two chunks,
//! at least 300 ms): enough to ride out jitter, little enough that a `clear` has little to
//! throw away and our idea of what was heard stays close to the truth.
//!
//! Sans-IO: every method takes `now`, so the controller's tests drive it with tokio's paused
//! clock.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::engine::format::AudioFormat;

/// Least audio kept queued at the far end.
const MIN_LEAD: Duration = Duration::from_millis(300);
/// A partial chunk with nothing more arriving for this long is sent (padded) anyway.
const IDLE_FLUSH: Duration = Duration::from_millis(100);
/// Marks awaiting their echo; older ones are forgotten (a provider may not echo cleared ones).
const MAX_PENDING_MARKS: usize = 64;

/// A provider's rules for outbound audio chunks (PCM16LE bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRules {
    /// Smallest chunk the provider plays without glitches.
    pub min_bytes: usize,
    /// Largest chunk it accepts.
    pub max_bytes: usize,
    /// Every chunk is a multiple of this.
    pub align: usize,
    /// Audio per full chunk (rounded up to the rules).
    pub target: Duration,
}

impl ChunkRules {
    /// The largest chunk that is also a multiple of `align`.
    fn max_aligned(&self) -> usize {
        self.max_bytes / self.align.max(1) * self.align.max(1)
    }

    /// The chunk size for a stream at `rate`: `target` of audio, rounded up to the rules.
    pub fn chunk_bytes(&self, rate: u32) -> usize {
        let bytes = AudioFormat::pcm16(rate).samples_in(self.target) * 2;
        self.padded(bytes)
    }

    /// The size a `len`-byte tail is padded to.
    pub fn padded(&self, len: usize) -> usize {
        let align = self.align.max(1);
        len.div_ceil(align)
            .saturating_mul(align)
            .clamp(self.min_bytes, self.max_aligned())
    }
}

/// A chunk ready to send, and the name of the mark to send after it.
#[derive(Debug)]
pub struct Chunk<'a> {
    /// PCM16LE bytes.
    pub bytes: &'a [u8],
    /// The mark's name.
    pub mark: &'a str,
}

/// Queue, chunker, pacer and mark tracker of one call's outbound audio.
pub struct Outbound {
    rules: ChunkRules,
    format: AudioFormat,
    chunk: usize,
    lead: Duration,
    max_queue: usize,
    queue: VecDeque<u8>,
    /// Queue positions (bytes from the queue's front) where a reply ends.
    boundaries: VecDeque<usize>,
    last_push: Option<Instant>,
    /// When the audio sent so far will have finished playing.
    play_end: Option<Instant>,
    buf: Vec<u8>,
    mark: String,
    seq: u64,
    /// Bytes sent over the whole call (padding included).
    sent_total: u64,
    /// Where the current reply started in `sent_total`.
    reply_start: u64,
    /// Whether the next chunk starts a reply.
    at_reply_start: bool,
    marks: VecDeque<(u64, u64)>,
    confirmed: u64,
    confirmed_at: Option<Instant>,
    dropped: u64,
    underruns: u64,
}

impl Outbound {
    /// Outbound audio for a stream at `rate` under `rules`, queueing at most `max_queue` of it.
    pub fn new(rules: ChunkRules, rate: u32, max_queue: Duration) -> Outbound {
        let format = AudioFormat::pcm16(rate);
        let chunk = rules.chunk_bytes(rate);
        let chunk_time = format.duration_of((chunk / 2) as u64);
        Outbound {
            rules,
            format,
            chunk,
            lead: (chunk_time * 2).max(MIN_LEAD),
            max_queue: format.samples_in(max_queue) * 2,
            queue: VecDeque::new(),
            boundaries: VecDeque::new(),
            last_push: None,
            play_end: None,
            // A chunk is never longer than `chunk`: a reply's tail is padded up to at most that.
            buf: vec![0; chunk],
            mark: String::with_capacity(24),
            seq: 0,
            sent_total: 0,
            reply_start: 0,
            at_reply_start: true,
            marks: VecDeque::new(),
            confirmed: 0,
            confirmed_at: None,
            dropped: 0,
            underruns: 0,
        }
    }

    /// Bytes per chunk.
    pub fn chunk_len(&self) -> usize {
        self.chunk
    }

    /// Audio kept queued at Exotel at most.
    pub fn lead(&self) -> Duration {
        self.lead
    }

    /// Bot audio bytes dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Chunks of a reply that went out after Exotel's queue had already run dry: each is a
    /// gap the caller heard.
    pub fn underruns(&self) -> u64 {
        self.underruns
    }

    /// Bot audio waiting to be sent.
    pub fn queued(&self) -> Duration {
        self.format.duration_of((self.queue.len() / 2) as u64)
    }

    /// Queues bot audio (PCM16LE at the stream's rate). Beyond `max_queue` it is dropped and
    /// counted: a runaway producer cannot grow the call's memory.
    pub fn push(&mut self, bytes: &[u8], now: Instant) {
        let room = self.max_queue.saturating_sub(self.queue.len());
        let take = bytes.len().min(room) & !1;
        self.queue.extend(&bytes[..take]);
        self.dropped += (bytes.len() - take) as u64;
        self.last_push = Some(now);
    }

    /// The reply being queued is complete: its tail may go out padded.
    pub fn reply_ended(&mut self) {
        let at = self.queue.len();
        if at == 0 {
            // Everything of it has gone out already: the next audio is a new reply.
            self.at_reply_start = true;
        } else if self.boundaries.back() != Some(&at) {
            self.boundaries.push_back(at);
        }
    }

    fn chunk_time(&self, bytes: usize) -> Duration {
        self.format.duration_of((bytes / 2) as u64)
    }

    /// Whether the caller is hearing, or is about to hear, bot audio.
    pub fn is_playing(&self, now: Instant) -> bool {
        !self.queue.is_empty() || self.play_end.is_some_and(|end| end > now)
    }

    /// When the audio sent and queued so far will have finished playing, if it all went out
    /// without a gap from `now`.
    pub fn playing_until(&self, now: Instant) -> Instant {
        let sent_end = self.play_end.map_or(now, |end| end.max(now));
        sent_end + self.queued()
    }

    /// How many bytes the next chunk takes from the queue (0: nothing sendable yet), and
    /// whether it is a padded tail.
    fn next_take(&self, now: Instant) -> (usize, bool) {
        let until_boundary = self.boundaries.front().copied();
        let available = until_boundary
            .unwrap_or(self.queue.len())
            .min(self.queue.len());
        if available >= self.chunk {
            return (self.chunk, false);
        }
        let idle = self
            .last_push
            .is_none_or(|t| now.saturating_duration_since(t) >= IDLE_FLUSH);
        if available > 0 && (until_boundary.is_some() || idle) {
            (available, true)
        } else {
            (0, false)
        }
    }

    /// Whether the newest reply's next chunk is formed (a full chunk of it is queued, or its
    /// tail may go): it goes out as soon as the pacer lets it, which may be later if an earlier
    /// reply is still playing at the far end.
    pub fn newest_reply_ready(&self, now: Instant) -> bool {
        let end = self.queue.len();
        // The newest reply runs from the boundary before it (or the queue's front) to the end.
        let closed = self.boundaries.back() == Some(&end);
        let before = if closed {
            self.boundaries.iter().rev().nth(1)
        } else {
            self.boundaries.back()
        };
        let newest = end - before.copied().unwrap_or(0);
        let idle = self
            .last_push
            .is_none_or(|t| now.saturating_duration_since(t) >= IDLE_FLUSH);
        newest >= self.chunk || (newest > 0 && (closed || idle))
    }

    /// When the pacer lets a chunk of `bytes` go: after sending it, at most `lead` may be
    /// queued at Exotel.
    fn send_allowed_at(&self, bytes: usize, now: Instant) -> Instant {
        let chunk_time = self.chunk_time(self.rules.padded(bytes));
        match self.play_end {
            Some(end) => end
                .checked_sub(self.lead.saturating_sub(chunk_time))
                .unwrap_or(now),
            None => now,
        }
    }

    /// When something next becomes sendable, if anything is queued (`None`: nothing to send).
    pub fn wake_at(&self, now: Instant) -> Option<Instant> {
        if self.queue.is_empty() {
            return None;
        }
        let (take, _) = self.next_take(now);
        if take == 0 {
            // A partial chunk: more audio, or the idle flush, will make it sendable.
            let flush = self.last_push.map_or(now, |t| t + IDLE_FLUSH);
            return Some(flush.max(self.send_allowed_at(self.chunk, now)));
        }
        Some(self.send_allowed_at(take, now))
    }

    /// The next chunk, if one is complete (or a finished reply's tail) and the pacer allows.
    pub fn next_chunk(&mut self, now: Instant) -> Option<Chunk<'_>> {
        let (take, tail) = self.next_take(now);
        if take == 0 || self.send_allowed_at(take, now) > now {
            return None;
        }
        let len = if tail { self.rules.padded(take) } else { take };
        for (dst, b) in self.buf.iter_mut().zip(self.queue.drain(..take)) {
            *dst = b;
        }
        self.buf[take..len].fill(0);
        for b in self.boundaries.iter_mut() {
            *b -= take;
        }
        let ends_reply = self.boundaries.front() == Some(&0);
        if ends_reply {
            self.boundaries.pop_front();
        }
        if !self.at_reply_start && self.play_end.is_some_and(|end| end < now) {
            self.underruns += 1;
        }
        let playing_from = self.play_end.map_or(now, |end| end.max(now));
        self.play_end = Some(playing_from + self.chunk_time(len));
        if self.at_reply_start {
            // Until Exotel echoes a mark, the reply counts as heard from the moment its first
            // chunk went out.
            self.reply_start = self.sent_total;
            self.confirmed = self.sent_total;
            self.confirmed_at = Some(playing_from);
            self.at_reply_start = false;
        }
        self.sent_total += len as u64;
        // A padded tail ends its reply; so does a full chunk that reached a boundary.
        if tail || ends_reply {
            self.at_reply_start = true;
        }
        self.seq += 1;
        self.mark.clear();
        self.mark.push_str("caly-");
        self.mark.push_str(itoa(self.seq, &mut [0u8; 20]));
        if self.marks.len() == MAX_PENDING_MARKS {
            self.marks.pop_front();
        }
        self.marks.push_back((self.seq, self.sent_total));
        Some(Chunk {
            bytes: &self.buf[..len],
            mark: &self.mark,
        })
    }

    /// Exotel echoed a mark: everything before it has played. Returns whether it was ours.
    pub fn on_mark(&mut self, name: &str, now: Instant) -> bool {
        let Some(seq) = name
            .strip_prefix("caly-")
            .and_then(|s| s.parse::<u64>().ok())
        else {
            return false;
        };
        let mut found = false;
        while let Some(&(s, pos)) = self.marks.front() {
            if s > seq {
                break;
            }
            self.marks.pop_front();
            if s == seq {
                self.confirmed = self.confirmed.max(pos);
                self.confirmed_at = Some(now);
                found = true;
            }
        }
        found
    }

    /// How much of the current reply the caller has heard: what the marks confirm, plus the
    /// time since the last echo, never more than was sent.
    pub fn heard(&self, now: Instant) -> Duration {
        let sent = self.sent_total.saturating_sub(self.reply_start);
        let confirmed = self.confirmed.saturating_sub(self.reply_start);
        let since = self
            .confirmed_at
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        let heard = self.chunk_time(confirmed as usize) + since;
        heard.min(self.chunk_time(sent as usize))
    }

    /// Barge-in: drops everything queued and forgets pending marks (Exotel may never echo
    /// them). Returns the bytes dropped. The next audio starts a new reply.
    pub fn clear(&mut self, now: Instant) -> usize {
        let dropped = self.queue.len();
        self.queue.clear();
        self.boundaries.clear();
        self.marks.clear();
        self.play_end = Some(now);
        self.at_reply_start = true;
        dropped
    }
}

/// Formats `n` into `buf` without allocating.
fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exotel's rules (the transport's own test checks its constants).
    const RULES: ChunkRules = ChunkRules {
        min_bytes: 3200,
        max_bytes: 100_000,
        align: 320,
        target: Duration::from_millis(100),
    };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Sends everything sendable at `now`, returning chunk sizes.
    fn drain(o: &mut Outbound, now: Instant) -> Vec<usize> {
        let mut sizes = Vec::new();
        while let Some(c) = o.next_chunk(now) {
            sizes.push(c.bytes.len());
        }
        sizes
    }

    #[test]
    fn a_reply_goes_out_in_rule_sized_chunks_with_a_padded_tail() {
        let t0 = Instant::now();
        let mut o = Outbound::new(RULES, 8000, Duration::from_secs(60));
        // 1.05 s at 8 kHz = 16,800 bytes: 5 chunks of 3,200 and an 800-byte tail.
        o.push(&vec![1u8; 16_800], t0);
        o.reply_ended();
        let mut sizes = Vec::new();
        let mut now = t0;
        for _ in 0..40 {
            sizes.extend(drain(&mut o, now));
            now += ms(50);
        }
        assert_eq!(sizes, [3200, 3200, 3200, 3200, 3200, 3200]);
        assert!(!o.is_playing(now));
    }

    #[test]
    fn pacing_keeps_at_most_the_lead_queued_at_exotel() {
        let t0 = Instant::now();
        let mut o = Outbound::new(RULES, 8000, Duration::from_secs(60));
        o.push(&vec![0u8; 32_000], t0); // 2 s of audio arrives at once
        assert_eq!(o.lead(), ms(400));
        assert_eq!(
            drain(&mut o, t0).len(),
            2,
            "two 200 ms chunks fill the 400 ms lead"
        );
        assert_eq!(drain(&mut o, t0 + ms(150)).len(), 0);
        assert_eq!(o.wake_at(t0 + ms(150)), Some(t0 + ms(200)));
        assert_eq!(
            drain(&mut o, t0 + ms(200)).len(),
            1,
            "one more once one has played"
        );
        let mut sent = 3;
        let mut now = t0 + ms(200);
        while o.queued() > Duration::ZERO {
            now = o.wake_at(now).unwrap();
            sent += drain(&mut o, now).len();
        }
        assert_eq!(sent, 10);
        // The last chunk went out 400 ms before the audio runs out: no gap, no burst.
        assert_eq!(now, t0 + ms(1600));
        assert_eq!(o.underruns(), 0);
    }

    #[test]
    fn a_partial_chunk_waits_for_more_audio_then_flushes_when_idle() {
        let t0 = Instant::now();
        let mut o = Outbound::new(RULES, 16000, Duration::from_secs(60));
        o.push(&[0u8; 1000], t0);
        assert!(o.next_chunk(t0).is_none(), "waits for more");
        assert_eq!(o.wake_at(t0), Some(t0 + IDLE_FLUSH));
        let c = o.next_chunk(t0 + IDLE_FLUSH).unwrap();
        assert_eq!(c.bytes.len(), 3200, "padded to the minimum");
        assert!(c.bytes[1000..].iter().all(|b| *b == 0));
    }

    #[test]
    fn a_chunk_never_spans_two_replies() {
        let t0 = Instant::now();
        let mut o = Outbound::new(RULES, 8000, Duration::from_secs(60));
        o.push(&vec![1u8; 1000], t0);
        o.reply_ended();
        o.push(&vec![2u8; 6400], t0);
        o.reply_ended();
        let mut now = t0;
        let mut chunks = Vec::new();
        for _ in 0..20 {
            while let Some(c) = o.next_chunk(now) {
                chunks.push(c.bytes.to_vec());
            }
            now += ms(100);
        }
        assert_eq!(chunks.len(), 3);
        assert!(
            chunks[0][..1000].iter().all(|b| *b == 1) && chunks[0][1000..].iter().all(|b| *b == 0)
        );
        assert!(chunks[1].iter().all(|b| *b == 2));
        assert!(chunks[2].iter().all(|b| *b == 2));
    }

    #[test]
    fn marks_tell_how_much_of_the_reply_was_heard() {
        let t0 = Instant::now();
        let mut o = Outbound::new(RULES, 8000, Duration::from_secs(60));
        o.push(&vec![0u8; 16_000], t0); // 1 s
        let names: Vec<String> =
            std::iter::from_fn(|| o.next_chunk(t0).map(|c| c.mark.to_owned())).collect();
        assert_eq!(names, ["caly-1", "caly-2"]);
        assert_eq!(o.heard(t0), Duration::ZERO);
        assert_eq!(
            o.heard(t0 + ms(50)),
            ms(50),
            "before any echo: time since the first chunk"
        );
        assert!(o.on_mark("caly-1", t0 + ms(200)));
        assert_eq!(o.heard(t0 + ms(200)), ms(200));
        assert_eq!(
            o.heard(t0 + ms(250)),
            ms(250),
            "time since the last echo counts"
        );
        assert_eq!(o.heard(t0 + ms(900)), ms(400), "never more than was sent");
        assert!(!o.on_mark("somebody-else", t0));
        assert!(!o.on_mark("caly-99", t0), "a mark we never sent");
    }

    #[test]
    fn the_newest_reply_is_ready_once_its_first_chunk_is_formed_whatever_plays_before_it() {
        let t0 = Instant::now();
        let mut o = Outbound::new(RULES, 8000, Duration::from_secs(60));
        assert!(!o.newest_reply_ready(t0), "nothing queued");
        // A first reply, 1.2 s, ends; most of it is still queued behind the pacer.
        o.push(&vec![0u8; 19_200], t0);
        o.reply_ended();
        drain(&mut o, t0);
        assert!(o.queued() > Duration::ZERO);
        // The next reply's first 100 ms: not a chunk yet (3,200 bytes at 8 kHz).
        o.push(&vec![0u8; 1600], t0 + ms(5));
        assert!(!o.newest_reply_ready(t0 + ms(5)));
        // Its next 100 ms: a chunk, ready though the pacer holds it behind the first reply.
        o.push(&vec![0u8; 1600], t0 + ms(6));
        assert!(o.newest_reply_ready(t0 + ms(6)));
        assert!(o.next_chunk(t0 + ms(6)).is_none(), "the pacer holds it");
        // A short reply that has ended is ready as its padded tail.
        let mut o = Outbound::new(RULES, 8000, Duration::from_secs(60));
        o.push(&vec![0u8; 800], t0);
        assert!(!o.newest_reply_ready(t0));
        o.reply_ended();
        assert!(o.newest_reply_ready(t0));
    }

    #[test]
    fn clear_drops_the_queue_and_starts_a_new_reply() {
        let t0 = Instant::now();
        let mut o = Outbound::new(RULES, 8000, Duration::from_secs(60));
        o.push(&vec![0u8; 16_000], t0);
        drain(&mut o, t0);
        assert!(o.is_playing(t0));
        assert_eq!(o.clear(t0 + ms(10)), 16_000 - 6400);
        assert!(!o.is_playing(t0 + ms(10)));
        o.push(&vec![0u8; 3200], t0 + ms(20));
        assert!(o.next_chunk(t0 + ms(20)).is_some());
        assert_eq!(
            o.heard(t0 + ms(20)),
            Duration::ZERO,
            "the new reply has not been heard"
        );
    }

    #[test]
    fn a_reply_that_arrives_slower_than_real_time_underruns() {
        let t0 = Instant::now();
        let mut o = Outbound::new(RULES, 8000, Duration::from_secs(60));
        o.push(&[0u8; 3200], t0);
        assert!(o.next_chunk(t0).is_some());
        // The next 200 ms of the same reply arrives 300 ms later: the caller heard a gap.
        o.push(&[0u8; 3200], t0 + ms(300));
        assert!(o.next_chunk(t0 + ms(300)).is_some());
        assert_eq!(o.underruns(), 1);
    }

    #[test]
    fn a_runaway_producer_is_capped_and_counted() {
        let mut o = Outbound::new(RULES, 8000, Duration::from_secs(1));
        o.push(&vec![0u8; 40_000], Instant::now());
        assert_eq!(o.queued(), Duration::from_secs(1));
        assert_eq!(o.dropped(), 40_000 - 16_000);
    }

    #[test]
    fn itoa_writes_numbers() {
        let mut b = [0u8; 20];
        assert_eq!(itoa(0, &mut b), "0");
        assert_eq!(itoa(1234567890123, &mut [0u8; 20]), "1234567890123");
        assert_eq!(itoa(u64::MAX, &mut [0u8; 20]), "18446744073709551615");
    }
}
