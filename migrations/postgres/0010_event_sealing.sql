-- Event records, and the messages made from them, hold the free text the agencies write
-- each other (`detail`, `redirected_to.description`): encrypted at rest like referral
-- payloads (AES-256-GCM under `storage.payload_key`, bound to the event record's id or
-- the message's id); the key id sits beside each. NULL: stored in plain text (rows from
-- before this migration).
ALTER TABLE referral_events ADD COLUMN body_key_id TEXT;
ALTER TABLE outbox ADD COLUMN payload_key_id TEXT;
