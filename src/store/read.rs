//! What the REST API asks. Every answer is a fixed number of queries, whatever the data:
//! lists are keyset-paginated on `(time DESC, id DESC)` and filtered in SQL; a call's detail is
//! six queries (the call, its transcript, intents, actions, turns, events); KPIs are SQL aggregates.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row as _};

use super::{Store, StoreError};

/// Most segments a transcript answer carries (a 60-minute call has far fewer).
pub const MAX_SEGMENTS: i64 = 10_000;
/// Most intents or actions a call's detail carries.
const MAX_PER_CALL: i64 = 1_000;

/// A query being built: SQL text with `$n` placeholders and the values in order.
#[derive(Default)]
struct Sql {
    text: String,
    args: Vec<Arg>,
}

enum Arg {
    Int(i64),
    Text(String),
}

impl Sql {
    fn new(text: &str) -> Sql {
        Sql {
            text: text.to_owned(),
            args: Vec::new(),
        }
    }

    /// Appends `clause`, with each `{}` replaced by the next argument's placeholder.
    fn push(&mut self, clause: &str, args: impl IntoIterator<Item = Arg>) -> &mut Sql {
        let mut parts = clause.split("{}");
        if let Some(first) = parts.next() {
            self.text.push_str(first);
        }
        let mut args = args.into_iter();
        for part in parts {
            if let Some(arg) = args.next() {
                self.args.push(arg);
            }
            self.text.push_str(&format!("${}", self.args.len()));
            self.text.push_str(part);
        }
        self
    }

    fn query(&self) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments> {
        let mut q = sqlx::query(AssertSqlSafe(self.text.clone()));
        for arg in &self.args {
            q = match arg {
                Arg::Int(v) => q.bind(*v),
                Arg::Text(v) => q.bind(v.as_str()),
            };
        }
        q
    }
}

/// Epoch ms → RFC 3339 (UTC).
pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// A call as lists show it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct CallSummary {
    /// Caly's id (a UUID).
    pub id: String,
    /// Exotel's CallSid.
    pub call_sid: Option<String>,
    /// Exotel's StreamSid.
    pub stream_sid: Option<String>,
    /// The caller (E.164 where possible).
    pub from: Option<String>,
    /// The number called.
    pub to: Option<String>,
    /// As Exotel names it.
    pub direction: Option<String>,
    /// `in-progress`, `completed`, `failed`, `busy`, `no-answer`, `canceled`.
    pub status: String,
    /// The pipeline that ran the call.
    pub pipeline: Option<String>,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub ended_at: Option<String>,
    /// How long the stream (or, from Exotel, the call) lasted.
    pub duration_ms: Option<i64>,
    /// Seconds both parties were connected (Exotel).
    pub conversation_s: Option<i64>,
    /// Exotel's recording.
    pub recording_url: Option<String>,
    /// Why the stream ended.
    pub end_reason: Option<String>,
    /// Our id in Exotel's CustomField, if set.
    pub custom_field: Option<String>,
    /// Turns the bot answered.
    pub turns: i64,
    /// Times the caller interrupted the bot.
    pub barge_ins: i64,
    /// Median voice-to-voice latency of the call.
    pub v2v_p50_ms: Option<i64>,
    /// Worst voice-to-voice latency of the call.
    pub v2v_max_ms: Option<i64>,
    /// RFC 3339: when the call's personal data was erased (its transcript, number, entities
    /// and the words in its actions are gone; counts and timings stay).
    pub erased_at: Option<String>,
    /// The Realtime model's tokens over the call, by kind.
    pub usage: crate::engine::frame::TokenUse,
    /// What they cost, in US dollars at the rates of the price table the server ran with.
    pub cost_usd: f64,
    #[serde(skip)]
    #[schema(ignore)]
    started_ms: i64,
}

const CALL_COLUMNS: &str = "id, call_sid, stream_sid, from_number, to_number, direction, status, \
     pipeline, started_at, ended_at, duration_ms, conversation_s, recording_url, end_reason, \
     custom_field, turns, barge_ins, v2v_p50_ms, v2v_max_ms, erased_at, text_in_tokens, \
     text_in_cached_tokens, audio_in_tokens, audio_in_cached_tokens, text_out_tokens, \
     audio_out_tokens, cost_usd";

fn call_from_row(row: &AnyRow) -> Result<CallSummary, sqlx::Error> {
    let started_ms: i64 = row.try_get("started_at")?;
    Ok(CallSummary {
        id: row.try_get("id")?,
        call_sid: row.try_get("call_sid")?,
        stream_sid: row.try_get("stream_sid")?,
        from: row.try_get("from_number")?,
        to: row.try_get("to_number")?,
        direction: row.try_get("direction")?,
        status: row.try_get("status")?,
        pipeline: row.try_get("pipeline")?,
        started_at: rfc3339(started_ms),
        ended_at: row.try_get::<Option<i64>, _>("ended_at")?.map(rfc3339),
        duration_ms: row.try_get("duration_ms")?,
        conversation_s: row.try_get("conversation_s")?,
        recording_url: row.try_get("recording_url")?,
        end_reason: row.try_get("end_reason")?,
        custom_field: row.try_get("custom_field")?,
        turns: row.try_get("turns")?,
        barge_ins: row.try_get("barge_ins")?,
        v2v_p50_ms: row.try_get("v2v_p50_ms")?,
        v2v_max_ms: row.try_get("v2v_max_ms")?,
        erased_at: row.try_get::<Option<i64>, _>("erased_at")?.map(rfc3339),
        usage: crate::engine::frame::TokenUse {
            text_in: count(row, "text_in_tokens")?,
            text_in_cached: count(row, "text_in_cached_tokens")?,
            audio_in: count(row, "audio_in_tokens")?,
            audio_in_cached: count(row, "audio_in_cached_tokens")?,
            text_out: count(row, "text_out_tokens")?,
            audio_out: count(row, "audio_out_tokens")?,
        },
        cost_usd: row.try_get("cost_usd")?,
        started_ms,
    })
}

/// A BIGINT token count.
fn count(row: &AnyRow, column: &str) -> Result<u64, sqlx::Error> {
    Ok(u64::try_from(row.try_get::<i64, _>(column)?).unwrap_or(0))
}

/// One transcript segment.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Segment {
    /// Order in the call, from 0.
    pub seq: i64,
    /// `caller` or `bot`.
    pub speaker: String,
    /// The words.
    pub text: String,
    /// Where it starts in the call.
    pub pts_ms: i64,
}

/// One classified caller utterance.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct IntentRow {
    /// Order in the call, from 0.
    pub seq: i64,
    /// The intent.
    pub intent: String,
    /// Probability it is right.
    pub confidence: f64,
    /// Order id, phone, pincode, amount.
    #[schema(value_type = Object)]
    pub entities: serde_json::Value,
    /// Confident enough to act on.
    pub accepted: bool,
    /// RFC 3339.
    pub at: String,
}

/// One agent action.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ActionRow {
    /// Row id.
    pub id: i64,
    /// The call.
    pub call_id: String,
    /// The agent (`cancel_order`, `order_status`, `talk_to_human`, …).
    pub action: String,
    /// The order concerned.
    pub order: Option<String>,
    /// A change to an order: `pending` while it is being made, then `done`, `refused`,
    /// `failed` or `uncertain`. An answer: `done`, `needs_confirmation`, `needs_info`,
    /// `refused`, `declined`, `failed`, `not_configured`.
    pub status: String,
    /// What happened (what the caller was told).
    pub detail: String,
    /// For a change: what the order had before it (JSON).
    #[schema(value_type = Option<Object>)]
    pub before: Option<serde_json::Value>,
    /// For a change: the change requested (JSON).
    #[schema(value_type = Option<Object>)]
    pub after: Option<serde_json::Value>,
    /// For a change that needed a yes: the caller's words that gave it.
    pub confirmed_by: Option<String>,
    /// For a change: the Shopify ids involved (`order`, and `job` or `return`).
    #[schema(value_type = Option<Object>)]
    pub shopify_ids: Option<serde_json::Value>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    #[serde(skip)]
    #[schema(ignore)]
    created_ms: i64,
}

/// The columns [`action_from_row`] reads.
const ACTION_COLUMNS: &str = "id, call_id, action, order_name, status, detail, change_before, \
     change_after, confirmed_by, shopify_ids, created_at, updated_at";

fn json_column(row: &AnyRow, column: &str) -> Result<Option<serde_json::Value>, sqlx::Error> {
    let text: Option<String> = row.try_get(column)?;
    Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
}

fn action_from_row(row: &AnyRow) -> Result<ActionRow, sqlx::Error> {
    let created_ms: i64 = row.try_get("created_at")?;
    Ok(ActionRow {
        id: row.try_get("id")?,
        call_id: row.try_get("call_id")?,
        action: row.try_get("action")?,
        order: row.try_get("order_name")?,
        status: row.try_get("status")?,
        detail: row.try_get("detail")?,
        before: json_column(row, "change_before")?,
        after: json_column(row, "change_after")?,
        confirmed_by: row.try_get("confirmed_by")?,
        shopify_ids: json_column(row, "shopify_ids")?,
        created_at: rfc3339(created_ms),
        updated_at: rfc3339(row.try_get("updated_at")?),
        created_ms,
    })
}

/// A call with everything recorded about it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct CallDetail {
    /// The call.
    #[serde(flatten)]
    pub call: CallSummary,
    /// Final transcript segments, in order.
    pub transcript: Vec<Segment>,
    /// Classified caller utterances, in order.
    pub intents: Vec<IntentRow>,
    /// Agent actions, in order.
    pub actions: Vec<ActionRow>,
    /// The latency ledger of each turn, in order.
    pub turns_ledger: Vec<TurnRow>,
    /// Barge-ins, keypad entries, hand-offs, fillers, prompts and tool calls, in order.
    pub events: Vec<CallEventRow>,
}

/// One turn's latency ledger, as the call page charts it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct TurnRow {
    /// Order in the call, from 0.
    pub seq: i64,
    /// End of the caller's speech → the model's first audio.
    pub model_ms: Option<f64>,
    /// The model's first audio → the first chunk sent to the caller.
    pub engine_ms: Option<f64>,
    /// End of the caller's speech → the first chunk sent.
    pub v2v_sent_ms: Option<f64>,
    /// End of the caller's speech → the first chunk played (Exotel echoed its mark).
    pub v2v_played_ms: Option<f64>,
    /// RFC 3339.
    pub at: String,
}

/// Something on a call's timeline besides its words.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct CallEventRow {
    /// Order in the call, from 0.
    pub seq: i64,
    /// `barge_in`, `keypad`, `hand_off`, `filler`, `idle_prompt` or `tool_call`.
    pub kind: String,
    /// Where it happened in the call.
    pub pts_ms: i64,
    /// What it was: the keys pressed, the tool called, the hand-off's reason (empty once the
    /// call is erased, for keys).
    pub detail: String,
}

/// Filters of `GET /v1/calls` (all optional, all combined).
#[derive(Debug, Clone, Default)]
pub struct CallFilter {
    /// Exact status.
    pub status: Option<String>,
    /// Caller number, normalized.
    pub from: Option<String>,
    /// Number called, normalized.
    pub to: Option<String>,
    /// Started at or after (epoch ms).
    pub since_ms: Option<i64>,
    /// Started before (epoch ms).
    pub until_ms: Option<i64>,
    /// Has an accepted intent of this name.
    pub intent: Option<String>,
    /// Ended for this reason (`completed_by_bot`, `handed_off`, `caller_silent`, …).
    pub end_reason: Option<String>,
}

/// Filters of `GET /v1/actions`.
#[derive(Debug, Clone, Default)]
pub struct ActionFilter {
    /// Of this call (its UUID).
    pub call_id: Option<String>,
    /// This agent.
    pub action: Option<String>,
    /// This status.
    pub status: Option<String>,
    /// Created at or after (epoch ms).
    pub since_ms: Option<i64>,
    /// Created before (epoch ms).
    pub until_ms: Option<i64>,
}

/// Where a page starts: strictly after this `(time, id)` in `(time DESC, id DESC)` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Time of the last row seen (epoch ms).
    pub at_ms: i64,
    /// Id of the last row seen.
    pub id: String,
}

impl Cursor {
    /// Text for a client: `<epoch ms>.<id>`.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.at_ms, self.id)
    }

    /// Parses what [`Cursor::encode`] made; `None` for anything else.
    pub fn decode(text: &str) -> Option<Cursor> {
        let (at, id) = text.split_once('.')?;
        let digits = at.strip_prefix('-').unwrap_or(at);
        if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let at_ms = at.parse().ok()?;
        (!id.is_empty()
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .then(|| Cursor {
            at_ms,
            id: id.to_owned(),
        })
    }
}

/// One page of a list, and where the next starts.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The rows.
    pub items: Vec<T>,
    /// `None` on the last page.
    pub next: Option<Cursor>,
}

/// The KPIs over a time range.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Kpis {
    /// RFC 3339, inclusive.
    pub since: String,
    /// RFC 3339, exclusive.
    pub until: String,
    /// Calls that started in the range.
    pub calls: i64,
    /// Of those, answered (the bot's stream ran, or Exotel says completed).
    pub answered: i64,
    /// Mean call duration.
    pub avg_duration_ms: Option<f64>,
    /// 95th percentile call duration.
    pub p95_duration_ms: Option<i64>,
    /// Answered calls the bot handled to the end: no hand-off to a person.
    pub contained: i64,
    /// Answered calls handed to a person (`talk_to_human`, the keypad's hand-off key).
    pub handed_off: i64,
    /// `contained / answered`.
    pub containment_rate: Option<f64>,
    /// Calls the bot ended after the conversation was done (`completed_by_bot`).
    pub completed_by_bot: i64,
    /// Calls ended because the caller stayed silent through every prompt.
    pub caller_silent: i64,
    /// Calls by end reason (`hangup`, `completed_by_bot`, `handed_off`, `caller_silent`, …).
    pub end_reasons: BTreeMap<String, i64>,
    /// Calls per accepted intent (intents recorded in the range).
    pub intents: BTreeMap<String, i64>,
    /// Agent actions recorded in the range that finished (done, failed, refused, not
    /// configured).
    pub actions_finished: i64,
    /// Of those, done.
    pub actions_done: i64,
    /// `actions_done / actions_finished`.
    pub action_success_rate: Option<f64>,
    /// Turns recorded in the range with a latency ledger.
    pub turns: i64,
    /// Median voice-to-voice latency (played where Exotel confirmed it, else sent).
    pub v2v_p50_ms: Option<f64>,
    /// 95th percentile voice-to-voice latency.
    pub v2v_p95_ms: Option<f64>,
    /// What the model cost over the calls that started in the range, in US dollars.
    pub cost_usd: f64,
    /// `cost_usd / answered`.
    pub cost_per_call_usd: Option<f64>,
    /// `cost_usd / contained`: the model's cost of each call the bot handled to the end, the
    /// number to set beside what a person answering costs.
    pub cost_per_contained_call_usd: Option<f64>,
}

/// One bucket of a KPI time series (`GET /v1/analytics/series`).
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct SeriesBucket {
    /// RFC 3339: where the bucket starts (it lasts one `bucket`).
    pub start: String,
    /// Calls that started in it.
    pub calls: i64,
    /// Of those, answered.
    pub answered: i64,
    /// Answered and handled by the bot to the end.
    pub contained: i64,
    /// Answered and handed to a person.
    pub handed_off: i64,
    /// The model's cost of those calls, in US dollars.
    pub cost_usd: f64,
    /// Turns recorded in it with a latency ledger.
    pub turns: i64,
    /// Their median voice-to-voice latency.
    pub v2v_p50_ms: Option<f64>,
    /// Their 95th percentile voice-to-voice latency.
    pub v2v_p95_ms: Option<f64>,
}

/// What the KPIs and each bucket of a series count over the calls a query selects: `calls`,
/// `answered` (the bot's stream ran, or Exotel says completed), `contained` (answered, not
/// handed to a person), `handed`, and their model `cost`.
const CALL_COUNTS: &str = "COUNT(*) AS calls,
    CAST(COALESCE(SUM(CASE WHEN (stream_sid IS NOT NULL OR status = 'completed') THEN 1 ELSE 0 END), 0)
        AS BIGINT) AS answered,
    CAST(COALESCE(SUM(CASE WHEN (stream_sid IS NOT NULL OR status = 'completed')
        AND NOT (handed_off = 1 OR end_reason = 'handed_off') THEN 1 ELSE 0 END), 0) AS BIGINT) AS contained,
    CAST(COALESCE(SUM(CASE WHEN (stream_sid IS NOT NULL OR status = 'completed')
        AND (handed_off = 1 OR end_reason = 'handed_off') THEN 1 ELSE 0 END), 0) AS BIGINT) AS handed,
    CAST(COALESCE(SUM(cost_usd), 0) AS DOUBLE PRECISION) AS cost";

/// Most turns a series reads for its latency percentiles; beyond, the rest of the range has
/// none (`v2v_complete` is false).
pub const MAX_SERIES_TURNS: i64 = 200_000;
/// Most buckets a series has.
pub const MAX_BUCKETS: i64 = 2_000;

fn ratio(part: i64, whole: i64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// The row at the `q`-quantile of `n` sorted rows, from 0: the nearest-rank definition, the
/// same as PostgreSQL's `percentile_disc`.
fn rank(q: f64, n: i64) -> i64 {
    ((q * n as f64).ceil() as i64 - 1).clamp(0, (n - 1).max(0))
}

impl Store {
    /// A page of calls, newest first.
    pub async fn list_calls(
        &self,
        filter: &CallFilter,
        after: Option<&Cursor>,
        limit: i64,
    ) -> Result<Page<CallSummary>, StoreError> {
        let mut sql = Sql::new(&format!("SELECT {CALL_COLUMNS} FROM calls WHERE 1 = 1"));
        if let Some(v) = &filter.status {
            sql.push(" AND status = {}", [Arg::Text(v.clone())]);
        }
        if let Some(v) = &filter.end_reason {
            sql.push(" AND end_reason = {}", [Arg::Text(v.clone())]);
        }
        if let Some(v) = &filter.from {
            sql.push(" AND from_number = {}", [Arg::Text(v.clone())]);
        }
        if let Some(v) = &filter.to {
            sql.push(" AND to_number = {}", [Arg::Text(v.clone())]);
        }
        if let Some(v) = filter.since_ms {
            sql.push(" AND started_at >= {}", [Arg::Int(v)]);
        }
        if let Some(v) = filter.until_ms {
            sql.push(" AND started_at < {}", [Arg::Int(v)]);
        }
        if let Some(v) = &filter.intent {
            sql.push(
                " AND EXISTS (SELECT 1 FROM intents i WHERE i.call_id = calls.id \
                 AND i.intent = {} AND i.accepted = 1)",
                [Arg::Text(v.clone())],
            );
        }
        if let Some(c) = after {
            sql.push(
                " AND (started_at < {} OR (started_at = {} AND id < {}))",
                [
                    Arg::Int(c.at_ms),
                    Arg::Int(c.at_ms),
                    Arg::Text(c.id.clone()),
                ],
            );
        }
        sql.push(
            " ORDER BY started_at DESC, id DESC LIMIT {}",
            [Arg::Int(limit + 1)],
        );
        self.count_query();
        let rows = sql.query().fetch_all(self.pool()).await?;
        let mut items = rows
            .iter()
            .map(call_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next = page_end(&mut items, limit, |c| Cursor {
            at_ms: c.started_ms,
            id: c.id.clone(),
        });
        Ok(Page { items, next })
    }

    /// One call by its UUID or CallSid.
    pub async fn find_call(&self, id_or_sid: &str) -> Result<Option<CallSummary>, StoreError> {
        self.count_query();
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {CALL_COLUMNS} FROM calls WHERE id = $1 OR call_sid = $1 \
             ORDER BY started_at LIMIT 1"
        )))
        .bind(id_or_sid)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(call_from_row).transpose()?)
    }

    /// A call's final transcript, in order (at most [`MAX_SEGMENTS`]).
    pub async fn transcript(&self, call_id: &str) -> Result<Vec<Segment>, StoreError> {
        self.count_query();
        let rows = sqlx::query(
            "SELECT seq, speaker, text, pts_ms FROM transcript_segments WHERE call_id = $1 \
             ORDER BY seq LIMIT $2",
        )
        .bind(call_id)
        .bind(MAX_SEGMENTS)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Segment {
                    seq: r.try_get("seq")?,
                    speaker: r.try_get("speaker")?,
                    text: r.try_get("text")?,
                    pts_ms: r.try_get("pts_ms")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Whether the call with this provider id was handed to a person (by its end reason, or
    /// a `talk_to_human` action recorded during it).
    pub async fn was_handed_off(&self, call_sid: &str) -> Result<bool, StoreError> {
        self.count_query();
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM calls \
             WHERE call_sid = $1 AND (handed_off = 1 OR end_reason = 'handed_off')",
        )
        .bind(call_sid)
        .fetch_one(self.pool())
        .await?;
        let n: i64 = row.try_get("n")?;
        Ok(n > 0)
    }

    /// A call with its transcript, intents, actions, latency ledger and timeline events: six
    /// queries, however long the call.
    pub async fn call_detail(&self, id_or_sid: &str) -> Result<Option<CallDetail>, StoreError> {
        let Some(call) = self.find_call(id_or_sid).await? else {
            return Ok(None);
        };
        let transcript = self.transcript(&call.id).await?;
        self.count_query();
        let rows = sqlx::query(
            "SELECT seq, intent, confidence, entities, accepted, created_at FROM intents \
             WHERE call_id = $1 ORDER BY seq LIMIT $2",
        )
        .bind(&call.id)
        .bind(MAX_PER_CALL)
        .fetch_all(self.pool())
        .await?;
        let intents = rows
            .iter()
            .map(|r| {
                let entities: String = r.try_get("entities")?;
                Ok(IntentRow {
                    seq: r.try_get("seq")?,
                    intent: r.try_get("intent")?,
                    confidence: r.try_get("confidence")?,
                    entities: serde_json::from_str(&entities).unwrap_or_default(),
                    accepted: r.try_get::<i64, _>("accepted")? != 0,
                    at: rfc3339(r.try_get("created_at")?),
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        self.count_query();
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {ACTION_COLUMNS} FROM actions WHERE call_id = $1 ORDER BY id LIMIT $2"
        )))
        .bind(&call.id)
        .bind(MAX_PER_CALL)
        .fetch_all(self.pool())
        .await?;
        let actions = rows
            .iter()
            .map(action_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        self.count_query();
        let turns_ledger = sqlx::query(
            "SELECT seq, model_ms, engine_ms, v2v_sent_ms, v2v_played_ms, created_at FROM turns \
             WHERE call_id = $1 ORDER BY seq LIMIT $2",
        )
        .bind(&call.id)
        .bind(MAX_PER_CALL)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|r| {
            Ok(TurnRow {
                seq: r.try_get("seq")?,
                model_ms: r.try_get("model_ms")?,
                engine_ms: r.try_get("engine_ms")?,
                v2v_sent_ms: r.try_get("v2v_sent_ms")?,
                v2v_played_ms: r.try_get("v2v_played_ms")?,
                at: rfc3339(r.try_get("created_at")?),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        self.count_query();
        let events = sqlx::query(
            "SELECT seq, kind, pts_ms, detail FROM call_events WHERE call_id = $1 \
             ORDER BY seq LIMIT $2",
        )
        .bind(&call.id)
        .bind(MAX_PER_CALL)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|r| {
            Ok(CallEventRow {
                seq: r.try_get("seq")?,
                kind: r.try_get("kind")?,
                pts_ms: r.try_get("pts_ms")?,
                detail: r.try_get("detail")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(Some(CallDetail {
            call,
            transcript,
            intents,
            actions,
            turns_ledger,
            events,
        }))
    }

    /// A page of actions, newest first.
    pub async fn list_actions(
        &self,
        filter: &ActionFilter,
        after: Option<&Cursor>,
        limit: i64,
    ) -> Result<Page<ActionRow>, StoreError> {
        let mut sql = Sql::new(&format!("SELECT {ACTION_COLUMNS} FROM actions WHERE 1 = 1"));
        if let Some(v) = &filter.call_id {
            sql.push(" AND call_id = {}", [Arg::Text(v.clone())]);
        }
        if let Some(v) = &filter.action {
            sql.push(" AND action = {}", [Arg::Text(v.clone())]);
        }
        if let Some(v) = &filter.status {
            sql.push(" AND status = {}", [Arg::Text(v.clone())]);
        }
        if let Some(v) = filter.since_ms {
            sql.push(" AND created_at >= {}", [Arg::Int(v)]);
        }
        if let Some(v) = filter.until_ms {
            sql.push(" AND created_at < {}", [Arg::Int(v)]);
        }
        if let Some(c) = after {
            let id: i64 = c.id.parse().unwrap_or(i64::MAX);
            sql.push(
                " AND (created_at < {} OR (created_at = {} AND id < {}))",
                [Arg::Int(c.at_ms), Arg::Int(c.at_ms), Arg::Int(id)],
            );
        }
        sql.push(
            " ORDER BY created_at DESC, id DESC LIMIT {}",
            [Arg::Int(limit + 1)],
        );
        self.count_query();
        let rows = sql.query().fetch_all(self.pool()).await?;
        let mut items = rows
            .iter()
            .map(action_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next = page_end(&mut items, limit, |a| Cursor {
            at_ms: a.created_ms,
            id: a.id.to_string(),
        });
        Ok(Page { items, next })
    }

    /// KPIs over `[since_ms, until_ms)` in buckets of `bucket_ms` (at most [`MAX_BUCKETS`];
    /// the caller checks): call counts and cost by when calls started, latency percentiles by
    /// when turns were recorded. Every bucket is there, empty ones too. Two queries; the
    /// percentiles are taken from at most [`MAX_SERIES_TURNS`] turns, and the `bool` says
    /// whether that was all of them.
    pub async fn series(
        &self,
        since_ms: i64,
        until_ms: i64,
        bucket_ms: i64,
    ) -> Result<(Vec<SeriesBucket>, bool), StoreError> {
        let bucket_ms = bucket_ms.max(1);
        let n = ((until_ms - since_ms).max(0) + bucket_ms - 1) / bucket_ms;
        let n = usize::try_from(n.min(MAX_BUCKETS)).unwrap_or(0);
        let mut buckets: Vec<SeriesBucket> = (0..n)
            .map(|i| SeriesBucket {
                start: rfc3339(since_ms + i as i64 * bucket_ms),
                calls: 0,
                answered: 0,
                contained: 0,
                handed_off: 0,
                cost_usd: 0.0,
                turns: 0,
                v2v_p50_ms: None,
                v2v_p95_ms: None,
            })
            .collect();
        self.count_query();
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT (started_at - $1) / $3 AS b, {CALL_COUNTS}
             FROM calls WHERE started_at >= $1 AND started_at < $2 GROUP BY b"
        )))
        .bind(since_ms)
        .bind(until_ms)
        .bind(bucket_ms)
        .fetch_all(self.pool())
        .await?;
        for r in &rows {
            let Some(b) = usize::try_from(r.try_get::<i64, _>("b")?)
                .ok()
                .and_then(|b| buckets.get_mut(b))
            else {
                continue;
            };
            b.calls = r.try_get("calls")?;
            b.answered = r.try_get("answered")?;
            b.contained = r.try_get("contained")?;
            b.handed_off = r.try_get("handed")?;
            b.cost_usd = r.try_get("cost")?;
        }
        self.count_query();
        let rows = sqlx::query(
            "SELECT (created_at - $1) / $3 AS b, COALESCE(v2v_played_ms, v2v_sent_ms) AS v \
             FROM turns WHERE created_at >= $1 AND created_at < $2 \
             AND COALESCE(v2v_played_ms, v2v_sent_ms) IS NOT NULL ORDER BY created_at LIMIT $4",
        )
        .bind(since_ms)
        .bind(until_ms)
        .bind(bucket_ms)
        .bind(MAX_SERIES_TURNS + 1)
        .fetch_all(self.pool())
        .await?;
        let complete = rows.len() as i64 <= MAX_SERIES_TURNS;
        let mut per: Vec<Vec<f64>> = vec![Vec::new(); buckets.len()];
        for r in rows.iter().take(MAX_SERIES_TURNS as usize) {
            let b: i64 = r.try_get("b")?;
            let v: f64 = r.try_get("v")?;
            if let Some(values) = usize::try_from(b).ok().and_then(|b| per.get_mut(b)) {
                values.push(v);
            }
        }
        for (bucket, mut values) in buckets.iter_mut().zip(per) {
            if values.is_empty() {
                continue;
            }
            values.sort_by(f64::total_cmp);
            let n = values.len() as i64;
            let at = |q: f64| {
                usize::try_from(rank(q, n))
                    .ok()
                    .and_then(|i| values.get(i))
                    .copied()
            };
            bucket.turns = n;
            bucket.v2v_p50_ms = at(0.5);
            bucket.v2v_p95_ms = at(0.95);
        }
        Ok((buckets, complete))
    }

    /// KPIs over `[since_ms, until_ms)`: call figures over the calls that started in it;
    /// intents, actions and turns over those recorded in it. Each is an indexed range scan,
    /// never a join; PostgreSQL answers in four queries, SQLite (no `percentile_disc`) in up
    /// to seven.
    pub async fn kpis(&self, since_ms: i64, until_ms: i64) -> Result<Kpis, StoreError> {
        let pool = self.pool();
        let pg = self.backend == super::Backend::Postgres;
        let duration = "COALESCE(duration_ms, conversation_s * 1000)";
        let p95 = if pg {
            format!("percentile_disc(0.95) WITHIN GROUP (ORDER BY {duration})")
        } else {
            "NULL".to_owned()
        };
        self.count_query();
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {CALL_COUNTS},
                    CAST(AVG({duration}) AS DOUBLE PRECISION) AS avg_duration,
                    COUNT({duration}) AS with_duration,
                    {p95} AS p95_duration
             FROM calls WHERE started_at >= $1 AND started_at < $2"
        )))
        .bind(since_ms)
        .bind(until_ms)
        .fetch_one(pool)
        .await?;
        let calls: i64 = row.try_get("calls")?;
        let answered_n: i64 = row.try_get("answered")?;
        let contained: i64 = row.try_get("contained")?;
        let handed_off: i64 = row.try_get("handed")?;
        let avg_duration_ms: Option<f64> = row.try_get("avg_duration")?;
        let with_duration: i64 = row.try_get("with_duration")?;
        let cost_usd: f64 = row.try_get("cost")?;
        let p95_duration_ms = if pg {
            row.try_get::<Option<i64>, _>("p95_duration")?
        } else if with_duration > 0 {
            self.count_query();
            sqlx::query(AssertSqlSafe(format!(
                "SELECT {duration} AS d FROM calls
                 WHERE started_at >= $1 AND started_at < $2 AND {duration} IS NOT NULL
                 ORDER BY d LIMIT 1 OFFSET $3"
            )))
            .bind(since_ms)
            .bind(until_ms)
            .bind(rank(0.95, with_duration))
            .fetch_optional(pool)
            .await?
            .map(|r| r.try_get::<i64, _>("d"))
            .transpose()?
        } else {
            None
        };
        self.count_query();
        let rows = sqlx::query(
            "SELECT end_reason, COUNT(*) AS n FROM calls
             WHERE started_at >= $1 AND started_at < $2 AND end_reason IS NOT NULL
             GROUP BY end_reason",
        )
        .bind(since_ms)
        .bind(until_ms)
        .fetch_all(pool)
        .await?;
        let mut end_reasons = BTreeMap::new();
        for r in &rows {
            end_reasons.insert(
                r.try_get::<String, _>("end_reason")?,
                r.try_get::<i64, _>("n")?,
            );
        }
        self.count_query();
        let rows = sqlx::query(
            "SELECT intent, COUNT(DISTINCT call_id) AS n FROM intents
             WHERE created_at >= $1 AND created_at < $2 AND accepted = 1
             GROUP BY intent",
        )
        .bind(since_ms)
        .bind(until_ms)
        .fetch_all(pool)
        .await?;
        let mut intents = BTreeMap::new();
        for r in &rows {
            intents.insert(r.try_get::<String, _>("intent")?, r.try_get::<i64, _>("n")?);
        }
        self.count_query();
        let row = sqlx::query(
            "SELECT
                CAST(COALESCE(SUM(CASE WHEN status IN ('done', 'failed', 'refused', 'not_configured', 'uncertain')
                    THEN 1 ELSE 0 END), 0) AS BIGINT) AS finished,
                CAST(COALESCE(SUM(CASE WHEN status = 'done' THEN 1 ELSE 0 END), 0) AS BIGINT) AS done
             FROM actions WHERE created_at >= $1 AND created_at < $2",
        )
        .bind(since_ms)
        .bind(until_ms)
        .fetch_one(pool)
        .await?;
        let actions_finished: i64 = row.try_get("finished")?;
        let actions_done: i64 = row.try_get("done")?;
        let v2v = "COALESCE(v2v_played_ms, v2v_sent_ms)";
        let (turns, v2v_p50_ms, v2v_p95_ms) = if pg {
            self.count_query();
            let row = sqlx::query(AssertSqlSafe(format!(
                "SELECT COUNT(*) AS n,
                        percentile_disc(0.5) WITHIN GROUP (ORDER BY {v2v}) AS p50,
                        percentile_disc(0.95) WITHIN GROUP (ORDER BY {v2v}) AS p95
                 FROM turns WHERE created_at >= $1 AND created_at < $2"
            )))
            .bind(since_ms)
            .bind(until_ms)
            .fetch_one(pool)
            .await?;
            (row.try_get("n")?, row.try_get("p50")?, row.try_get("p95")?)
        } else {
            self.count_query();
            let n: i64 = sqlx::query(
                "SELECT COUNT(*) AS n FROM turns WHERE created_at >= $1 AND created_at < $2",
            )
            .bind(since_ms)
            .bind(until_ms)
            .fetch_one(pool)
            .await?
            .try_get("n")?;
            let mut q = [None, None];
            if n > 0 {
                for (slot, quantile) in q.iter_mut().zip([0.5, 0.95]) {
                    self.count_query();
                    *slot = sqlx::query(AssertSqlSafe(format!(
                        "SELECT {v2v} AS v FROM turns WHERE created_at >= $1 AND created_at < $2
                         ORDER BY v LIMIT 1 OFFSET $3"
                    )))
                    .bind(since_ms)
                    .bind(until_ms)
                    .bind(rank(quantile, n))
                    .fetch_optional(pool)
                    .await?
                    .map(|r| r.try_get::<f64, _>("v"))
                    .transpose()?;
                }
            }
            (n, q[0], q[1])
        };
        Ok(Kpis {
            since: rfc3339(since_ms),
            until: rfc3339(until_ms),
            calls,
            answered: answered_n,
            avg_duration_ms,
            p95_duration_ms,
            contained,
            handed_off,
            containment_rate: ratio(contained, answered_n),
            completed_by_bot: end_reasons.get("completed_by_bot").copied().unwrap_or(0),
            caller_silent: end_reasons.get("caller_silent").copied().unwrap_or(0),
            end_reasons,
            intents,
            actions_finished,
            actions_done,
            action_success_rate: ratio(actions_done, actions_finished),
            turns,
            v2v_p50_ms,
            v2v_p95_ms,
            cost_usd,
            cost_per_call_usd: (answered_n > 0).then(|| cost_usd / answered_n as f64),
            cost_per_contained_call_usd: (contained > 0).then(|| cost_usd / contained as f64),
        })
    }
}

/// Trims the extra row fetched to learn whether another page follows, and returns its cursor.
fn page_end<T>(items: &mut Vec<T>, limit: i64, cursor: impl Fn(&T) -> Cursor) -> Option<Cursor> {
    let limit = usize::try_from(limit).unwrap_or(0);
    if items.len() <= limit {
        return None;
    }
    items.truncate(limit);
    items.last().map(cursor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_order() {
        let mut sql = Sql::new("SELECT 1 WHERE 1 = 1");
        sql.push(" AND a = {}", [Arg::Int(1)]);
        sql.push(
            " AND (b < {} OR c = {})",
            [Arg::Int(2), Arg::Text("x".into())],
        );
        assert_eq!(
            sql.text,
            "SELECT 1 WHERE 1 = 1 AND a = $1 AND (b < $2 OR c = $3)"
        );
        assert_eq!(sql.args.len(), 3);
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = Cursor {
            at_ms: 1_764_000_000_000,
            id: "0193-abc".into(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        for bad in [
            "",
            "!!",
            "123",
            "123.",
            ".x",
            "x.y",
            "1.a.b",
            &"1".repeat(500),
        ] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
        let injected = Cursor {
            at_ms: 1,
            id: "x' OR '1'='1".into(),
        }
        .encode();
        assert_eq!(Cursor::decode(&injected), None);
    }

    #[test]
    fn quantile_ranks_stay_in_range() {
        assert_eq!(rank(0.95, 1), 0);
        assert_eq!(rank(0.5, 3), 1);
        assert_eq!(rank(0.5, 4), 1);
        assert_eq!(rank(0.95, 100), 94);
        assert_eq!(rank(0.95, 101), 95);
        assert_eq!(rank(0.95, 0), 0);
    }
}
