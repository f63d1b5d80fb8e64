-- The operator console (issue 15). A console session is an API key signed in from a browser:
-- the browser holds a random token in an HttpOnly cookie, the server only its SHA-256; a
-- session ends at its expiry, on sign-out, or when its key is revoked or expires.
-- `call_events` is what the call's timeline shows besides its words: barge-ins, keypad
-- entries, hand-offs, fillers, silent-caller prompts and tool calls, at their place in the call.
CREATE TABLE console_sessions (
    hash       TEXT PRIMARY KEY,
    key_id     TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
CREATE INDEX console_sessions_key ON console_sessions (key_id);

CREATE TABLE call_events (
    call_id    TEXT   NOT NULL,
    seq        BIGINT NOT NULL,
    kind       TEXT   NOT NULL,
    pts_ms     BIGINT NOT NULL,
    detail     TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (call_id, seq)
);
