-- Audit searches and exports over a period first find the sequence numbers of the
-- period's first and last entries (MIN/MAX of seq over an `at` range: an index-only scan
-- of this index), then walk the log in order between them, instead of from its start.
-- It replaces the index on `at` alone, which it covers.
CREATE INDEX audit_log_by_time_seq ON audit_log (at, seq);
DROP INDEX audit_log_by_time;
