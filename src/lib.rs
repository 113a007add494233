//! sipwake: a SIP registrar and stateful proxy that wakes sleeping softphones with a
//! VoIP push before it hands them a call.
//!
//! The crate is layered as `docs/ARCHITECTURE.md` describes (with the path of a
//! REGISTER and of a call to a sleeping phone): [`sip`] is the message model (no I/O),
//! [`transport`] moves bytes and knows flows, [`transaction`] implements RFC 3261 §17,
//! [`registrar`] owns bindings and their durable store, and [`proxy`] is the routing
//! core that ties them together. [`config`] turns the TOML file into typed settings.
//! [`auth`] is digest authentication of phones in local registrar mode.

#![warn(missing_docs)]

pub mod auth;
pub mod background;
pub mod config;
pub mod generations;
pub mod ids;
pub mod logfmt;
pub mod parted;
pub mod prehashed;
pub mod proxy;
pub mod push;
pub mod registrar;
pub mod reload;
pub mod rlimit;
pub mod server;
pub mod shutdown;
pub mod sip;
pub mod transaction;
pub mod transport;

pub mod admin;
pub mod metrics;
