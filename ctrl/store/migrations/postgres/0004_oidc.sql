-- 0004: per-tenant OpenID Connect providers, pending sign-ins (state, PKCE verifier, nonce;
-- single use, short-lived) and the link from an IdP subject to a user.
CREATE TABLE oidc_providers (
  id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  name TEXT NOT NULL,
  body TEXT NOT NULL,
  client_secret TEXT NOT NULL DEFAULT '',
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  UNIQUE (tenant_id, name)
);

CREATE TABLE oidc_logins (
  state_hash TEXT PRIMARY KEY,
  provider_id TEXT NOT NULL REFERENCES oidc_providers(id) ON DELETE CASCADE,
  binding_hash TEXT NOT NULL,
  nonce TEXT NOT NULL,
  pkce_verifier TEXT NOT NULL,
  return_to TEXT NOT NULL,
  expires_at BIGINT NOT NULL
);
CREATE INDEX oidc_logins_expiry ON oidc_logins (expires_at);
CREATE INDEX oidc_logins_provider ON oidc_logins (provider_id);

CREATE TABLE oidc_identities (
  provider_id TEXT NOT NULL REFERENCES oidc_providers(id) ON DELETE CASCADE,
  subject TEXT NOT NULL,
  user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  created_at BIGINT NOT NULL,
  PRIMARY KEY (provider_id, subject)
);
CREATE INDEX oidc_identities_user ON oidc_identities (user_id);
