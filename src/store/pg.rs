//! The PostgreSQL backend of the store's connection (`db::Db::Pg`).
//!
//! tokio-postgres does the protocol. Its connection (the socket) runs on a
//! small runtime of its own thread; the store's calls are synchronous, as
//! they are on SQLite, and wait for their answer with a plain executor, so
//! they may be made from any thread, a runtime's worker among them. (The
//! synchronous `postgres` crate cannot: it starts a runtime inside the
//! caller's.) A connection that breaks is made again at the next call.
//!
//! A daemon that leads an HA group writes under a [`Fence`]: every write
//! transaction first checks, holding the lease row for share until it ends,
//! that the lease still names this instance with the epoch it took. An
//! instance that lost the lease can therefore write nothing, even if it has
//! not noticed yet.

use std::collections::HashMap;
use std::error::Error;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, Statement};

use super::sql::{DbError, DbResult, Row, Tx, Value};

/// How a write refused by the fence begins.
pub const FENCED: &str = "fenced:";

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The schema, by version, applied in order; the version is kept in
/// `tocsin_schema`. Version 1 is what SQLite's migrations 1 to 8 make.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE rule_state (
    rule TEXT NOT NULL, key TEXT NOT NULL,
    firing BIGINT NOT NULL, since TEXT NOT NULL, last_sent TEXT, snapshot TEXT,
    seen TEXT, recent TEXT,
    PRIMARY KEY (rule, key));
CREATE TABLE table_rows (
    source TEXT NOT NULL, file TEXT NOT NULL, key TEXT NOT NULL, row TEXT NOT NULL,
    PRIMARY KEY (source, file, key));
CREATE TABLE log_cursor (
    source TEXT NOT NULL, file TEXT NOT NULL,
    dev BIGINT NOT NULL, ino BIGINT NOT NULL, "offset" BIGINT NOT NULL,
    line BIGINT NOT NULL, header TEXT, count BIGINT NOT NULL,
    prefix_len BIGINT, prefix_hash BYTEA,
    PRIMARY KEY (source, file));
CREATE TABLE outbox (
    id BIGSERIAL PRIMARY KEY, channel TEXT NOT NULL,
    notification TEXT NOT NULL, created_at TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0, next_at TEXT,
    status TEXT NOT NULL DEFAULT 'pending', last_error TEXT,
    rule TEXT, key TEXT);
CREATE INDEX outbox_by_channel ON outbox (channel, status, id);
CREATE INDEX outbox_by_key ON outbox (channel, status, rule, key, id);
CREATE TABLE history (
    id BIGSERIAL PRIMARY KEY, notification_id TEXT NOT NULL,
    channel TEXT NOT NULL, rule TEXT NOT NULL, key TEXT NOT NULL,
    state TEXT NOT NULL, at TEXT NOT NULL, outcome TEXT NOT NULL, detail TEXT);
CREATE TABLE poll_state (
    source TEXT PRIMARY KEY, url TEXT NOT NULL, etag TEXT, last_modified TEXT,
    item_ids BIGINT NOT NULL DEFAULT 1);
CREATE TABLE feed_seen (
    source TEXT NOT NULL, id TEXT NOT NULL, last_seen TEXT NOT NULL,
    PRIMARY KEY (source, id));
CREATE TABLE silences (
    id BIGSERIAL PRIMARY KEY, rule TEXT NOT NULL, key TEXT,
    reason TEXT NOT NULL, created_by TEXT NOT NULL,
    starts_at TEXT NOT NULL, ends_at TEXT NOT NULL);
CREATE TABLE ledger (
    seq BIGINT PRIMARY KEY, at TEXT NOT NULL, notification_id TEXT,
    entry TEXT NOT NULL, hash TEXT NOT NULL);
CREATE TABLE documents (
    sha256 TEXT PRIMARY KEY, size BIGINT NOT NULL,
    kept_at TEXT NOT NULL, used_at TEXT NOT NULL, data BYTEA NOT NULL);
CREATE TABLE ha_lease (
    id BIGINT PRIMARY KEY, holder TEXT NOT NULL, epoch BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL);
INSERT INTO ha_lease (id, holder, epoch, expires_ms) VALUES (1, '', 0, 0);
CREATE FUNCTION tocsin_fence(h TEXT, e BIGINT) RETURNS VOID LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM ha_lease WHERE id = 1 AND holder = h AND epoch = e FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'fenced: this instance (%) no longer holds the lease of epoch %; another instance leads', h, e;
    END IF;
END $$;
"#];

/// The lease a leader writes under: its name and the epoch it took.
/// Epoch 0 means no lease: every write is refused.
#[derive(Debug)]
pub struct Fence {
    pub holder: String,
    epoch: AtomicI64,
}

impl Fence {
    pub fn new(holder: String) -> Arc<Fence> {
        Arc::new(Fence {
            holder,
            epoch: AtomicI64::new(0),
        })
    }

    pub fn epoch(&self) -> i64 {
        self.epoch.load(Ordering::SeqCst)
    }

    pub fn set(&self, epoch: i64) {
        self.epoch.store(epoch, Ordering::SeqCst);
    }
}

/// The runtime the connections' sockets run on.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tocsin-postgres")
            .enable_all()
            .build()
            .expect("a runtime for PostgreSQL connections")
    })
}

/// How a connection is made: in clear, or with TLS checking the server's
/// certificate against these roots and its name.
#[derive(Clone)]
pub enum Tls {
    Off,
    On(Arc<rustls::ClientConfig>),
}

/// Whether every host `config` names is this machine: loopback addresses,
/// `localhost`, or a Unix socket.
pub fn loopback(config: &tokio_postgres::Config) -> bool {
    use tokio_postgres::config::Host;
    let addrs_local = config.get_hostaddrs().iter().all(|a| a.is_loopback());
    let hosts_local = config.get_hosts().iter().all(|h| match h {
        Host::Tcp(name) => {
            name == "localhost"
                || name
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|a| a.is_loopback())
        }
        Host::Unix(_) => true,
    });
    if config.get_hostaddrs().is_empty() {
        hosts_local
    } else {
        addrs_local
    }
}

impl Tls {
    /// TLS unless the URL says `sslmode=disable`, or the server is on this
    /// machine and the URL asks for nothing (`sslmode=require` asks); the
    /// server's certificate is checked against the system's roots and the
    /// certificates of `ca`, and must name the host.
    pub fn of(
        config: &tokio_postgres::Config,
        ca: Option<&std::path::Path>,
    ) -> Result<Tls, String> {
        use tokio_postgres::config::SslMode;
        let on = match config.get_ssl_mode() {
            SslMode::Disable => false,
            SslMode::Require => true,
            _ => !loopback(config),
        };
        if !on {
            return Ok(Tls::Off);
        }
        crate::tls::install_crypto();
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        if let Some(ca) = ca {
            use rustls::pki_types::{CertificateDer, pem::PemObject};
            let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(ca)
                .and_then(|certs| certs.collect::<Result<_, _>>())
                .map_err(|e| format!("state_ca {}: {e}", ca.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "state_ca {}: no certificate in it (PEM, `-----BEGIN CERTIFICATE-----`)",
                    ca.display()
                ));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("state_ca {}: {e}", ca.display()))?;
            }
        }
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Tls::On(Arc::new(config)))
    }
}

/// Connects, the socket then run by the connection runtime.
async fn connect_with<T>(
    config: tokio_postgres::Config,
    tls: T,
    answer: std::sync::mpsc::Sender<Result<Client, tokio_postgres::Error>>,
) where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    match config.connect(tls).await {
        Ok((client, connection)) => {
            let _ = answer.send(Ok(client));
            if let Err(e) = connection.await {
                tracing::debug!("PostgreSQL connection ended: {e}");
            }
        }
        Err(e) => {
            let _ = answer.send(Err(e));
        }
    }
}

pub struct Pg {
    config: tokio_postgres::Config,
    tls: Tls,
    client: Mutex<Option<Arc<Client>>>,
    statements: Mutex<HashMap<String, Statement>>,
    fence: Option<Arc<Fence>>,
    /// Within a transaction, statements whose answer is not needed yet:
    /// sent at once, their answers awaited at the next read or at the
    /// commit (see [`Pg::defer`]).
    pending: Mutex<Vec<Pending>>,
    in_tx: std::sync::atomic::AtomicBool,
    /// The ledger's last entry (number, hash) as this transaction left
    /// it, once read under the ledger's lock: the next entry of the same
    /// transaction follows it without asking again.
    pub(super) ledger_head: Mutex<Option<(i64, String)>>,
}

/// A statement sent and not yet answered.
type Pending = std::pin::Pin<Box<dyn std::future::Future<Output = DbResult<()>> + Send>>;

fn pg_err(e: tokio_postgres::Error) -> DbError {
    // The server's own message, with its detail, rather than "db error".
    match e.as_db_error() {
        Some(db) => DbError::new(match db.detail() {
            Some(d) => format!("{}: {d}", db.message()),
            None => db.message().to_string(),
        }),
        None => DbError::new(e),
    }
}

/// An error and what caused it: a TLS handshake that failed says why.
fn with_causes(e: &dyn Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !text.contains(&c_text) {
            text = format!("{text}: {c_text}");
        }
        cause = c.source();
    }
    text
}

/// `?1` → `$1`: the store's statements are written with SQLite's numbered
/// parameters; no statement has a `?` in a literal.
fn dollars(sql: &str) -> String {
    sql.replace('?', "$")
}

impl Pg {
    /// Connects and brings the schema up to date.
    pub fn connect(
        config: tokio_postgres::Config,
        tls: Tls,
        fence: Option<Arc<Fence>>,
    ) -> DbResult<Pg> {
        let pg = Pg {
            config,
            tls,
            client: Mutex::new(None),
            statements: Mutex::new(HashMap::new()),
            fence,
            pending: Mutex::new(Vec::new()),
            in_tx: Default::default(),
            ledger_head: Mutex::new(None),
        };
        pg.client()?;
        pg.migrate()?;
        Ok(pg)
    }

    /// The connection, made again if it broke.
    fn client(&self) -> DbResult<Arc<Client>> {
        let mut slot = self.client.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        // Never within a transaction: the rest of it would run on the new
        // connection, outside it (and unfenced). Its statements fail on
        // the broken one, and the transaction with them.
        if self.in_tx()
            && let Some(c) = slot.as_ref()
        {
            return Ok(c.clone());
        }
        self.statements
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut config = self.config.clone();
        config.connect_timeout(CONNECT_TIMEOUT);
        // A server gone from the network is an error in seconds, not when
        // the kernel gives up: a call waiting on it holds a thread.
        config.tcp_user_timeout(CONNECT_TIMEOUT);
        config.keepalives_idle(Duration::from_secs(5));
        config.application_name("tocsin");
        match &self.tls {
            Tls::Off => {
                config.ssl_mode(tokio_postgres::config::SslMode::Disable);
                runtime().spawn(connect_with(config, tokio_postgres::NoTls, tx));
            }
            Tls::On(c) => {
                config.ssl_mode(tokio_postgres::config::SslMode::Require);
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new((**c).clone());
                runtime().spawn(connect_with(config, tls, tx));
            }
        }
        let client = rx
            .recv_timeout(CONNECT_TIMEOUT + Duration::from_secs(1))
            .map_err(|_| DbError::new("cannot connect: no answer in time"))?
            .map_err(|e| DbError::new(format!("cannot connect: {}", with_causes(&e))))?;
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }

    fn migrate(&self) -> DbResult<()> {
        let c = self.client()?;
        let run = |sql: &str| futures_executor::block_on(c.batch_execute(sql)).map_err(pg_err);
        // One instance migrates at a time; the others wait, then find it done.
        run("SELECT pg_advisory_lock(7307000)")?;
        let result = (|| {
            // Quietly: the server notices an existing table otherwise.
            run(
                "SET client_min_messages = warning; CREATE TABLE IF NOT EXISTS tocsin_schema (version BIGINT NOT NULL); RESET client_min_messages",
            )?;
            let version = self
                .query("SELECT MAX(version) FROM tocsin_schema", &[])?
                .pop()
                .and_then(|mut r| r.opt_int(0))
                .unwrap_or(0);
            for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
                run(&format!(
                    "BEGIN; {m}; INSERT INTO tocsin_schema (version) VALUES ({}); COMMIT;",
                    i + 1
                ))
                .inspect_err(|_| {
                    let _ = run("ROLLBACK");
                })?;
            }
            Ok(())
        })();
        let _ = run("SELECT pg_advisory_unlock(7307000)");
        result
    }

    fn statement(&self, c: &Client, sql: &str) -> DbResult<Statement> {
        if let Some(s) = self
            .statements
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(sql)
        {
            return Ok(s.clone());
        }
        let st = match futures_executor::block_on(c.prepare(&dollars(sql))) {
            Ok(st) => st,
            Err(e) => {
                // A deferred statement that failed before it is the cause.
                self.flush()?;
                return Err(pg_err(e));
            }
        };
        self.statements
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sql.to_string(), st.clone());
        Ok(st)
    }

    /// Sends `fut`'s statement now (its first poll sends it; the
    /// connection answers in order) and keeps it to be awaited later: a
    /// transaction's statements go out together and cost one round trip,
    /// not one each.
    fn defer(&self, mut fut: Pending) {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let fut = match fut.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(r) => Box::pin(std::future::ready(r)),
            std::task::Poll::Pending => fut,
        };
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(fut);
    }

    /// Awaits every deferred statement; the first error, if any.
    fn flush(&self) -> DbResult<()> {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        let mut first = Ok(());
        for fut in pending {
            let r = futures_executor::block_on(fut);
            if first.is_ok() {
                first = r;
            }
        }
        first
    }

    fn in_tx(&self) -> bool {
        self.in_tx.load(Ordering::SeqCst)
    }

    /// Runs a statement. Within a transaction it is only sent, and 0 is
    /// returned: its error, if any, comes at the next read or the commit
    /// (use [`Pg::execute_now`] for the count of rows changed).
    pub fn execute(&self, sql: &str, params: &[Value]) -> DbResult<u64> {
        if !self.in_tx() {
            return self.execute_now(sql, params);
        }
        let c = self.client()?;
        let st = self.statement(&c, sql)?;
        let params = params.to_vec();
        self.defer(Box::pin(async move {
            let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|v| v as _).collect();
            c.execute(&st, &refs).await.map(|_| ()).map_err(pg_err)
        }));
        Ok(0)
    }

    /// Runs a statement and returns the rows it changed.
    pub fn execute_now(&self, sql: &str, params: &[Value]) -> DbResult<u64> {
        let c = self.client()?;
        let st = self.statement(&c, sql)?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|v| v as _).collect();
        let mut fut = Box::pin(c.execute(&st, &refs));
        // Sent behind the deferred statements, whose answers come first.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if let std::task::Poll::Ready(r) = fut.as_mut().poll(&mut cx) {
            self.flush()?;
            return r.map_err(pg_err);
        }
        self.flush()?;
        futures_executor::block_on(fut).map_err(pg_err)
    }

    pub fn query(&self, sql: &str, params: &[Value]) -> DbResult<Vec<Row>> {
        let mut out = Vec::new();
        self.each(sql, params, &mut |r| {
            out.push(r);
            Ok(())
        })?;
        Ok(out)
    }

    pub fn each(
        &self,
        sql: &str,
        params: &[Value],
        f: &mut dyn FnMut(Row) -> DbResult<()>,
    ) -> DbResult<()> {
        let c = self.client()?;
        let st = self.statement(&c, sql)?;
        let n = st.columns().len();
        let mut fut = Box::pin(c.query_raw(&st, params.iter()));
        // Sent behind the deferred statements, whose answers come first.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let sent = fut.as_mut().poll(&mut cx);
        self.flush()?;
        let stream = match sent {
            std::task::Poll::Ready(r) => r,
            std::task::Poll::Pending => futures_executor::block_on(fut),
        }
        .map_err(pg_err)?;
        for row in futures_executor::block_on_stream(Box::pin(stream)) {
            let row = row.map_err(pg_err)?;
            let mut values = Vec::with_capacity(n);
            for i in 0..n {
                values.push(row.try_get::<_, Value>(i).map_err(pg_err)?);
            }
            f(Row(values))?;
        }
        Ok(())
    }

    /// Runs `f` between BEGIN and COMMIT (ROLLBACK when it fails); a write
    /// under a fence first checks the lease, in the same round trip as the
    /// transaction's first statements.
    pub fn tx<R, E: From<DbError>>(
        &self,
        kind: Tx,
        f: impl FnOnce() -> Result<R, E>,
    ) -> Result<R, E> {
        let c = self.client()?;
        let forget_head = || *self.ledger_head.lock().unwrap_or_else(|e| e.into_inner()) = None;
        forget_head();
        let rollback = || {
            forget_head();
            self.in_tx.store(false, Ordering::SeqCst);
            let _ = self.flush();
            let _ = futures_executor::block_on(c.batch_execute("ROLLBACK"));
        };
        self.in_tx.store(true, Ordering::SeqCst);
        let begin = c.clone();
        self.defer(Box::pin(async move {
            begin.batch_execute("BEGIN").await.map_err(pg_err)
        }));
        if kind == Tx::Write
            && let Some(fence) = &self.fence
        {
            // Raises when the lease is not this instance's: the server
            // then refuses the rest of the transaction, its COMMIT too.
            if let Err(e) = self.execute(
                "SELECT tocsin_fence(?1, ?2)",
                &[Value::Text(fence.holder.clone()), Value::Int(fence.epoch())],
            ) {
                rollback();
                return Err(e.into());
            }
        }
        match f() {
            Ok(r) => {
                let commit = c.clone();
                self.defer(Box::pin(async move {
                    commit.batch_execute("COMMIT").await.map_err(pg_err)
                }));
                self.in_tx.store(false, Ordering::SeqCst);
                forget_head();
                // A statement that failed made the server roll back; the
                // COMMIT after it then ended the transaction.
                self.flush().map(|()| r).map_err(E::from)
            }
            Err(e) => {
                rollback();
                Err(e)
            }
        }
    }
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(n) => match *ty {
                Type::INT4 => i32::try_from(*n)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*n)?.to_sql(ty, out),
                Type::BOOL => (*n != 0).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => n.to_string().as_str().to_sql(ty, out),
                _ => n.to_sql(ty, out),
            },
            Value::Text(s) => match *ty {
                Type::BYTEA => s.as_bytes().to_sql(ty, out),
                _ => s.as_str().to_sql(ty, out),
            },
            Value::Blob(b) => b.as_slice().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for Value {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Value, Box<dyn Error + Sync + Send>> {
        Ok(match *ty {
            Type::INT8 => Value::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => Value::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT2 => Value::Int(i16::from_sql(ty, raw)?.into()),
            Type::BOOL => Value::Int(bool::from_sql(ty, raw)?.into()),
            Type::BYTEA => Value::Blob(raw.to_vec()),
            _ => match std::str::from_utf8(raw) {
                Ok(s) => Value::Text(s.to_string()),
                Err(_) => Value::Blob(raw.to_vec()),
            },
        })
    }

    fn from_sql_null(_: &Type) -> Result<Value, Box<dyn Error + Sync + Send>> {
        Ok(Value::Null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Runs statements one by one (each its own transaction) on a connection
/// of their own, with no schema made: for creating and dropping databases.
pub fn admin(config: &tokio_postgres::Config, statements: &[&str]) -> DbResult<()> {
    let pg = Pg {
        config: config.clone(),
        tls: Tls::Off,
        client: Mutex::new(None),
        statements: Mutex::new(HashMap::new()),
        fence: None,
        pending: Mutex::new(Vec::new()),
        in_tx: Default::default(),
        ledger_head: Mutex::new(None),
    };
    let c = pg.client()?;
    for sql in statements {
        futures_executor::block_on(c.batch_execute(sql)).map_err(pg_err)?;
    }
    Ok(())
}

/// A fresh database on the PostgreSQL server `TOCSIN_TEST_POSTGRES` names
/// (by default the local one, as user postgres), dropped with this value:
/// for tests, each on a database of its own.
pub struct ScratchDatabase {
    pub url: String,
    admin: tokio_postgres::Config,
    name: String,
}

impl ScratchDatabase {
    /// Creates `tocsin_<stem>_<pid>_<n>`; panics naming the server when it
    /// cannot.
    pub fn create(stem: &str) -> ScratchDatabase {
        use std::sync::atomic::AtomicU32;
        static N: AtomicU32 = AtomicU32::new(0);
        let server = std::env::var("TOCSIN_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let admin: tokio_postgres::Config = server
            .parse()
            .unwrap_or_else(|e| panic!("TOCSIN_TEST_POSTGRES={server}: {e}"));
        let name = format!(
            "tocsin_{stem}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        self::admin(
            &admin,
            &[
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                &format!("CREATE DATABASE {name}"),
            ],
        )
        .unwrap_or_else(|e| panic!("PostgreSQL at {server}: {e}"));
        let mut url = url::Url::parse(&server).unwrap_or_else(|e| panic!("{server}: {e}"));
        url.set_path(&name);
        ScratchDatabase {
            url: url.to_string(),
            admin,
            name,
        }
    }

    pub fn location(&self) -> super::location::Location {
        super::location::Location::Postgres {
            url: self.url.clone(),
            password: None,
            ca: None,
        }
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let _ = admin(
            &self.admin,
            &[&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::ScratchDatabase;
    use crate::store::{Location, Store};

    /// The DNS name the server's certificate is for (`openssl x509`).
    fn certificate_name(file: &str) -> String {
        let out = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-ext", "subjectAltName", "-in", file])
            .output()
            .expect("openssl, to read the server's certificate");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split(|c: char| c == ',' || c.is_whitespace())
            .find_map(|part| part.strip_prefix("DNS:"))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no DNS name in {file}: {text}"))
    }

    #[test]
    fn a_server_elsewhere_is_reached_over_tls_with_its_certificate_checked() {
        let db = ScratchDatabase::create("tls");
        let plain = Store::open(db.location()).unwrap();
        let on = |s: &Store| {
            s.raw_int("SELECT COUNT(*) FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl")
        };
        // On this machine, with nothing asked: in clear.
        assert_eq!(on(&plain), 0);
        assert_eq!(
            plain.raw_text("SHOW ssl"),
            "on",
            "the test server must offer TLS (Debian's does, with its snakeoil certificate)"
        );
        let cert = plain.raw_text("SHOW ssl_cert_file");
        let name = certificate_name(&cert);
        // The server by the name its certificate gives, reached at its
        // loopback address; TLS asked for.
        let mut url = url::Url::parse(&db.url).unwrap();
        url.set_host(Some(&name)).unwrap();
        url.set_query(Some("sslmode=require&hostaddr=127.0.0.1"));
        let location = |url: &url::Url| Location::Postgres {
            url: url.to_string(),
            password: None,
            ca: Some(cert.clone().into()),
        };
        let tls = Store::open(location(&url)).unwrap();
        assert_eq!(on(&tls), 1);
        // A certificate for another name is refused.
        url.set_host(Some("127.0.0.1")).unwrap();
        let e = Store::open(location(&url)).err().unwrap().to_string();
        assert!(e.contains("certificate"), "{e}");
        // So is a file with no certificate in it.
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("ca.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = Store::open(Location::Postgres {
            url: url.to_string(),
            password: None,
            ca: Some(empty),
        })
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("no certificate in it"), "{e}");
    }
}
