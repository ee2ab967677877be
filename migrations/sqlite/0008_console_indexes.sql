-- Indexes for the staff console's pages over a long history (examples/console_bench.rs,
-- docs/console.md "Performance"):
-- - reports and the agreements register over every agency select referrals by the time
--   they were received (the per-agency indexes serve one agency only);
-- - repeat referrals read `referral.submitted` entries in a period and the `event.posted`
--   declines before its end, and audit searches filter by one action: by action, then time.
CREATE INDEX referrals_by_received ON referrals (received_at);
CREATE INDEX audit_log_by_action ON audit_log (action, at);
