-- The wallet database: balances, their ledger, the outbox of events still to
-- publish, and the idempotency keys of mutating requests. Every change to a
-- balance writes its ledger entry and outbox row in the same transaction.

CREATE TABLE wallets (
    id          UUID PRIMARY KEY,
    user_id     VARCHAR(100) NOT NULL,
    balance     NUMERIC(19, 4) NOT NULL DEFAULT 0 CHECK (balance >= 0),
    -- Sequence number of the wallet's newest ledger entry; entries are
    -- numbered 1, 2, 3, ... per wallet with no gaps.
    last_seq    BIGINT NOT NULL CHECK (last_seq >= 1),
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX wallets_by_user ON wallets (user_id, created_at);

CREATE TABLE ledger_entries (
    -- Also the event_id of the event published for this entry.
    id                      UUID PRIMARY KEY,
    wallet_id               UUID NOT NULL REFERENCES wallets (id),
    seq                     BIGINT NOT NULL,
    kind                    TEXT NOT NULL
                            CHECK (kind IN ('created', 'funded', 'transfer_out', 'transfer_in')),
    -- Magnitude; the kind gives the sign.
    amount                  NUMERIC(19, 4) NOT NULL CHECK (amount >= 0),
    balance_after           NUMERIC(19, 4) NOT NULL,
    transfer_id             UUID,
    counterparty_wallet_id  UUID,
    created_at              TIMESTAMPTZ NOT NULL,
    -- The Idempotency-Key of the request that wrote the entry, if it had
    -- one: how a client's operation log is matched against the ledger.
    request_key             TEXT,
    UNIQUE (wallet_id, seq)
);
CREATE INDEX ledger_by_request_key ON ledger_entries (request_key) WHERE request_key IS NOT NULL;
CREATE INDEX ledger_by_transfer ON ledger_entries (transfer_id) WHERE transfer_id IS NOT NULL;

CREATE TABLE outbox (
    id            BIGSERIAL PRIMARY KEY,
    event_id      UUID NOT NULL UNIQUE REFERENCES ledger_entries (id),
    -- The partition key.
    wallet_id     UUID NOT NULL,
    -- The exact bytes to publish: a wallet-events JSON document.
    payload       TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    published_at  TIMESTAMPTZ
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

-- Wakes the relay as soon as a transaction with new outbox rows commits
-- (notifications are delivered at commit, and only then).
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

CREATE TABLE idempotency_keys (
    key          TEXT PRIMARY KEY,
    -- What the first request asked for; a different request with the same
    -- key is refused.
    fingerprint  TEXT NOT NULL,
    -- The first response's data, replayed verbatim on a repeat.
    response     JSONB,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
