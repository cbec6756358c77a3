-- The relay delivers each outbox row twice, each delivery marked on its own: to the Redis side
-- (the store's effects and the stream; published_at_ms) and to the message broker
-- (broker_published_at_ms). A broker that is down never holds back the Redis side: cancelled
-- units return to stock through an outage. Rows older than this migration predate the broker
-- sink: they count as delivered to it.
ALTER TABLE outbox ADD COLUMN broker_published_at_ms INTEGER;
UPDATE outbox SET broker_published_at_ms = COALESCE(published_at_ms, created_at_ms);
CREATE INDEX outbox_broker_unpublished ON outbox (id) WHERE broker_published_at_ms IS NULL;
