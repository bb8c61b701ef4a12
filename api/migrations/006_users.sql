-- The people who use the API and the pages, their roles, and their tokens (hashed).

CREATE TABLE users (
    id             bigserial PRIMARY KEY,
    name           text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{1,63}$'),
    role           text NOT NULL CHECK (role IN ('viewer', 'operator', 'crew', 'admin')),
    crew_id        text REFERENCES crews,
    password_hash  text,                               -- scrypt; NULL: API tokens only, no login form
    lang           text NOT NULL DEFAULT 'zh' CHECK (lang IN ('zh', 'en')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    disabled_at    timestamptz,
    CHECK ((role = 'crew') = (crew_id IS NOT NULL))
);
CREATE TABLE user_tokens (
    token_hash    bytea PRIMARY KEY,                   -- sha256 of the token; the token itself is never stored
    user_id       bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    kind          text NOT NULL CHECK (kind IN ('api', 'session')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,                         -- NULL: until revoked
    last_used_at  timestamptz
);
CREATE INDEX user_tokens_user_idx ON user_tokens (user_id);
