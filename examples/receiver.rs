//! A webhook receiver for the delivery benchmark (bench/deliver.sh): answers
//! 200 to every request on 127.0.0.1 and counts them; `GET /count` says how
//! many it has seen. Usage: receiver PORT_FILE (it writes its port there).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let port_file = std::env::args().nth(1).expect("usage: receiver PORT_FILE");
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    let app = axum::Router::new()
        .route(
            "/count",
            axum::routing::get(move || {
                let c = c.clone();
                async move { c.load(Ordering::Relaxed).to_string() }
            }),
        )
        .fallback(move |_body: axum::body::Bytes| {
            let count = count.clone();
            async move {
                count.fetch_add(1, Ordering::Relaxed);
                "ok"
            }
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::fs::write(&port_file, port.to_string()).expect("port file");
    axum::serve(listener, app).await.expect("serve");
}
