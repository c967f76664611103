//! tocsin: an alerting daemon. Sources watch data files and turn them into
//! records; the engine evaluates compiled rules per (rule, key) and emits
//! notifications on state edges; channels deliver them.
//!
//! ```text
//! source::file ──records──▶ engine (rules, per-key state) ──notifications──▶ channel::{email, webhook, file, log}
//! ```
//!
//! - `config`, `rules`: file formats, loaded with positions (`yaml`, `diag`).
//! - `engine`: pure and synchronous; `now` is passed in.
//! - `daemon`: wiring and shutdown; `main.rs` owns signals and exit codes.

#![forbid(unsafe_code)]

pub mod alerts;
pub mod channel;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod diag;
pub mod engine;
pub mod eval;
pub mod explain;
pub mod expr;
pub mod http;
pub mod lint;
pub mod load;
pub mod notification;
pub mod record;
pub mod rules;
pub mod ruletest;
pub mod schedule;
pub mod schema;
pub mod secret;
pub mod sendtest;
pub mod silence;
pub mod source;
pub mod store;
pub mod systemd;
pub mod tls;
pub mod yaml;
