-- Settlement schema (PostgreSQL). SQL is the final authority on stock: `sold` never exceeds
-- `total_stock` (CHECK), and one reservation id is at most one order (UNIQUE).
-- Money is in integer minor units (cents); times are milliseconds since the Unix epoch.
-- Every integer is BIGINT so that rows decode the same way through sqlx's Any driver.

CREATE TABLE products (
    sku             TEXT PRIMARY KEY,
    name            TEXT    NOT NULL,
    price_cents     BIGINT  NOT NULL CHECK (price_cents >= 0),
    total_stock     BIGINT  NOT NULL CHECK (total_stock >= 0),
    sold            BIGINT  NOT NULL DEFAULT 0 CHECK (sold >= 0),
    per_buyer_limit BIGINT  NOT NULL CHECK (per_buyer_limit >= 1),
    max_per_order   BIGINT  NOT NULL CHECK (max_per_order >= 1),
    sale_state      TEXT    NOT NULL CHECK (sale_state IN ('on_sale', 'paused')),
    version         BIGINT  NOT NULL DEFAULT 1,
    updated_at_ms   BIGINT  NOT NULL,
    CONSTRAINT products_sold_within_stock CHECK (sold <= total_stock)
);

CREATE TABLE orders (
    id               TEXT PRIMARY KEY,
    reservation_id   TEXT   NOT NULL,
    user_sub         TEXT   NOT NULL,
    sku              TEXT   NOT NULL REFERENCES products (sku),
    qty              BIGINT NOT NULL CHECK (qty > 0),
    unit_price_cents BIGINT NOT NULL CHECK (unit_price_cents >= 0),
    total_cents      BIGINT NOT NULL CHECK (total_cents >= 0),
    status           TEXT   NOT NULL CHECK (status IN ('confirmed', 'shipped', 'delivered', 'cancelled')),
    version          BIGINT NOT NULL DEFAULT 1,
    -- The highest fencing token that changed this order's status (ops workflow).
    fence            BIGINT NOT NULL DEFAULT 0,
    created_at_ms    BIGINT NOT NULL,
    updated_at_ms    BIGINT NOT NULL,
    CONSTRAINT orders_one_per_reservation UNIQUE (reservation_id)
);
-- A buyer's own orders, newest first.
CREATE INDEX orders_by_buyer ON orders (user_sub, created_at_ms DESC, id DESC);
-- Units sold per SKU and buyer (reconciler repair).
CREATE INDEX orders_by_sku_status ON orders (sku, status);

CREATE TABLE order_status_history (
    id          BIGSERIAL PRIMARY KEY,
    order_id    TEXT   NOT NULL REFERENCES orders (id),
    from_status TEXT,
    to_status   TEXT   NOT NULL,
    actor       TEXT   NOT NULL,
    fence       BIGINT,
    at_ms       BIGINT NOT NULL
);
CREATE INDEX order_status_history_by_order ON order_status_history (order_id, id);

-- Events written in the same transaction as the change they describe; the relay publishes
-- them in id order. Writers take an advisory lock before appending, so ids commit in order.
CREATE TABLE outbox (
    id              BIGSERIAL PRIMARY KEY,
    topic           TEXT   NOT NULL,
    payload         TEXT   NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    published_at_ms BIGINT
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at_ms IS NULL;
