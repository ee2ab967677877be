-- Referral payloads are encrypted at rest (AES-256-GCM); the key id sits beside each.
-- NULL: stored in plain text (rows from before this migration); 'purged': payload removed.
ALTER TABLE referrals ADD COLUMN payload_key_id TEXT;
