-- Model use per call (issue 15): the tokens of every Realtime response by kind (cached input
-- counted in its kind too), and what they cost in US dollars at the price table's rates.
ALTER TABLE calls ADD COLUMN text_in_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE calls ADD COLUMN text_in_cached_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE calls ADD COLUMN audio_in_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE calls ADD COLUMN audio_in_cached_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE calls ADD COLUMN text_out_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE calls ADD COLUMN audio_out_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE calls ADD COLUMN cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0;
