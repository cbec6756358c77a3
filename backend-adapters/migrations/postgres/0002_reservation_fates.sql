-- The fate of a reservation id, claimed once (issue 13): an order, or "released" (refused by
-- settlement, or released by the reconciler). Whoever inserts the row first decides; the
-- second writer finds the row and obeys it. This is what keeps a confirm that settlement
-- committed from being undone by maintenance, and a reservation that maintenance released from
-- being committed afterwards.
CREATE TABLE reservation_fates (
    reservation_id TEXT   PRIMARY KEY,
    fate           TEXT   NOT NULL CHECK (fate IN ('ordered', 'released')),
    -- Who decided and why: order, no_stock, unknown_sku, purchase_limit, total_out_of_range,
    -- reconciler.
    reason         TEXT   NOT NULL,
    decided_at_ms  BIGINT NOT NULL
);

-- Orders settled before this table existed are claimed as ordered.
INSERT INTO reservation_fates (reservation_id, fate, reason, decided_at_ms)
SELECT reservation_id, 'ordered', 'order', created_at_ms FROM orders;

-- The per-buyer limit is checked in SQL too: live units of one buyer for one SKU.
CREATE INDEX orders_live_by_sku_buyer ON orders (sku, user_sub) WHERE status <> 'cancelled';
