//! The integration tests, one binary: each module below was once a binary of its own,
//! all sharing the harness in `common` (the proxy process, SIP messages, phones, push
//! service stand-ins). One binary compiles that harness once and links once.
//!
//! Run one part with a filter: `cargo nextest run --test it push_apns::`.

mod common;

mod admin;
mod auth;
mod calls;
mod cluster;
mod cluster_push;
mod conformance;
mod durability;
mod flood;
mod lifecycle;
mod messages;
mod properties;
mod push;
mod push_apns;
mod push_fcm;
mod push_gateway;
mod redis_cluster;
mod refresh;
mod registrar;
mod relay;
mod robustness;
mod sipp;
mod threads;
mod tls;
