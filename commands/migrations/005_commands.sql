-- Remote control: a campaign (one command to one lamp or to thousands) and each lamp's outcome.
CREATE TABLE commands (
    id           text PRIMARY KEY CHECK (id ~ '^[a-z0-9]{8,40}$'),
    op           text NOT NULL CHECK (op IN ('switch', 'dim', 'resume', 'schedule', 'report')),
    params       jsonb NOT NULL,
    target       jsonb NOT NULL,
    reason       text,
    actor        text NOT NULL,
    status       text NOT NULL CHECK (status IN ('queued', 'running', 'done', 'cancelled')),
    pace         real NOT NULL,
    total        integer NOT NULL,
    created_at   timestamptz NOT NULL,
    started_at   timestamptz,
    finished_at  timestamptz,
    expires_at   timestamptz NOT NULL,
    outcome      jsonb
);
CREATE INDEX commands_created_idx ON commands (created_at DESC);
CREATE INDEX commands_live_idx ON commands (status) WHERE status IN ('queued', 'running');
CREATE TABLE command_lamps (
    command_id  text NOT NULL REFERENCES commands ON DELETE CASCADE,
    lamp_id     text NOT NULL,
    district    text NOT NULL,
    state       text NOT NULL CHECK (state IN ('queued', 'sent', 'acked', 'failed', 'expired', 'cancelled')),
    attempts    smallint NOT NULL DEFAULT 0,
    sent_at     timestamptz,
    done_at     timestamptz,
    error       text,
    PRIMARY KEY (command_id, lamp_id)
);
CREATE INDEX command_lamps_state_idx ON command_lamps (command_id, state);
CREATE INDEX command_lamps_lamp_idx ON command_lamps (lamp_id);
