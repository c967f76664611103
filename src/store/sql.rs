//! What the store's SQL speaks on both backends: a value is one of the few
//! kinds the store keeps ([`Value`]), a row is read by column position
//! ([`Row`]), an error says what the database said ([`DbError`]), and a
//! transaction is a read or a write ([`Tx`]). The connection over each
//! backend ([`super::db::Db`]) and the PostgreSQL one ([`super::pg`]) both
//! build on these.

use std::fmt;

/// A parameter or a column's value.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Value {
    #[default]
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

impl From<i64> for Value {
    fn from(n: i64) -> Value {
        Value::Int(n)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Text(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Text(s)
    }
}

impl From<&String> for Value {
    fn from(s: &String) -> Value {
        Value::Text(s.clone())
    }
}

impl From<Vec<u8>> for Value {
    fn from(b: Vec<u8>) -> Value {
        Value::Blob(b)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

/// The parameters of a statement: `vals![a, b]`.
macro_rules! vals {
    ($($v:expr),* $(,)?) => { [$($crate::store::sql::Value::from($v)),*] };
}
pub(crate) use vals;

/// A row read: its columns by position, each taken once.
#[derive(Debug, Default)]
pub struct Row(pub Vec<Value>);

impl Row {
    fn take(&mut self, i: usize) -> Value {
        self.0.get_mut(i).map(std::mem::take).unwrap_or_default()
    }

    pub fn int(&mut self, i: usize) -> i64 {
        self.opt_int(i).unwrap_or(0)
    }

    pub fn opt_int(&mut self, i: usize) -> Option<i64> {
        match self.take(i) {
            Value::Int(n) => Some(n),
            Value::Text(s) => s.parse().ok(),
            _ => None,
        }
    }

    pub fn text(&mut self, i: usize) -> String {
        self.opt_text(i).unwrap_or_default()
    }

    pub fn opt_text(&mut self, i: usize) -> Option<String> {
        match self.take(i) {
            Value::Text(s) => Some(s),
            Value::Int(n) => Some(n.to_string()),
            Value::Blob(b) => Some(String::from_utf8_lossy(&b).into_owned()),
            Value::Null => None,
        }
    }

    /// Bytes as stored: a blob, or a text's bytes (which a changed byte
    /// may have left not UTF-8).
    pub fn opt_blob(&mut self, i: usize) -> Option<Vec<u8>> {
        match self.take(i) {
            Value::Blob(b) => Some(b),
            Value::Text(s) => Some(s.into_bytes()),
            Value::Int(n) => Some(n.to_string().into_bytes()),
            Value::Null => None,
        }
    }

    pub fn blob(&mut self, i: usize) -> Vec<u8> {
        self.opt_blob(i).unwrap_or_default()
    }
}

impl From<Vec<Value>> for Row {
    fn from(v: Vec<Value>) -> Row {
        Row(v)
    }
}

/// What went wrong with a statement, as the database said it.
#[derive(Debug)]
pub struct DbError {
    pub message: String,
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl DbError {
    pub fn new(message: impl fmt::Display) -> DbError {
        DbError {
            message: message.to_string(),
        }
    }
}

pub type DbResult<T> = Result<T, DbError>;

/// A transaction's kind. A write takes the write lock at once (SQLite's
/// `BEGIN IMMEDIATE`), and on PostgreSQL is refused unless this instance
/// holds the lease it was given ([`super::pg::Fence`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tx {
    Read,
    Write,
}
