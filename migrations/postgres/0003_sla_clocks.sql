-- SLA clocks: one row per referral and clock (acknowledge, decision, first_contact,
-- delivery), started with the referral and stopped by events or flagged by the scanner.
CREATE TABLE sla_clocks (
    referral_id TEXT    NOT NULL REFERENCES referrals (id),
    clock       TEXT    NOT NULL,
    started_at  BIGINT  NOT NULL,
    due_at      BIGINT  NOT NULL,
    warn_at     BIGINT  NOT NULL,
    met_at      BIGINT,
    met_late    INTEGER,
    stopped_at  BIGINT,
    warned_at   BIGINT,
    breached_at BIGINT,
    PRIMARY KEY (referral_id, clock)
);
CREATE INDEX sla_clocks_open_by_warn ON sla_clocks (warn_at) WHERE met_at IS NULL AND stopped_at IS NULL;
