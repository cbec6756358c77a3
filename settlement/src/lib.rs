//! The settlement service: the SQL side of stockgate, final authority on stock.

#![forbid(unsafe_code)]
