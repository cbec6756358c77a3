//! The `stockgate` program: it composes the edge gateway (the `gateway` crate) and the
//! settlement service (the `settlement` crate) from one configuration file.
//!
//! [`config`] reads the file, [`cli`] the command line (every subcommand), [`all_in_one`]
//! runs both services in one process (the embedded default). Nothing here decides how a
//! request is answered: that lives in the two service crates.

#![forbid(unsafe_code)]

pub mod all_in_one;
pub mod cli;
pub mod config;
