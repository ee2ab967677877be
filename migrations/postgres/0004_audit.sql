-- The disclosure and audit log: append-only, each entry holding the SHA-256 of the
-- previous one (hash chain); checkpoints sign the chain head with the gateway's Ed25519 key.
CREATE TABLE audit_log (
    seq          BIGINT PRIMARY KEY NOT NULL,
    at           BIGINT NOT NULL,
    actor        TEXT   NOT NULL,
    action       TEXT   NOT NULL,
    referral_id  TEXT,
    recipient    TEXT,
    isa_id       TEXT,
    lawful_basis TEXT,
    consent      TEXT,
    categories   TEXT   NOT NULL,
    withheld     TEXT   NOT NULL,
    person_key   TEXT,
    detail       TEXT   NOT NULL,
    prev_hash    TEXT   NOT NULL,
    hash         TEXT   NOT NULL
);
CREATE INDEX audit_log_by_referral ON audit_log (referral_id);
CREATE INDEX audit_log_by_person ON audit_log (person_key);
CREATE INDEX audit_log_by_time ON audit_log (at);

-- The chain head, one row, locked by every append so entries are numbered without gaps.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY NOT NULL,
    seq  BIGINT  NOT NULL,
    hash TEXT    NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE audit_checkpoints (
    seq       BIGINT PRIMARY KEY NOT NULL,
    head_hash TEXT   NOT NULL,
    signed_at BIGINT NOT NULL,
    key_id    TEXT   NOT NULL,
    signature TEXT   NOT NULL
);

CREATE FUNCTION audit_log_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
