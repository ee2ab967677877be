-- Lifecycle events posted by receiving services and senders, and per-message payloads
-- in the outbox (status events and withdrawals carry their own body and message id; a referral's outbox
-- row leaves it NULL and the relay sends the stored referral).
ALTER TABLE outbox ADD COLUMN payload TEXT;
ALTER TABLE outbox ADD COLUMN message_id TEXT;

CREATE TABLE referral_events (
    id             TEXT   PRIMARY KEY NOT NULL,
    referral_id    TEXT   NOT NULL REFERENCES referrals (id),
    event_id       TEXT   NOT NULL,
    actor_agency   TEXT   NOT NULL,
    event_type     TEXT   NOT NULL,
    status_after   TEXT   NOT NULL,
    body           TEXT   NOT NULL,
    request_sha256 TEXT   NOT NULL,
    occurred_at    BIGINT NOT NULL,
    recorded_at    BIGINT NOT NULL,
    UNIQUE (referral_id, actor_agency, event_id)
);
CREATE INDEX referral_events_by_referral ON referral_events (referral_id, recorded_at);
