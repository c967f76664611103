pub mod channel;
pub mod config;
pub mod diag;
pub mod engine;
pub mod record;
pub mod rules;
pub mod secret;
pub mod yaml;
