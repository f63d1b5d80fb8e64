//! What the store is told. A batch of [`Record`]s (from the recorder) and each [`Webhook`] is
//! one transaction. Every write is idempotent and order-tolerant: a status callback may come
//! before, during or after the stream, a batch may be retried after a failure half-way, and the
//! call row converges to the same state whatever the order (a terminal status is never
//! regressed).

use sqlx::{Any, Transaction};

use crate::vocab::AgentName;

use super::{Store, StoreError};

/// Call statuses that end a call; once a row has one, only Exotel's own terminal status may
/// replace it.
const TERMINAL: &str = "('completed', 'failed', 'busy', 'no-answer', 'canceled')";

/// Whether `status` ends a call.
pub fn is_terminal(status: &str) -> bool {
    matches!(
        status,
        "completed" | "failed" | "busy" | "no-answer" | "canceled"
    )
}

/// One fact about a call, as the recorder queues it.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// The media stream began.
    CallStarted {
        /// The call's id (see [`super::call_id_for_sid`]).
        id: String,
        /// Exotel's CallSid.
        call_sid: Option<String>,
        /// Exotel's StreamSid.
        stream_sid: Option<String>,
        /// The caller, normalized.
        from: Option<String>,
        /// The number called, normalized.
        to: Option<String>,
        /// `inbound` / `outbound`.
        direction: Option<String>,
        /// The pipeline's name.
        pipeline: String,
        /// When, in epoch ms.
        at_ms: i64,
    },
    /// A final transcript segment.
    Segment {
        /// The call.
        call_id: String,
        /// Its order in the call (from 0).
        seq: i64,
        /// `caller` or `bot`.
        speaker: &'static str,
        /// The words.
        text: String,
        /// Where it starts in the call.
        pts_ms: i64,
        /// When it was heard, epoch ms.
        at_ms: i64,
    },
    /// An intent classified from a final caller segment.
    Intent {
        /// The call.
        call_id: String,
        /// Its order in the call (from 0).
        seq: i64,
        /// The intent's name.
        intent: String,
        /// Probability it is right.
        confidence: f64,
        /// Entities as a JSON object.
        entities: String,
        /// Confident enough to act on.
        accepted: bool,
        /// Epoch ms.
        at_ms: i64,
    },
    /// An agent acted or tried to; the same `key` again updates the row.
    Action {
        /// The call.
        call_id: String,
        /// The agent.
        action: String,
        /// The order concerned.
        order: Option<String>,
        /// Idempotency key.
        key: String,
        /// `done`, `needs_confirmation`, `failed`, …
        status: String,
        /// What happened.
        detail: String,
        /// Epoch ms.
        at_ms: i64,
    },
    /// One turn's latency ledger.
    Turn {
        /// The call.
        call_id: String,
        /// Its order in the call (from 0).
        seq: i64,
        /// Caller stopped → first model audio.
        model_ms: f64,
        /// First model audio → first chunk sent.
        engine_ms: f64,
        /// Caller stopped → first chunk sent.
        v2v_sent_ms: f64,
        /// Caller stopped → first chunk played, if Exotel echoed the mark.
        v2v_played_ms: Option<f64>,
        /// Epoch ms.
        at_ms: i64,
    },
    /// Something on the call's timeline besides its words: a barge-in, a keypad entry, a
    /// hand-off, a filler, a silent-caller prompt, a tool call.
    CallEvent {
        /// The call.
        call_id: String,
        /// Its order in the call (from 0).
        seq: i64,
        /// `barge_in`, `keypad`, `hand_off`, `filler`, `idle_prompt`, `tool_call`.
        kind: &'static str,
        /// Where it happened in the call.
        pts_ms: i64,
        /// What it was (the keys, the tool, the reason), short.
        detail: String,
        /// Epoch ms.
        at_ms: i64,
    },
    /// The stream ended: finalises the call row.
    CallEnded {
        /// The call.
        id: String,
        /// Exotel's CallSid (creates the row if its start was lost).
        call_sid: Option<String>,
        /// Epoch ms.
        ended_at_ms: i64,
        /// How long the stream lasted.
        duration_ms: i64,
        /// Why it ended (`hangup`, `idle_timeout`, …).
        end_reason: String,
        /// Turns the bot answered.
        turns: i64,
        /// Times the caller interrupted.
        barge_ins: i64,
        /// Median voice-to-voice latency.
        v2v_p50_ms: Option<i64>,
        /// Worst voice-to-voice latency.
        v2v_max_ms: Option<i64>,
        /// The model's tokens over the call.
        usage: crate::engine::frame::TokenUse,
        /// What they cost, in dollars.
        cost_usd: f64,
    },
}

impl Record {
    /// Whether the recorder should write now rather than wait for its batch to fill.
    pub fn flushes_now(&self) -> bool {
        matches!(self, Record::CallEnded { .. })
    }
}

/// Which Exotel callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookKind {
    /// `POST /v1/exotel/status`.
    Status,
    /// `GET|POST /v1/exotel/passthru`.
    Passthru,
}

impl WebhookKind {
    /// `status` or `passthru`.
    pub fn label(self) -> &'static str {
        match self {
            WebhookKind::Status => "status",
            WebhookKind::Passthru => "passthru",
        }
    }
}

/// An Exotel callback, parsed (see `http::webhooks`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Webhook {
    /// Which callback (`None` only in `Default`).
    pub kind: Option<WebhookKind>,
    /// Exotel's CallSid.
    pub call_sid: String,
    /// The same event delivered twice has the same key.
    pub dedupe_key: String,
    /// Every field received, as a JSON object.
    pub payload: String,
    /// The call's status, if the callback says.
    pub status: Option<String>,
    /// Exotel says the call is over: its status replaces ours.
    pub terminal: bool,
    /// Caller, normalized.
    pub from: Option<String>,
    /// Number called, normalized.
    pub to: Option<String>,
    /// Direction as Exotel names it.
    pub direction: Option<String>,
    /// Exotel's StreamSid, if given.
    pub stream_sid: Option<String>,
    /// When the call started, if the callback says.
    pub started_at_ms: Option<i64>,
    /// When the call ended, if the callback says.
    pub ended_at_ms: Option<i64>,
    /// How long the call or stream lasted, if the callback says.
    pub duration_ms: Option<i64>,
    /// Seconds both parties were connected.
    pub conversation_s: Option<i64>,
    /// The recording.
    pub recording_url: Option<String>,
    /// Our id, if we put it in CustomField.
    pub custom_field: Option<String>,
    /// When it arrived, epoch ms.
    pub received_ms: i64,
}

/// What a webhook did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// First delivery: stored and applied to the call.
    Applied,
    /// Seen before: nothing changed.
    Duplicate,
}

impl WebhookOutcome {
    /// `applied` or `duplicate` (the answer's `status` and the metric label).
    pub fn label(self) -> &'static str {
        match self {
            WebhookOutcome::Applied => "applied",
            WebhookOutcome::Duplicate => "duplicate",
        }
    }
}

impl Store {
    /// Writes a batch in one transaction. Safe to retry after a failure: every statement is an
    /// upsert or ignores rows already there.
    pub async fn write_batch(&self, records: &[Record]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        self.count_query();
        let (mut tx, _turn) = self.begin_write().await?;
        for record in records {
            self.count_query();
            write_record(&mut tx, record).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Keeps the raw event and applies it to the call, once: a second delivery of the same
    /// event changes nothing.
    pub async fn apply_webhook(&self, hook: &Webhook) -> Result<WebhookOutcome, StoreError> {
        let kind = hook.kind.map_or("unknown", WebhookKind::label);
        let id = super::call_id_for_sid(&hook.call_sid);
        self.count_query();
        let (mut tx, _turn) = self.begin_write().await?;
        self.count_query();
        let inserted = sqlx::query(
            "INSERT INTO webhook_events (kind, dedupe_key, call_sid, payload, received_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (dedupe_key) DO NOTHING",
        )
        .bind(kind)
        .bind(&hook.dedupe_key)
        .bind(&hook.call_sid)
        .bind(&hook.payload)
        .bind(hook.received_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            return Ok(WebhookOutcome::Duplicate);
        }
        self.count_query();
        let sql = format!(
            "INSERT INTO calls (id, call_sid, stream_sid, from_number, to_number, direction, status,
                 started_at, ended_at, duration_ms, conversation_s, recording_url, custom_field, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, COALESCE($7, 'in-progress'), $8, $9, $10, $11, $12, $13, $14)
             ON CONFLICT (id) DO UPDATE SET
                 call_sid = COALESCE(calls.call_sid, excluded.call_sid),
                 stream_sid = COALESCE(calls.stream_sid, excluded.stream_sid),
                 from_number = COALESCE(calls.from_number, excluded.from_number),
                 to_number = COALESCE(calls.to_number, excluded.to_number),
                 direction = COALESCE(calls.direction, excluded.direction),
                 status = CASE WHEN $15 = 1 THEN excluded.status
                               WHEN calls.status IN {TERMINAL} THEN calls.status
                               WHEN $16 = 0 THEN calls.status
                               ELSE excluded.status END,
                 started_at = CASE WHEN $17 = 1 AND excluded.started_at < calls.started_at
                                   THEN excluded.started_at ELSE calls.started_at END,
                 ended_at = COALESCE(calls.ended_at, excluded.ended_at),
                 duration_ms = COALESCE(calls.duration_ms, excluded.duration_ms),
                 conversation_s = COALESCE(excluded.conversation_s, calls.conversation_s),
                 recording_url = CASE WHEN calls.erased_at IS NOT NULL THEN NULL
                                      ELSE COALESCE(excluded.recording_url, calls.recording_url) END,
                 custom_field = CASE WHEN calls.erased_at IS NOT NULL THEN NULL
                                     ELSE COALESCE(excluded.custom_field, calls.custom_field) END,
                 updated_at = excluded.updated_at"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&id)
            .bind(&hook.call_sid)
            .bind(&hook.stream_sid)
            .bind(&hook.from)
            .bind(&hook.to)
            .bind(&hook.direction)
            .bind(&hook.status)
            .bind(hook.started_at_ms.unwrap_or(hook.received_ms))
            .bind(hook.ended_at_ms)
            .bind(hook.duration_ms)
            .bind(hook.conversation_s)
            .bind(&hook.recording_url)
            .bind(&hook.custom_field)
            .bind(hook.received_ms)
            .bind(i64::from(hook.terminal && hook.status.is_some()))
            .bind(i64::from(hook.status.is_some()))
            .bind(i64::from(hook.started_at_ms.is_some()))
            .execute(&mut *tx)
            .await?;
        // A callback arriving after its call was erased keeps no personal data either.
        self.count_query();
        sqlx::query(
            "UPDATE webhook_events SET payload = '{}' WHERE dedupe_key = $1 AND EXISTS \
             (SELECT 1 FROM calls WHERE calls.id = $2 AND calls.erased_at IS NOT NULL)",
        )
        .bind(&hook.dedupe_key)
        .bind(&id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(WebhookOutcome::Applied)
    }
}

/// A token count as the database's BIGINT.
fn tokens(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

async fn write_record(tx: &mut Transaction<'_, Any>, record: &Record) -> Result<(), StoreError> {
    match record {
        Record::CallStarted {
            id,
            call_sid,
            stream_sid,
            from,
            to,
            direction,
            pipeline,
            at_ms,
        } => {
            let sql = format!(
                "INSERT INTO calls (id, call_sid, stream_sid, from_number, to_number, direction,
                     status, pipeline, started_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, 'in-progress', $7, $8, $8)
                 ON CONFLICT (id) DO UPDATE SET
                     call_sid = COALESCE(calls.call_sid, excluded.call_sid),
                     stream_sid = excluded.stream_sid,
                     from_number = COALESCE(calls.from_number, excluded.from_number),
                     to_number = COALESCE(calls.to_number, excluded.to_number),
                     direction = COALESCE(calls.direction, excluded.direction),
                     pipeline = excluded.pipeline,
                     status = CASE WHEN calls.status IN {TERMINAL} THEN calls.status
                                   ELSE 'in-progress' END,
                     started_at = CASE WHEN excluded.started_at < calls.started_at
                                       THEN excluded.started_at ELSE calls.started_at END,
                     updated_at = excluded.updated_at"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .bind(call_sid)
                .bind(stream_sid)
                .bind(from)
                .bind(to)
                .bind(direction)
                .bind(pipeline)
                .bind(at_ms)
                .execute(&mut **tx)
                .await?;
        }
        Record::Segment {
            call_id,
            seq,
            speaker,
            text,
            pts_ms,
            at_ms,
        } => {
            sqlx::query(
                // Nothing is written into a call that has been erased.
                "INSERT INTO transcript_segments (call_id, seq, speaker, text, pts_ms, created_at)
                 SELECT $1, $2, $3, $4, $5, $6 WHERE NOT EXISTS
                     (SELECT 1 FROM calls WHERE id = $1 AND erased_at IS NOT NULL)
                 ON CONFLICT (call_id, seq) DO NOTHING",
            )
            .bind(call_id)
            .bind(seq)
            .bind(*speaker)
            .bind(text)
            .bind(pts_ms)
            .bind(at_ms)
            .execute(&mut **tx)
            .await?;
        }
        Record::Intent {
            call_id,
            seq,
            intent,
            confidence,
            entities,
            accepted,
            at_ms,
        } => {
            sqlx::query(
                "INSERT INTO intents (call_id, seq, intent, confidence, entities, accepted, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (call_id, seq) DO NOTHING",
            )
            .bind(call_id)
            .bind(seq)
            .bind(intent)
            .bind(confidence)
            .bind(entities)
            .bind(i64::from(*accepted))
            .bind(at_ms)
            .execute(&mut **tx)
            .await?;
        }
        Record::Action {
            call_id,
            action,
            order,
            key,
            status,
            detail,
            at_ms,
        } => {
            sqlx::query(
                "INSERT INTO actions (call_id, action, order_name, idem_key, status, detail,
                     created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
                 ON CONFLICT (idem_key) DO UPDATE SET
                     order_name = COALESCE(excluded.order_name, actions.order_name),
                     status = CASE WHEN actions.status = 'done' THEN actions.status
                                   ELSE excluded.status END,
                     detail = CASE WHEN actions.status = 'done' THEN actions.detail
                                   ELSE excluded.detail END,
                     updated_at = excluded.updated_at",
            )
            .bind(call_id)
            .bind(action)
            .bind(order)
            .bind(key)
            .bind(status)
            .bind(detail)
            .bind(at_ms)
            .execute(&mut **tx)
            .await?;
            // The caller asked for a person: the call is not contained (a KPI read per call,
            // so it lives on the call row rather than in a join at read time).
            if action == AgentName::TalkToHuman.name() {
                sqlx::query("UPDATE calls SET handed_off = 1 WHERE id = $1")
                    .bind(call_id)
                    .execute(&mut **tx)
                    .await?;
            }
        }
        Record::Turn {
            call_id,
            seq,
            model_ms,
            engine_ms,
            v2v_sent_ms,
            v2v_played_ms,
            at_ms,
        } => {
            sqlx::query(
                "INSERT INTO turns (call_id, seq, model_ms, engine_ms, v2v_sent_ms, v2v_played_ms,
                     created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (call_id, seq) DO NOTHING",
            )
            .bind(call_id)
            .bind(seq)
            .bind(model_ms)
            .bind(engine_ms)
            .bind(v2v_sent_ms)
            .bind(v2v_played_ms)
            .bind(at_ms)
            .execute(&mut **tx)
            .await?;
        }
        Record::CallEvent {
            call_id,
            seq,
            kind,
            pts_ms,
            detail,
            at_ms,
        } => {
            sqlx::query(
                "INSERT INTO call_events (call_id, seq, kind, pts_ms, detail, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (call_id, seq) DO NOTHING",
            )
            .bind(call_id)
            .bind(seq)
            .bind(kind)
            .bind(pts_ms)
            .bind(detail)
            .bind(at_ms)
            .execute(&mut **tx)
            .await?;
        }
        Record::CallEnded {
            id,
            call_sid,
            ended_at_ms,
            duration_ms,
            end_reason,
            turns,
            barge_ins,
            v2v_p50_ms,
            v2v_max_ms,
            usage,
            cost_usd,
        } => {
            let sql = format!(
                "INSERT INTO calls (id, call_sid, status, started_at, ended_at, duration_ms,
                     end_reason, turns, barge_ins, v2v_p50_ms, v2v_max_ms, updated_at,
                     text_in_tokens, text_in_cached_tokens, audio_in_tokens,
                     audio_in_cached_tokens, text_out_tokens, audio_out_tokens, cost_usd)
                 VALUES ($1, $2, 'completed', $3, $4, $5, $6, $7, $8, $9, $10, $4,
                     $11, $12, $13, $14, $15, $16, $17)
                 ON CONFLICT (id) DO UPDATE SET
                     status = CASE WHEN calls.status IN {TERMINAL} THEN calls.status
                                   ELSE 'completed' END,
                     ended_at = excluded.ended_at,
                     duration_ms = excluded.duration_ms,
                     end_reason = excluded.end_reason,
                     turns = excluded.turns,
                     barge_ins = excluded.barge_ins,
                     v2v_p50_ms = excluded.v2v_p50_ms,
                     v2v_max_ms = excluded.v2v_max_ms,
                     text_in_tokens = excluded.text_in_tokens,
                     text_in_cached_tokens = excluded.text_in_cached_tokens,
                     audio_in_tokens = excluded.audio_in_tokens,
                     audio_in_cached_tokens = excluded.audio_in_cached_tokens,
                     text_out_tokens = excluded.text_out_tokens,
                     audio_out_tokens = excluded.audio_out_tokens,
                     cost_usd = excluded.cost_usd,
                     updated_at = excluded.updated_at"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .bind(call_sid)
                .bind(ended_at_ms - duration_ms)
                .bind(ended_at_ms)
                .bind(duration_ms)
                .bind(end_reason)
                .bind(turns)
                .bind(barge_ins)
                .bind(v2v_p50_ms)
                .bind(v2v_max_ms)
                .bind(tokens(usage.text_in))
                .bind(tokens(usage.text_in_cached))
                .bind(tokens(usage.audio_in))
                .bind(tokens(usage.audio_in_cached))
                .bind(tokens(usage.text_out))
                .bind(tokens(usage.audio_out))
                .bind(if cost_usd.is_finite() { *cost_usd } else { 0.0 })
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}
