//! Redis adapters. Every key of one SKU carries the `{sku}` hash tag so each script touches
//! one slot and runs unchanged on Redis Cluster.
