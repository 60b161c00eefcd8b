-- How many of the wallet's events wait in parked_events. It lives on the
-- head row, so it is read and written under the head's lock: a member that
-- applies a wallet's next event learns, without another query, whether a
-- successor waits, including one another member parked a moment ago.
ALTER TABLE wallet_heads ADD COLUMN parked INTEGER NOT NULL DEFAULT 0 CHECK (parked >= 0);
UPDATE wallet_heads h
   SET parked = (SELECT count(*) FROM parked_events p WHERE p.wallet_id = h.wallet_id);
