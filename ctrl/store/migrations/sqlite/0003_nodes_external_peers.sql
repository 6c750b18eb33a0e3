-- 0003: static external WireGuard peers; node WireGuard keys unique among nodes; CVLAN index
-- for building network maps.
CREATE TABLE external_peers (
  id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  cvlan_id TEXT NOT NULL REFERENCES cvlans(id) ON DELETE CASCADE,
  name TEXT NOT NULL,
  body TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  UNIQUE (tenant_id, name)
);
CREATE INDEX external_peers_cvlan ON external_peers (cvlan_id);

ALTER TABLE nodes ADD COLUMN wg_key TEXT NOT NULL DEFAULT '';
CREATE UNIQUE INDEX nodes_wg_key ON nodes (wg_key) WHERE wg_key <> '';
CREATE INDEX nodes_cvlan ON nodes (cvlan_id);
