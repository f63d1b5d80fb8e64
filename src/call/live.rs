//! Calls in progress, as the console's live view shows them: each call's controller keeps its
//! entry on the [`LiveBoard`] (who is speaking, the latest intent, barge-ins, turns) and the
//! board tells its subscribers ([`LiveEvent`]s, over a bounded broadcast: a subscriber that
//! falls behind starts again from [`LiveBoard::snapshot`]).
//!
//! One instance sees its own calls. With several instances on one PostgreSQL database, each
//! board also relays its events through `LISTEN/NOTIFY` ([`relay`]) and takes in the other
//! instances'; an instance re-announces its calls every [`BEAT`], and a call from another
//! instance that has not been heard of for [`REMOTE_TTL`] (its instance died) is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// Most calls a board shows (its own calls are capped by admission well below this).
pub const MAX_LIVE: usize = 10_000;
/// Events a subscriber may fall behind by before it has to start again from a snapshot.
const SUBSCRIBER_BACKLOG: usize = 1_024;
/// Events waiting to be relayed to other instances; beyond, they are dropped (the next beat
/// repairs the other instances' view).
const RELAY_QUEUE: usize = 1_024;
/// How often an instance re-announces its calls to the others.
pub const BEAT: Duration = Duration::from_secs(5);
/// A call from another instance not heard of for this long is dropped.
pub const REMOTE_TTL: Duration = Duration::from_secs(15);
/// The PostgreSQL channel live events travel on.
pub const CHANNEL: &str = "caly_live";
/// Longest event text taken from the channel (PostgreSQL's own limit is 8000 bytes).
const MAX_EVENT_TEXT: usize = 8_000;

/// What a call is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Activity {
    /// Nobody is speaking: the bot waits for the caller.
    Listening,
    /// The caller is speaking.
    CallerSpeaking,
    /// The bot's reply is being made, sent or played.
    BotSpeaking,
    /// The model asked for a tool (an agent) and waits for its answer.
    ToolRunning,
}

/// A call in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LiveCall {
    /// The call's record id (what `GET /v1/calls/{id}` takes), or its CallSid when the server
    /// keeps no records.
    pub id: String,
    /// Exotel's CallSid.
    pub call_sid: Option<String>,
    /// The caller's number, masked as the logs mask it (`…3210`: its last four digits).
    pub caller: Option<String>,
    /// RFC 3339.
    pub started_at: String,
    /// What the call is doing now.
    pub activity: Activity,
    /// The latest intent classified from a final caller utterance.
    pub intent: Option<String>,
    /// Its confidence.
    pub intent_confidence: Option<f32>,
    /// Times the caller has interrupted the bot.
    pub barge_ins: u32,
    /// Turns the bot has answered.
    pub turns: u32,
    /// The server instance the call is on.
    pub instance: String,
}

/// A change on the board.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LiveEvent {
    /// A call started or changed: its whole entry.
    Call {
        /// The entry.
        call: LiveCall,
    },
    /// A call ended.
    Ended {
        /// Its id.
        id: String,
        /// Its instance.
        instance: String,
        /// Why (`hangup`, `completed_by_bot`, …; `lost` when its instance stopped reporting).
        end_reason: String,
    },
}

impl LiveEvent {
    fn instance(&self) -> &str {
        match self {
            LiveEvent::Call { call } => &call.instance,
            LiveEvent::Ended { instance, .. } => instance,
        }
    }
}

struct Entry {
    call: LiveCall,
    seen: Instant,
}

/// The calls in progress that this instance knows of, and who to tell when they change.
pub struct LiveBoard {
    instance: Arc<str>,
    calls: Mutex<HashMap<String, Entry>>,
    events: broadcast::Sender<LiveEvent>,
    relay: OnceLock<mpsc::Sender<String>>,
    closed: CancellationToken,
}

impl LiveBoard {
    /// A board for instance `instance`.
    pub fn new(instance: impl Into<Arc<str>>) -> Arc<LiveBoard> {
        Arc::new(LiveBoard {
            instance: instance.into(),
            calls: Mutex::default(),
            events: broadcast::channel(SUBSCRIBER_BACKLOG).0,
            relay: OnceLock::new(),
            closed: CancellationToken::new(),
        })
    }

    /// A board named by a new random instance id.
    pub fn for_this_process() -> Arc<LiveBoard> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        LiveBoard::new(id.get(..8).unwrap_or("instance").to_owned())
    }

    /// This instance's id.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Every call on the board, oldest first.
    pub fn snapshot(&self) -> Vec<LiveCall> {
        let Ok(calls) = self.calls.lock() else {
            return Vec::new();
        };
        let mut list: Vec<LiveCall> = calls.values().map(|e| e.call.clone()).collect();
        list.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
        list
    }

    /// Events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<LiveEvent> {
        self.events.subscribe()
    }

    /// Cancelled when the server stops: live streams end.
    pub fn closed(&self) -> CancellationToken {
        self.closed.clone()
    }

    /// Ends every live stream.
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// One of this instance's calls started, changed or ended.
    pub fn publish(&self, event: LiveEvent) {
        if !self.apply(&event) {
            return;
        }
        if let Some(relay) = self.relay.get()
            && let Ok(text) = serde_json::to_string(&event)
        {
            // Full: dropped; the next beat re-announces the call.
            let _ = relay.try_send(text);
        }
        let _ = self.events.send(event);
    }

    /// An event another instance relayed (its text as received). Ours, malformed or
    /// oversized ones are ignored.
    pub fn receive(&self, text: &str) {
        if text.len() > MAX_EVENT_TEXT {
            return;
        }
        let Ok(event) = serde_json::from_str::<LiveEvent>(text) else {
            tracing::debug!("Ignoring a malformed live event from the channel.");
            return;
        };
        if event.instance() == &*self.instance {
            return;
        }
        if self.apply(&event) {
            let _ = self.events.send(event);
        }
    }

    /// Puts the event on the board; `false` if it changes nothing worth telling (a new call
    /// beyond [`MAX_LIVE`], the end of a call not on the board).
    fn apply(&self, event: &LiveEvent) -> bool {
        let Ok(mut calls) = self.calls.lock() else {
            return false;
        };
        match event {
            LiveEvent::Call { call } => {
                if !calls.contains_key(&call.id) && calls.len() >= MAX_LIVE {
                    return false;
                }
                calls.insert(
                    call.id.clone(),
                    Entry {
                        call: call.clone(),
                        seen: Instant::now(),
                    },
                );
                true
            }
            LiveEvent::Ended { id, .. } => {
                let removed = calls.remove(id).is_some();
                // Memory by need: after a burst of calls the map gives back what it grew to.
                let left = calls.len();
                if calls.capacity() > 64 && left * 4 < calls.capacity() {
                    calls.shrink_to(left * 2);
                }
                removed
            }
        }
    }

    /// Re-announces this instance's calls to the others, and drops the calls of instances
    /// not heard of for [`REMOTE_TTL`] (telling subscribers they were lost).
    pub fn beat(&self, now: Instant) {
        let (mine, lost) = {
            let Ok(mut calls) = self.calls.lock() else {
                return;
            };
            let mine: Vec<LiveCall> = calls
                .values()
                .filter(|e| e.call.instance == *self.instance)
                .map(|e| e.call.clone())
                .collect();
            let mut lost = Vec::new();
            calls.retain(|id, e| {
                let keep = e.call.instance == *self.instance
                    || now.saturating_duration_since(e.seen) < REMOTE_TTL;
                if !keep {
                    lost.push((id.clone(), e.call.instance.clone()));
                }
                keep
            });
            (mine, lost)
        };
        if let Some(relay) = self.relay.get() {
            for call in mine {
                if let Ok(text) = serde_json::to_string(&LiveEvent::Call { call }) {
                    let _ = relay.try_send(text);
                }
            }
        }
        for (id, instance) in lost {
            let _ = self.events.send(LiveEvent::Ended {
                id,
                instance,
                end_reason: "lost".into(),
            });
        }
    }

    /// Relays this board's events to the other instances through `queue` (bounded, never
    /// waited on); set once.
    fn relay_through(&self) -> Option<mpsc::Receiver<String>> {
        let (tx, rx) = mpsc::channel(RELAY_QUEUE);
        self.relay.set(tx).ok().map(|()| rx)
    }
}

/// One call's entry as its controller keeps it: changes are gathered and published by
/// [`Tracked::flush`], only when something changed.
pub(crate) struct Tracked {
    board: Arc<LiveBoard>,
    call: LiveCall,
    dirty: bool,
}

impl Tracked {
    /// The call `id` has started: it is on the board at once.
    pub(crate) fn start(
        board: Arc<LiveBoard>,
        id: String,
        call_sid: Option<String>,
        caller: Option<&str>,
    ) -> Tracked {
        let call = LiveCall {
            id,
            call_sid,
            caller: caller
                .and_then(crate::vocab::normalize_number)
                .map(|n| crate::vocab::masked_phone(&n)),
            started_at: crate::store::read::rfc3339(crate::store::now_ms()),
            activity: Activity::Listening,
            intent: None,
            intent_confidence: None,
            barge_ins: 0,
            turns: 0,
            instance: board.instance().to_owned(),
        };
        board.publish(LiveEvent::Call { call: call.clone() });
        Tracked {
            board,
            call,
            dirty: false,
        }
    }

    /// What the call is doing now.
    pub(crate) fn activity(&mut self, activity: Activity) {
        if self.call.activity != activity {
            self.call.activity = activity;
            self.dirty = true;
        }
    }

    /// The latest final intent.
    pub(crate) fn intent(&mut self, intent: &str, confidence: f32) {
        self.call.intent = Some(intent.to_owned());
        self.call.intent_confidence = Some(confidence);
        self.dirty = true;
    }

    /// The caller interrupted the bot.
    pub(crate) fn barge_in(&mut self) {
        self.call.barge_ins += 1;
        self.dirty = true;
    }

    /// The bot answered a turn.
    pub(crate) fn turn(&mut self) {
        self.call.turns += 1;
        self.dirty = true;
    }

    /// Publishes the entry if it changed.
    pub(crate) fn flush(&mut self) {
        if std::mem::take(&mut self.dirty) {
            self.board.publish(LiveEvent::Call {
                call: self.call.clone(),
            });
        }
    }

    /// The call ended: off the board.
    pub(crate) fn end(self, end_reason: &str) {
        self.board.publish(LiveEvent::Ended {
            id: self.call.id,
            instance: self.call.instance,
            end_reason: end_reason.to_owned(),
        });
    }
}

/// Shares the board with every instance on the PostgreSQL database at `url` until the board
/// closes: this instance's events are published with `NOTIFY`, the others' are taken with
/// `LISTEN` (reconnecting with backoff if the connection drops), and the calls are
/// re-announced every [`BEAT`].
pub async fn relay(board: Arc<LiveBoard>, store: Store, url: String) {
    let Some(outgoing) = board.relay_through() else {
        return;
    };
    let closed = board.closed();
    let incoming = {
        let board = Arc::clone(&board);
        async move { store_listen(&url, &board).await }
    };
    let beat = {
        let board = Arc::clone(&board);
        async move {
            let mut tick = tokio::time::interval(BEAT);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                board.beat(Instant::now());
            }
        }
    };
    tokio::select! {
        () = closed.cancelled() => {}
        () = store.notify_all(CHANNEL, outgoing) => {}
        () = incoming => {}
        () = beat => {}
    }
}

async fn store_listen(url: &str, board: &LiveBoard) {
    crate::store::listen(url, CHANNEL, |text| board.receive(text)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: &str, instance: &str) -> LiveCall {
        LiveCall {
            id: id.into(),
            call_sid: Some(format!("sid-{id}")),
            caller: Some("…3210".into()),
            started_at: "2026-12-04T10:00:00Z".into(),
            activity: Activity::Listening,
            intent: None,
            intent_confidence: None,
            barge_ins: 0,
            turns: 0,
            instance: instance.into(),
        }
    }

    #[tokio::test]
    async fn a_board_shows_a_call_until_it_ends_and_tells_subscribers() {
        let board = LiveBoard::new("a");
        let mut events = board.subscribe();
        board.publish(LiveEvent::Call {
            call: call("1", "a"),
        });
        assert_eq!(board.snapshot().len(), 1);
        assert!(matches!(events.recv().await, Ok(LiveEvent::Call { .. })));
        board.publish(LiveEvent::Ended {
            id: "1".into(),
            instance: "a".into(),
            end_reason: "hangup".into(),
        });
        assert!(board.snapshot().is_empty());
        assert!(matches!(events.recv().await, Ok(LiveEvent::Ended { .. })));
        // The end of a call the board never had is not news.
        board.publish(LiveEvent::Ended {
            id: "2".into(),
            instance: "a".into(),
            end_reason: "hangup".into(),
        });
        assert!(events.try_recv().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn other_instances_calls_are_taken_in_and_dropped_when_their_instance_goes_quiet() {
        let board = LiveBoard::new("a");
        let theirs = serde_json::to_string(&LiveEvent::Call {
            call: call("9", "b"),
        })
        .unwrap();
        let ours = serde_json::to_string(&LiveEvent::Call {
            call: call("8", "a"),
        })
        .unwrap();
        board.receive(&theirs);
        board.receive(&ours); // our own event, come back through the channel: ignored
        board.receive("{not json");
        board.receive(&"x".repeat(MAX_EVENT_TEXT + 1));
        assert_eq!(
            board
                .snapshot()
                .iter()
                .map(|c| c.id.as_str())
                .collect::<Vec<_>>(),
            ["9"]
        );
        board.publish(LiveEvent::Call {
            call: call("1", "a"),
        });
        let mut events = board.subscribe();
        tokio::time::advance(REMOTE_TTL / 2).await;
        board.beat(Instant::now());
        assert_eq!(board.snapshot().len(), 2, "still fresh");
        tokio::time::advance(REMOTE_TTL).await;
        board.beat(Instant::now());
        let left: Vec<String> = board.snapshot().into_iter().map(|c| c.id).collect();
        assert_eq!(left, ["1"], "our own calls never expire; theirs do");
        match events.try_recv() {
            Ok(LiveEvent::Ended { id, end_reason, .. }) => {
                assert_eq!((id.as_str(), end_reason.as_str()), ("9", "lost"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_full_board_takes_no_new_calls_but_still_updates_the_ones_it_has() {
        let board = LiveBoard::new("a");
        for i in 0..MAX_LIVE {
            board.apply(&LiveEvent::Call {
                call: call(&i.to_string(), "a"),
            });
        }
        assert!(!board.apply(&LiveEvent::Call {
            call: call("one more", "a"),
        }));
        let mut changed = call("5", "a");
        changed.turns = 3;
        assert!(board.apply(&LiveEvent::Call { call: changed }));
        assert_eq!(board.snapshot().len(), MAX_LIVE);
    }
}
