-- The action ledger (issue 13): an action row is written before the store is changed and
-- claims its change (action + order + change requested, never the call) while it is
-- pending, uncertain or done; failed and refused rows release the claim (NULL, which a
-- unique index does not compare). The audit: what the order had, what was asked, the
-- caller's confirming words and the Shopify ids involved (JSON as text).
ALTER TABLE actions ADD COLUMN claim TEXT;
ALTER TABLE actions ADD COLUMN change_before TEXT;
ALTER TABLE actions ADD COLUMN change_after TEXT;
ALTER TABLE actions ADD COLUMN confirmed_by TEXT;
ALTER TABLE actions ADD COLUMN shopify_ids TEXT;
CREATE UNIQUE INDEX actions_claim ON actions (claim);
CREATE INDEX actions_unsettled ON actions (status, created_at);
