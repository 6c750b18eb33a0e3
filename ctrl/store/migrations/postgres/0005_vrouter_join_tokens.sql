-- 0005: single-use vrouter join tokens. The token itself is a signed cvt1 string handed out
-- once; only its SHA-256 is kept, to check it is the one issued and to consume it.
CREATE TABLE vrouter_join_tokens (
  id TEXT PRIMARY KEY,
  vrouter_id TEXT NOT NULL REFERENCES vrouters(id) ON DELETE CASCADE,
  token_hash TEXT NOT NULL,
  expires_at BIGINT NOT NULL,
  used_at BIGINT NOT NULL DEFAULT 0,
  created_by TEXT NOT NULL DEFAULT '',
  created_at BIGINT NOT NULL
);
CREATE INDEX vrouter_join_tokens_vrouter ON vrouter_join_tokens (vrouter_id);
CREATE INDEX vrouter_join_tokens_expiry ON vrouter_join_tokens (expires_at);
