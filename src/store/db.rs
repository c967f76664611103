//! The SQL connection under the store, for both backends: an embedded
//! SQLite file, or a PostgreSQL server ([`super::pg`]). The store's queries
//! are written once, in the SQL both speak ([`super::sql`]), with
//! `?1`-style parameters; a transaction is a closure ([`Db::tx`]) that
//! commits when it returns `Ok` and rolls back otherwise.

use super::sql::{DbError, DbResult, Row, Tx, Value};

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> DbError {
        DbError::new(e)
    }
}

pub enum Db {
    Sqlite(rusqlite::Connection),
    Pg(Box<super::pg::Pg>),
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(n) => ValueRef::Integer(*n),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn sqlite_row(r: &rusqlite::Row, n: usize) -> rusqlite::Result<Row> {
    use rusqlite::types::ValueRef;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(match r.get_ref(i)? {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(n) => Value::Int(n),
            ValueRef::Real(f) => Value::Int(f as i64),
            ValueRef::Text(t) => match std::str::from_utf8(t) {
                Ok(s) => Value::Text(s.to_string()),
                Err(_) => Value::Blob(t.to_vec()),
            },
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        });
    }
    Ok(out.into())
}

impl Db {
    pub fn is_postgres(&self) -> bool {
        matches!(self, Db::Pg(_))
    }

    /// Runs a statement. Statements are prepared once per connection and
    /// kept. Within a PostgreSQL transaction the statement is only sent
    /// (its error comes at the next read or the commit) and 0 is returned:
    /// [`Db::execute_now`] gives the rows changed.
    pub fn execute(&self, sql: &str, params: &[Value]) -> DbResult<u64> {
        match self {
            Db::Sqlite(_) => self.execute_now(sql, params),
            Db::Pg(p) => p.execute(sql, params),
        }
    }

    /// Runs a statement; returns the rows it changed.
    pub fn execute_now(&self, sql: &str, params: &[Value]) -> DbResult<u64> {
        match self {
            Db::Sqlite(c) => {
                Ok(c.prepare_cached(sql)?
                    .execute(rusqlite::params_from_iter(params))? as u64)
            }
            Db::Pg(p) => p.execute_now(sql, params),
        }
    }

    /// Every row a query returns.
    pub fn query(&self, sql: &str, params: &[Value]) -> DbResult<Vec<Row>> {
        let mut out = Vec::new();
        self.each(sql, params, |r| {
            out.push(r);
            Ok(())
        })?;
        Ok(out)
    }

    /// The first row a query returns, if any.
    pub fn query_row(&self, sql: &str, params: &[Value]) -> DbResult<Option<Row>> {
        match self {
            Db::Sqlite(c) => {
                let mut st = c.prepare_cached(sql)?;
                let n = st.column_count();
                let mut rows = st.query(rusqlite::params_from_iter(params))?;
                Ok(match rows.next()? {
                    Some(r) => Some(sqlite_row(r, n)?),
                    None => None,
                })
            }
            Db::Pg(p) => Ok(p.query(sql, params)?.into_iter().next()),
        }
    }

    /// Calls `f` with each row a query returns, one at a time.
    pub fn each(
        &self,
        sql: &str,
        params: &[Value],
        mut f: impl FnMut(Row) -> DbResult<()>,
    ) -> DbResult<()> {
        match self {
            Db::Sqlite(c) => {
                let mut st = c.prepare_cached(sql)?;
                let n = st.column_count();
                let mut rows = st.query(rusqlite::params_from_iter(params))?;
                while let Some(r) = rows.next()? {
                    f(sqlite_row(r, n)?)?;
                }
                Ok(())
            }
            Db::Pg(p) => p.each(sql, params, &mut f),
        }
    }

    /// Runs `f` in a transaction: committed when it returns `Ok`, rolled
    /// back otherwise.
    pub fn tx<R, E: From<DbError>>(
        &self,
        kind: Tx,
        f: impl FnOnce(&Db) -> Result<R, E>,
    ) -> Result<R, E> {
        match self {
            Db::Sqlite(c) => c.execute_batch(match kind {
                Tx::Read => "BEGIN",
                Tx::Write => "BEGIN IMMEDIATE",
            }),
            Db::Pg(p) => return p.tx(kind, || f(self)),
        }
        .map_err(DbError::from)?;
        match f(self) {
            Ok(r) => {
                if let Db::Sqlite(c) = self
                    && let Err(e) = c.execute_batch("COMMIT")
                {
                    let _ = c.execute_batch("ROLLBACK");
                    return Err(DbError::from(e).into());
                }
                Ok(r)
            }
            Err(e) => {
                if let Db::Sqlite(c) = self {
                    let _ = c.execute_batch("ROLLBACK");
                }
                Err(e)
            }
        }
    }

    /// Within a write transaction: the ledger's last entry (number and
    /// hash; `(0, "")` when empty), read under the ledger's lock. On SQLite
    /// the write transaction holds the only lock already; on PostgreSQL
    /// another connection of the same leader may be appending, so an
    /// advisory lock is taken, and the head is kept for the transaction's
    /// next entry ([`Db::appended`]).
    pub fn ledger_head(&self) -> DbResult<(i64, String)> {
        const HEAD: &str = "SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1";
        let read = |r: Option<Row>| r.map_or((0, String::new()), |mut r| (r.int(0), r.text(1)));
        match self {
            Db::Sqlite(_) => Ok(read(self.query_row(HEAD, &[])?)),
            Db::Pg(p) => {
                if let Some(head) = p
                    .ledger_head
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
                {
                    return Ok(head);
                }
                p.execute("SELECT pg_advisory_xact_lock(7307001)", &[])?;
                Ok(read(self.query_row(HEAD, &[])?))
            }
        }
    }

    /// The ledger's last entry is now `(seq, hash)`.
    pub fn appended(&self, seq: i64, hash: &str) {
        if let Db::Pg(p) = self {
            *p.ledger_head.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((seq, hash.to_string()));
        }
    }
}
