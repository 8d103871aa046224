-- 0007: when a connection's refresh token dies, when the platform says.
--
-- QuickBooks answers every token request with x_refresh_token_expires_in (100 days, rolling:
-- a connection left unused that long must be connected again; and since November 2025 at most
-- five years in all). Kept so that admins see it on the connection (GET /api/integrations) and
-- can reconnect before runs start failing. NULL: the platform does not say (Xero, HubSpot,
-- Klaviyo, Meta), or a token written before this migration.
ALTER TABLE connections ADD COLUMN refresh_token_expires_at timestamptz;
