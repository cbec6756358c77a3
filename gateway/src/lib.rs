//! The Pingora edge of stockgate.

#![forbid(unsafe_code)]
