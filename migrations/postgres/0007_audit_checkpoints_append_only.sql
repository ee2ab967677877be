-- Signed checkpoints are append-only too: deleting the newest ones would otherwise hide
-- a rewrite of the entries after the one before. (The runtime role has no UPDATE,
-- DELETE, TRUNCATE or TRIGGER privilege on the audit tables either: see
-- `referral-gateway migrate --grant-to` in docs/governance.md.)
CREATE FUNCTION audit_checkpoints_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_checkpoints is append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_checkpoints_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_checkpoints_append_only();
