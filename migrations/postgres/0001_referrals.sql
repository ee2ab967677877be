-- Referrals, their idempotency keys, and the transactional outbox.
-- Timestamps are microseconds since the Unix epoch (UTC).
CREATE TABLE referrals (
    id               TEXT    PRIMARY KEY NOT NULL,
    sender_agency    TEXT    NOT NULL,
    recipient_agency TEXT    NOT NULL,
    service_type     TEXT    NOT NULL,
    area             TEXT    NOT NULL,
    priority         TEXT    NOT NULL,
    status           TEXT    NOT NULL,
    schema_id        TEXT    NOT NULL,
    payload          TEXT    NOT NULL,
    payload_sha256   TEXT    NOT NULL,
    correlation_id   TEXT    NOT NULL,
    received_at      BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL
);
CREATE INDEX referrals_by_sender ON referrals (sender_agency, received_at);
CREATE INDEX referrals_by_recipient ON referrals (recipient_agency, received_at);

CREATE TABLE idempotency_keys (
    sender_agency   TEXT   NOT NULL,
    idempotency_key TEXT   NOT NULL,
    request_sha256  TEXT   NOT NULL,
    referral_id     TEXT   NOT NULL REFERENCES referrals (id),
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (sender_agency, idempotency_key)
);

CREATE TABLE outbox (
    id              BIGSERIAL PRIMARY KEY,
    referral_id     TEXT    NOT NULL REFERENCES referrals (id),
    message_type    TEXT    NOT NULL,
    exchange        TEXT    NOT NULL,
    routing_key     TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL,
    attempts        BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at BIGINT  NOT NULL,
    claimed_by      TEXT,
    claimed_until   BIGINT,
    published_at    BIGINT,
    last_error      TEXT
);
CREATE INDEX outbox_pending ON outbox (published_at, next_attempt_at);
CREATE INDEX outbox_by_referral ON outbox (referral_id);
