//! Where the store is: an SQLite file or a PostgreSQL database.

use std::path::{Path, PathBuf};

/// Where the store is: an SQLite file (the default), or a PostgreSQL
/// database (`state: postgres://…`, its password from
/// `state_password_env`/`state_password_file`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    File(PathBuf),
    Postgres {
        /// As written in the config: without a password.
        url: String,
        password: Option<crate::secret::SecretRef>,
        /// Certificates (PEM) of the authorities trusted for the server's
        /// certificate, beside the system's (`state_ca`).
        ca: Option<PathBuf>,
    },
}

impl Location {
    /// Whether `s` names a PostgreSQL database.
    pub fn is_postgres_url(s: &str) -> bool {
        s.starts_with("postgres://") || s.starts_with("postgresql://")
    }

    /// The SQLite file, if that is the store.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Location::File(p) => Some(p),
            Location::Postgres { .. } => None,
        }
    }

    /// Whether there is a store to read: an SQLite file that exists, or
    /// any PostgreSQL database (its schema is made on connecting).
    pub fn exists(&self) -> bool {
        self.file().is_none_or(Path::exists)
    }

    /// The store as messages name it.
    pub fn display(&self) -> &Location {
        self
    }

    /// The name used in messages.
    pub fn name(&self) -> PathBuf {
        match self {
            Location::File(p) => p.clone(),
            Location::Postgres { url, .. } => PathBuf::from(url),
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}", self.name().display())
    }
}

impl From<&Path> for Location {
    fn from(p: &Path) -> Location {
        Location::File(p.to_path_buf())
    }
}

impl From<&PathBuf> for Location {
    fn from(p: &PathBuf) -> Location {
        Location::File(p.clone())
    }
}

impl From<PathBuf> for Location {
    fn from(p: PathBuf) -> Location {
        Location::File(p)
    }
}

impl From<&Location> for Location {
    fn from(l: &Location) -> Location {
        l.clone()
    }
}
