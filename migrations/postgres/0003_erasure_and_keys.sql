-- Data protection and key lifecycle (issue 16). A call's personal data can be erased (on
-- request, by caller number, or by the retention limit): its row keeps the counts and timings
-- KPIs need and says when it was erased; `erasures` records who asked and when, never what
-- was erased. API keys may expire, and remember when they were last used (to the minute).
ALTER TABLE calls ADD COLUMN erased_at BIGINT;
CREATE INDEX calls_unerased ON calls (started_at) WHERE erased_at IS NULL;
CREATE INDEX webhook_events_received ON webhook_events (received_at);

CREATE TABLE erasures (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    call_id      TEXT   NOT NULL,
    reason       TEXT   NOT NULL,
    requested_by TEXT   NOT NULL,
    erased_at    BIGINT NOT NULL
);
CREATE INDEX erasures_call ON erasures (call_id);

ALTER TABLE api_keys ADD COLUMN expires_at BIGINT;
ALTER TABLE api_keys ADD COLUMN last_used_at BIGINT;
