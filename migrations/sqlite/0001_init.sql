-- Caly's call records (SQLite). migrations/postgres/0001_init.sql is the same schema.
-- Times are epoch milliseconds (BIGINT); ids and JSON are TEXT (sqlx's Any driver, CRATES.md).

CREATE TABLE calls (
    id             TEXT PRIMARY KEY,
    call_sid       TEXT UNIQUE,
    stream_sid     TEXT,
    from_number    TEXT,
    to_number      TEXT,
    direction      TEXT,
    status         TEXT    NOT NULL,
    pipeline       TEXT,
    started_at     BIGINT  NOT NULL,
    ended_at       BIGINT,
    duration_ms    BIGINT,
    conversation_s BIGINT,
    recording_url  TEXT,
    end_reason     TEXT,
    custom_field   TEXT,
    turns          BIGINT  NOT NULL DEFAULT 0,
    barge_ins      BIGINT  NOT NULL DEFAULT 0,
    v2v_p50_ms     BIGINT,
    v2v_max_ms     BIGINT,
    handed_off     BIGINT  NOT NULL DEFAULT 0,
    updated_at     BIGINT  NOT NULL
);
CREATE INDEX calls_started ON calls (started_at DESC, id DESC);
CREATE INDEX calls_status ON calls (status, started_at DESC, id DESC);
CREATE INDEX calls_from ON calls (from_number, started_at DESC, id DESC);
CREATE INDEX calls_to ON calls (to_number, started_at DESC, id DESC);

CREATE TABLE transcript_segments (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id    TEXT    NOT NULL,
    seq        BIGINT  NOT NULL,
    speaker    TEXT    NOT NULL,
    text       TEXT    NOT NULL,
    pts_ms     BIGINT  NOT NULL,
    created_at BIGINT  NOT NULL,
    UNIQUE (call_id, seq)
);

CREATE TABLE turns (
    call_id       TEXT   NOT NULL,
    seq           BIGINT NOT NULL,
    model_ms      DOUBLE PRECISION,
    engine_ms     DOUBLE PRECISION,
    v2v_sent_ms   DOUBLE PRECISION,
    v2v_played_ms DOUBLE PRECISION,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (call_id, seq)
);
CREATE INDEX turns_created ON turns (created_at);

CREATE TABLE intents (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id    TEXT    NOT NULL,
    seq        BIGINT  NOT NULL,
    intent     TEXT    NOT NULL,
    confidence DOUBLE PRECISION NOT NULL,
    entities   TEXT    NOT NULL,
    accepted   BIGINT  NOT NULL,
    created_at BIGINT  NOT NULL,
    UNIQUE (call_id, seq)
);
CREATE INDEX intents_intent ON intents (intent, call_id);
CREATE INDEX intents_created ON intents (created_at);

CREATE TABLE actions (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id    TEXT    NOT NULL,
    action     TEXT    NOT NULL,
    order_name TEXT,
    idem_key   TEXT    NOT NULL UNIQUE,
    status     TEXT    NOT NULL,
    detail     TEXT    NOT NULL,
    created_at BIGINT  NOT NULL,
    updated_at BIGINT  NOT NULL
);
CREATE INDEX actions_call ON actions (call_id, id);
CREATE INDEX actions_list ON actions (created_at DESC, id DESC);
CREATE INDEX actions_action ON actions (action, created_at DESC, id DESC);

CREATE TABLE webhook_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT    NOT NULL,
    dedupe_key  TEXT    NOT NULL UNIQUE,
    call_sid    TEXT,
    payload     TEXT    NOT NULL,
    received_at BIGINT  NOT NULL
);
CREATE INDEX webhook_events_call ON webhook_events (call_sid);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    name         TEXT   NOT NULL,
    scope        TEXT   NOT NULL,
    prefix       TEXT   NOT NULL UNIQUE,
    hash         TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    revoked_at   BIGINT
);
