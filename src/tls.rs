//! TLS for every client the daemon runs (webhooks, HTTP sources, SMTP): one
//! crypto provider for the process.

/// Makes ring the TLS crypto provider of the process; calling again is
/// harmless. reqwest is built without one of its own.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
