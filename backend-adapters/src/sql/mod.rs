//! SQL adapters (PostgreSQL, and SQLite for the embedded default).
