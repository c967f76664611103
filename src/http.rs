//! `/healthz` and `/metrics` over HTTP (axum; `http.listen`, loopback
//! unless `public: true`). The daemon's parts write figures and health into
//! [`Shared`]; the handlers only read them (and the outbox, at a scrape).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use chrono::Utc;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

type Labels = Vec<(&'static str, String)>;
type Seconds = Gauge<f64, AtomicU64>;

/// The daemon's figures, as Prometheus reads them.
#[derive(Default)]
pub struct Metrics {
    registry: Registry,
    pub records: Family<Labels, Counter>,
    pub source_errors: Family<Labels, Counter>,
    pub source_last_success: Family<Labels, Seconds>,
    pub evaluations: Family<Labels, Counter>,
    pub notifications: Family<Labels, Counter>,
    pub deliveries: Family<Labels, Counter>,
    pub retries: Family<Labels, Counter>,
    pub failures: Family<Labels, Counter>,
    pub non_numeric: Counter,
    pub expr_errors: Counter,
    pub over_budget: Family<Labels, Counter>,
    pub outbox_pending: Gauge,
    pub outbox_failed: Gauge,
    pub outbox_oldest: Seconds,
    pub reloads: Family<Labels, Counter>,
    pub reload_success: Gauge,
    pub reload_time: Seconds,
    pub ha_leader: Gauge,
    pub ha_epoch: Gauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut m = Metrics::default();
        let r = &mut m.registry;
        r.register(
            "tocsin_records",
            "Records read, by source",
            m.records.clone(),
        );
        r.register(
            "tocsin_source_errors",
            "Reads that failed (fetch errors, non-2xx answers, documents or tables that do not parse), by source",
            m.source_errors.clone(),
        );
        r.register(
            "tocsin_source_last_success_timestamp_seconds",
            "When a source last read successfully (Unix time)",
            m.source_last_success.clone(),
        );
        r.register(
            "tocsin_rule_evaluations",
            "Records a rule's condition was evaluated on, by rule",
            m.evaluations.clone(),
        );
        r.register(
            "tocsin_notifications",
            "Notifications made, by rule and state (firing, resolved)",
            m.notifications.clone(),
        );
        r.register(
            "tocsin_deliveries",
            "Notifications delivered, by channel",
            m.deliveries.clone(),
        );
        r.register(
            "tocsin_delivery_retries",
            "Deliveries that failed and will be tried again, by channel",
            m.retries.clone(),
        );
        r.register(
            "tocsin_delivery_failures",
            "Deliveries that failed for good, by channel",
            m.failures.clone(),
        );
        r.register(
            "tocsin_non_numeric_values",
            "Numeric comparisons that met text that is not a number",
            m.non_numeric.clone(),
        );
        r.register(
            "tocsin_expr_errors",
            "`expr` conditions that failed to evaluate or gave no boolean",
            m.expr_errors.clone(),
        );
        r.register(
            "tocsin_evaluation_budget_exceeded",
            "Evaluations of a rule's expression and renderings of its templates that ran past their budget and were cut off, by rule",
            m.over_budget.clone(),
        );
        r.register(
            "tocsin_outbox_pending",
            "Notifications waiting in the outbox",
            m.outbox_pending.clone(),
        );
        r.register(
            "tocsin_outbox_failed",
            "Notifications in the outbox that failed for good",
            m.outbox_failed.clone(),
        );
        r.register(
            "tocsin_outbox_oldest_pending_age_seconds",
            "Age of the oldest pending notification (0 when none)",
            m.outbox_oldest.clone(),
        );
        r.register(
            "tocsin_reloads",
            "Reloads, by result (applied, refused)",
            m.reloads.clone(),
        );
        r.register(
            "tocsin_last_reload_success",
            "Whether the last reload was applied (1) or refused (0); 1 before any",
            m.reload_success.clone(),
        );
        r.register(
            "tocsin_last_reload_timestamp_seconds",
            "When the last reload happened (Unix time; the start before any)",
            m.reload_time.clone(),
        );
        r.register(
            "tocsin_ha_leader",
            "Whether this instance leads (1): runs sources, rules and delivery; 0 on a standby of a PostgreSQL store",
            m.ha_leader.clone(),
        );
        r.register(
            "tocsin_ha_epoch",
            "The epoch of the lease this instance leads under (0: none, or an SQLite store)",
            m.ha_epoch.clone(),
        );
        r.register(
            "tocsin_build",
            "The running build",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION").to_string())]),
        );
        m.reload_success.set(1);
        m.reload_time.set(now_secs());
        m.ha_leader.set(1);
        m
    }

    pub fn reloaded(&self, applied: bool) {
        let result = if applied { "applied" } else { "refused" };
        self.reloads
            .get_or_create(&vec![("result", result.to_string())])
            .inc();
        self.reload_success.set(i64::from(applied));
        self.reload_time.set(now_secs());
    }
}

fn now_secs() -> f64 {
    Utc::now().timestamp_millis() as f64 / 1000.0
}

/// One label.
pub fn label(name: &'static str, value: &str) -> Labels {
    vec![(name, value.to_string())]
}

/// What `/healthz` reports on.
#[derive(Default, Debug)]
pub struct Health {
    /// The last commit to the store failed: why.
    pub store: Option<String>,
    /// Unhealthy sources, with their last error.
    pub sources: Vec<(String, String)>,
    /// Channels whose last delivery failed, with the error.
    pub channels: BTreeMap<String, String>,
}

/// Where this instance stands: alone on an SQLite store, or in an HA group
/// on a PostgreSQL store, leading or standing by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Single,
    Standby,
    /// Leading under the lease of `epoch`, which this instance knows to be
    /// valid until `until` (measured from before it asked).
    Leader {
        epoch: i64,
        until: std::time::Instant,
    },
}

/// Shared by the daemon's parts and the HTTP handlers.
pub struct Shared {
    pub metrics: Metrics,
    pub health: Mutex<Health>,
    role: Mutex<Role>,
    /// The store, for outbox figures at a scrape.
    pub state: crate::store::Location,
    /// The scrapes' own connection to it, opened at the first.
    store: Mutex<Option<crate::store::Store>>,
}

impl Shared {
    pub fn new(state: crate::store::Location) -> Arc<Shared> {
        Arc::new(Shared {
            metrics: Metrics::new(),
            health: Mutex::new(Health::default()),
            role: Mutex::new(Role::Single),
            state,
            store: Mutex::new(None),
        })
    }

    pub fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn role(&self) -> Role {
        *self.role.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_role(&self, role: Role) {
        *self.role.lock().unwrap_or_else(|e| e.into_inner()) = role;
        let (leader, epoch) = match role {
            Role::Single => (1, 0),
            Role::Standby => (0, 0),
            Role::Leader { epoch, .. } => (1, epoch),
        };
        self.metrics.ha_leader.set(leader);
        self.metrics.ha_epoch.set(epoch);
    }

    /// Whether this instance may send and read sources now: always alone;
    /// as a leader, only while its lease is known valid, so that one
    /// paused past its lease sends nothing when it wakes, before it has
    /// even noticed.
    pub fn may_act(&self) -> bool {
        match self.role() {
            Role::Single => true,
            Role::Standby => false,
            Role::Leader { until, .. } => std::time::Instant::now() < until,
        }
    }

    /// A channel's last delivery: `None` when it went out.
    pub fn channel(&self, name: &str, error: Option<&str>) {
        let mut h = self.health();
        match error {
            Some(e) => h.channels.insert(name.to_string(), e.to_string()),
            None => h.channels.remove(name),
        };
    }
}

/// Serves until `shutdown`. Binding happens before this returns, so a
/// taken port is a start-up error.
pub async fn serve(
    listen: std::net::SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("http.listen {listen}: {e}"))?;
    tracing::info!(%listen, "serving /healthz and /metrics");
    let app = axum::Router::new()
        .route("/healthz", axum::routing::get(healthz))
        .route("/metrics", axum::routing::get(metrics))
        .with_state(shared);
    Ok(tokio::spawn(async move {
        let stop = async move { shutdown.cancelled().await };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!("http: {e}");
        }
    }))
}

async fn healthz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let role = shared.role();
    if role == Role::Standby {
        return (StatusCode::OK, "standby\n".to_string());
    }
    let h = shared.health();
    let mut problems = Vec::new();
    if let Some(e) = &h.store {
        problems.push(format!("store not writable: {e}"));
    }
    for (s, e) in &h.sources {
        problems.push(format!("source {s} unhealthy: {e}"));
    }
    for (c, e) in &h.channels {
        problems.push(format!("channel {c} failing: {e}"));
    }
    if problems.is_empty() {
        let answer = match role {
            Role::Leader { .. } => "leader\n",
            _ => "ok\n",
        };
        (StatusCode::OK, answer.to_string())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, problems.join("\n") + "\n")
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let m = &shared.metrics;
    let s = shared.clone();
    let outbox = tokio::task::spawn_blocking(move || {
        let mut conn = s.store.lock().unwrap_or_else(|e| e.into_inner());
        let store = match conn.take() {
            Some(store) => conn.insert(store),
            None => conn.insert(crate::store::Store::open(&s.state)?),
        };
        Ok::<_, crate::store::StoreError>((store.outbox_counts()?, store.oldest_pending()?))
    })
    .await;
    match outbox {
        Ok(Ok(((pending, failed), oldest))) => {
            m.outbox_pending.set(pending as i64);
            m.outbox_failed.set(failed as i64);
            let age = oldest.map_or(0.0, |t| (Utc::now() - t).num_milliseconds() as f64 / 1000.0);
            m.outbox_oldest.set(age.max(0.0));
        }
        Ok(Err(e)) => tracing::warn!("metrics: {e}"),
        Err(e) => tracing::warn!("metrics: {e}"),
    }
    let mut body = String::new();
    if encode(&mut body, &m.registry).is_err() {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            String::new(),
        );
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}
