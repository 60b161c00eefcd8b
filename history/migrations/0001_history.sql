-- The history database: an exact image of the wallet ledger, built from the
-- topic. Each event is applied once (event_id is the key) and in per-wallet
-- sequence order; an event that arrives ahead of its predecessor waits in
-- parked_events; an undecodable message waits in dead_letters.

CREATE TABLE history_entries (
    event_id                UUID PRIMARY KEY,
    wallet_id               UUID NOT NULL,
    user_id                 VARCHAR(100) NOT NULL,
    seq                     BIGINT NOT NULL,
    kind                    TEXT NOT NULL,
    amount                  NUMERIC(19, 4) NOT NULL,
    balance_after           NUMERIC(19, 4) NOT NULL,
    transfer_id             UUID,
    counterparty_wallet_id  UUID,
    committed_at            TIMESTAMPTZ NOT NULL,
    applied_at              TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    -- Where the applied copy came from, for diagnosis.
    source_partition        INTEGER NOT NULL,
    source_offset           BIGINT NOT NULL,
    UNIQUE (wallet_id, seq)
);
CREATE INDEX history_by_user ON history_entries (user_id, committed_at DESC, event_id DESC);

-- Per wallet: the newest applied sequence number and the running balance.
CREATE TABLE wallet_heads (
    wallet_id  UUID PRIMARY KEY,
    last_seq   BIGINT NOT NULL,
    balance    NUMERIC(19, 4) NOT NULL
);

CREATE TABLE parked_events (
    event_id          UUID PRIMARY KEY,
    wallet_id         UUID NOT NULL,
    seq               BIGINT NOT NULL,
    payload           TEXT NOT NULL,
    source_partition  INTEGER NOT NULL,
    source_offset     BIGINT NOT NULL,
    parked_at         TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX parked_by_wallet ON parked_events (wallet_id, seq);

CREATE TABLE dead_letters (
    id           BIGSERIAL PRIMARY KEY,
    topic        TEXT NOT NULL,
    partition    INTEGER NOT NULL,
    "offset"     BIGINT NOT NULL,
    key          BYTEA,
    payload      BYTEA,
    error        TEXT NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (topic, partition, "offset")
);
