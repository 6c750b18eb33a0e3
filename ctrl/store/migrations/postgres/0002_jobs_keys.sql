-- 0002: persistent job scheduler, server signing keys, audit retention index.
CREATE TABLE jobs (
  name TEXT PRIMARY KEY,
  next_run BIGINT NOT NULL,
  lease_owner TEXT NOT NULL DEFAULT '',
  lease_until BIGINT NOT NULL DEFAULT 0,
  last_run BIGINT NOT NULL DEFAULT 0,
  last_status TEXT NOT NULL DEFAULT ''
);

CREATE TABLE signing_keys (
  name TEXT PRIMARY KEY,
  secret BYTEA NOT NULL,
  created_at BIGINT NOT NULL
);

CREATE INDEX audit_time ON audit_events (time);
