-- Broker accounts whose secret was rotated: the secret is derived from the deployment's key and this generation
-- (fieldnet.accounts); an account not listed is at generation 0.
CREATE TABLE device_credentials (
    username    text PRIMARY KEY,
    generation  integer NOT NULL CHECK (generation >= 0),
    rotated_at  timestamptz NOT NULL DEFAULT now()
);
