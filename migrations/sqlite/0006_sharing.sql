-- The sharing agreement a referral was shared under, and the JSON Pointers withheld
-- from the recipient by minimisation (a JSON array).
ALTER TABLE referrals ADD COLUMN isa_id TEXT;
ALTER TABLE referrals ADD COLUMN withheld TEXT NOT NULL DEFAULT '[]';
