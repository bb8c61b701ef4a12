-- Crews and their shifts, fault tickets and their events, the outbox of notifications and its deliveries,
-- citizens' reports.

CREATE TABLE crews (
    id              text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9-]{1,31}$'),
    name            text NOT NULL,
    districts       text[] NOT NULL DEFAULT '{}',
    supervisor      boolean NOT NULL DEFAULT false,   -- receives escalations of overdue tickets
    webhook_url     text,
    webhook_secret  text,
    notify_urls     text[] NOT NULL DEFAULT '{}',     -- chat robots and email, as Apprise notification URLs
    mqtt            boolean NOT NULL DEFAULT true,    -- ticket events on sl/crews/{crew}/tickets
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (webhook_url IS NULL OR webhook_secret IS NOT NULL)
);
-- A crew with roster entries is on duty inside them; a crew without any is always on duty.
CREATE TABLE crew_shifts (
    crew_id    text NOT NULL REFERENCES crews ON DELETE CASCADE,
    starts_at  timestamptz NOT NULL,
    ends_at    timestamptz NOT NULL CHECK (ends_at > starts_at),
    PRIMARY KEY (crew_id, starts_at)
);

CREATE TABLE tickets (
    id            bigserial PRIMARY KEY,
    priority      text NOT NULL CHECK (priority IN ('P1', 'P2', 'P3', 'P4')),
    fault         text NOT NULL,
    asset_type    text NOT NULL CHECK (asset_type IN ('lamp', 'cabinet')),
    asset_id      text NOT NULL,
    district      text NOT NULL,
    crew_id       text REFERENCES crews,
    status        text NOT NULL CHECK (status IN ('open', 'dispatched', 'acknowledged', 'resolved', 'verified',
                                                  'cancelled', 'transient', 'reopened')),
    source        text NOT NULL CHECK (source IN ('device', 'backend', 'citizen')),
    opened_at     timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    first_seen    timestamptz NOT NULL,
    last_seen     timestamptz NOT NULL,
    occurrences   integer NOT NULL DEFAULT 1,
    ack_deadline  timestamptz,
    deadline      timestamptz,
    escalated_at  timestamptz,
    detail        jsonb NOT NULL DEFAULT '{}'
);
-- Deduplication: at most one live ticket per asset and fault.
CREATE UNIQUE INDEX tickets_live_idx ON tickets (asset_type, asset_id, fault)
    WHERE status IN ('open', 'dispatched', 'acknowledged', 'resolved', 'reopened');
CREATE INDEX tickets_status_idx ON tickets (status, priority, opened_at);
CREATE INDEX tickets_asset_idx ON tickets (asset_type, asset_id, opened_at);
CREATE TABLE ticket_lamps (
    ticket_id  bigint NOT NULL REFERENCES tickets ON DELETE CASCADE,
    lamp_id    text NOT NULL,
    PRIMARY KEY (ticket_id, lamp_id)
);
CREATE INDEX ticket_lamps_lamp_idx ON ticket_lamps (lamp_id);
CREATE TABLE ticket_events (
    id           bigserial PRIMARY KEY,
    ticket_id    bigint NOT NULL REFERENCES tickets ON DELETE CASCADE,
    ts           timestamptz NOT NULL,
    actor        text NOT NULL,
    action       text NOT NULL,
    from_status  text,
    to_status    text,
    note         text NOT NULL DEFAULT '',
    parts        text[] NOT NULL DEFAULT '{}'
);
CREATE INDEX ticket_events_ticket_idx ON ticket_events (ticket_id, id);

-- The transactional outbox: a ticket change and its notifications commit together; dispatchers deliver.
CREATE TABLE outbox (
    id               bigserial PRIMARY KEY,
    ticket_id        bigint NOT NULL REFERENCES tickets ON DELETE CASCADE,
    event_id         bigint NOT NULL REFERENCES ticket_events ON DELETE CASCADE,
    channel          text NOT NULL CHECK (channel IN ('webhook', 'notify', 'mqtt')),
    crew_id          text NOT NULL,
    idempotency_key  text NOT NULL UNIQUE,
    payload          jsonb NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    last_error       text
);
CREATE INDEX outbox_pending_idx ON outbox (next_attempt_at) WHERE delivered_at IS NULL;
CREATE TABLE deliveries (
    id           bigserial PRIMARY KEY,
    outbox_id    bigint NOT NULL REFERENCES outbox ON DELETE CASCADE,
    ticket_id    bigint NOT NULL,
    attempt      integer NOT NULL,
    ts           timestamptz NOT NULL DEFAULT now(),
    ok           boolean NOT NULL,
    detail       text NOT NULL,
    duration_ms  real NOT NULL
);
CREATE INDEX deliveries_ticket_idx ON deliveries (ticket_id, id);

-- Citizens' reports of dark or damaged lamps.
CREATE TABLE citizen_reports (
    id          bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    lamp_id     text NOT NULL,
    ticket_id   bigint REFERENCES tickets,
    description text NOT NULL,
    contact     text,
    client      text NOT NULL
);
