//! tocsin: an alerting daemon. Sources watch data files and turn them into
//! records; the engine evaluates compiled rules per (rule, key) and emits
//! notifications on state edges; channels deliver them.
//!
//! ```text
//! source::file ──records──▶ engine (rules, per-key state) ──notifications──▶ channel::{email, webhook, file, log}
//! ```
//!
//! Modules depend downwards only (none imports one that imports it back):
//!
//! - `config`, `rules`: file formats, read with positions (`yaml`, `diag`);
//!   `load` reads a config with its rules.
//! - `notification`: the notification, its id, state, severity and subject
//!   prefix; used by `engine`, `store`, `channel` and `source::health`.
//!   `html`: HTML read as text and text escaped into HTML, for both.
//! - `engine`: pure and synchronous, `now` passed in: `compile` → `rule`;
//!   `condition`, `text` (the phrase automaton), `words`; per-key `state`,
//!   `keys`, `times`; `machine` the state machine; `mod` the batch loop.
//! - `rows`: a table's rows packed by key, as sources hold them between
//!   versions and the store hands them back, and a row as read (`RowIn`)
//!   with its key; used by `source` and `store`.
//! - `source`: `file`, `feed`, `fetch`/`poll` into `batch`es; `table`
//!   compares a table's versions; `health`.
//! - `store`: state and positions, on SQLite or PostgreSQL (`store::sql`
//!   the values and rows both speak, `store::db` the connection over
//!   either, `store::pg` the PostgreSQL connection and its fence);
//!   `store::outbox` the outbox, history and silences; `store::ledger` the
//!   evidence ledger (hash chain and kept documents), read by `audit`;
//!   `store::lease` the HA lease; `store::copy` `tocsin migrate`.
//! - `channel`: `email`, `webhook`, file and log; `digest`, `error`.
//! - `daemon`: wiring, reload and shutdown; `parts` the running sources and
//!   workers, `deliver` the delivery loops, `ha` leading or standing by on
//!   a PostgreSQL store; `main.rs` owns signals and
//!   exit codes.

#![forbid(unsafe_code)]

pub mod alerts;
pub mod audit;
pub mod channel;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod diag;
pub mod engine;
pub mod eval;
pub mod explain;
pub mod expr;
pub mod html;
pub mod http;
pub mod lint;
pub mod load;
pub mod notification;
pub mod record;
pub mod rows;
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
