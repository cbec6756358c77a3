-- Settlement schema (SQLite, the embedded default). Same tables and rules as the PostgreSQL
-- migration; AUTOINCREMENT keeps outbox ids from ever being reused.

CREATE TABLE products (
    sku             TEXT PRIMARY KEY,
    name            TEXT    NOT NULL,
    price_cents     INTEGER NOT NULL CHECK (price_cents >= 0),
    total_stock     INTEGER NOT NULL CHECK (total_stock >= 0),
    sold            INTEGER NOT NULL DEFAULT 0 CHECK (sold >= 0),
    per_buyer_limit INTEGER NOT NULL CHECK (per_buyer_limit >= 1),
    max_per_order   INTEGER NOT NULL CHECK (max_per_order >= 1),
    sale_state      TEXT    NOT NULL CHECK (sale_state IN ('on_sale', 'paused')),
    version         INTEGER NOT NULL DEFAULT 1,
    updated_at_ms   INTEGER NOT NULL,
    CONSTRAINT products_sold_within_stock CHECK (sold <= total_stock)
);

CREATE TABLE orders (
    id               TEXT PRIMARY KEY,
    reservation_id   TEXT    NOT NULL,
    user_sub         TEXT    NOT NULL,
    sku              TEXT    NOT NULL REFERENCES products (sku),
    qty              INTEGER NOT NULL CHECK (qty > 0),
    unit_price_cents INTEGER NOT NULL CHECK (unit_price_cents >= 0),
    total_cents      INTEGER NOT NULL CHECK (total_cents >= 0),
    status           TEXT    NOT NULL CHECK (status IN ('confirmed', 'shipped', 'delivered', 'cancelled')),
    version          INTEGER NOT NULL DEFAULT 1,
    fence            INTEGER NOT NULL DEFAULT 0,
    created_at_ms    INTEGER NOT NULL,
    updated_at_ms    INTEGER NOT NULL,
    CONSTRAINT orders_one_per_reservation UNIQUE (reservation_id)
);
CREATE INDEX orders_by_buyer ON orders (user_sub, created_at_ms DESC, id DESC);
CREATE INDEX orders_by_sku_status ON orders (sku, status);

CREATE TABLE order_status_history (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id    TEXT    NOT NULL REFERENCES orders (id),
    from_status TEXT,
    to_status   TEXT    NOT NULL,
    actor       TEXT    NOT NULL,
    fence       INTEGER,
    at_ms       INTEGER NOT NULL
);
CREATE INDEX order_status_history_by_order ON order_status_history (order_id, id);

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    topic           TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    published_at_ms INTEGER
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at_ms IS NULL;
