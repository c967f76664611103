//! The lease of an HA group on a PostgreSQL store: one row (holder, epoch,
//! expiry), its times taken from the database server's clock so that the
//! instances' clocks need not agree. A standby takes an expired lease with
//! the next epoch; the leader renews it; the epoch fences every write of
//! a leader (see [`super::pg::Fence`]).

use std::time::Duration;

use super::sql::{DbError, vals};
use super::{Store, StoreError};

/// The server's time, in milliseconds.
const NOW_MS: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";

/// Who holds the lease, as the store says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub holder: String,
    pub epoch: i64,
    /// Milliseconds until it expires (negative: expired that long ago).
    pub expires_in_ms: i64,
}

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

impl Store {
    fn postgres_only(&self) -> Result<(), StoreError> {
        if self.db.is_postgres() {
            Ok(())
        } else {
            Err(self.err("a lease is held on a PostgreSQL store only"))
        }
    }

    /// Takes the lease for `holder` for `valid`, if it has expired; returns
    /// the new epoch, or `None` when another instance holds it.
    pub fn take_lease(&self, holder: &str, valid: Duration) -> Result<Option<i64>, StoreError> {
        self.postgres_only()?;
        let sql = format!(
            "UPDATE ha_lease SET holder = ?1, epoch = epoch + 1, expires_ms = {NOW_MS} + ?2 WHERE id = 1 AND expires_ms < {NOW_MS} RETURNING epoch"
        );
        Ok(self
            .db
            .query_row(&sql, &vals![holder, ms(valid)])
            .map_err(|e| self.named(e))?
            .map(|mut r| r.int(0)))
    }

    /// Renews `holder`'s lease of `epoch` for `valid` from now; false when
    /// it is no longer theirs.
    pub fn renew_lease(
        &self,
        holder: &str,
        epoch: i64,
        valid: Duration,
    ) -> Result<bool, StoreError> {
        self.postgres_only()?;
        let sql = format!(
            "UPDATE ha_lease SET expires_ms = {NOW_MS} + ?3 WHERE id = 1 AND holder = ?1 AND epoch = ?2 RETURNING epoch"
        );
        Ok(self
            .db
            .query_row(&sql, &vals![holder, epoch, ms(valid)])
            .map_err(|e| self.named(e))?
            .is_some())
    }

    /// Gives up `holder`'s lease of `epoch` (a leader stopping): a standby
    /// takes over at its next look rather than when the lease would expire.
    pub fn release_lease(&self, holder: &str, epoch: i64) -> Result<(), StoreError> {
        self.postgres_only()?;
        self.db
            .execute(
                "UPDATE ha_lease SET expires_ms = 0 WHERE id = 1 AND holder = ?1 AND epoch = ?2",
                &vals![holder, epoch],
            )
            .map(|_| ())
            .map_err(|e: DbError| self.named(e))
    }

    /// The lease as it stands.
    pub fn lease(&self) -> Result<Lease, StoreError> {
        self.postgres_only()?;
        let sql = format!("SELECT holder, epoch, expires_ms - {NOW_MS} FROM ha_lease WHERE id = 1");
        let mut r = self
            .db
            .query_row(&sql, &[])
            .map_err(|e| self.named(e))?
            .ok_or_else(|| self.err("the lease row is missing"))?;
        Ok(Lease {
            holder: r.text(0),
            epoch: r.int(1),
            expires_in_ms: r.int(2),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::store::testing::Backend;

    #[test]
    fn a_lease_is_taken_once_renewed_by_its_holder_only_and_taken_over_when_expired() {
        let b = Backend::postgres();
        let s = b.open();
        let long = Duration::from_secs(60);
        let a = s.take_lease("a", long).unwrap().expect("free at first");
        assert_eq!(s.take_lease("b", long).unwrap(), None, "held by a");
        assert!(s.renew_lease("a", a, long).unwrap());
        assert!(!s.renew_lease("b", a, long).unwrap(), "not b's");
        assert!(!s.renew_lease("a", a + 1, long).unwrap(), "not that epoch");
        // Renewed for no time: expired at once, so b takes it, one epoch on.
        assert!(s.renew_lease("a", a, Duration::ZERO).unwrap());
        std::thread::sleep(Duration::from_millis(5));
        let b_epoch = s.take_lease("b", long).unwrap().expect("expired");
        assert_eq!(b_epoch, a + 1);
        assert!(!s.renew_lease("a", a, long).unwrap(), "a lost it");
        let l = s.lease().unwrap();
        assert_eq!((l.holder.as_str(), l.epoch), ("b", b_epoch));
        assert!(l.expires_in_ms > 50_000, "{l:?}");
        s.release_lease("b", b_epoch).unwrap();
        assert_eq!(s.take_lease("a", long).unwrap(), Some(b_epoch + 1));
    }

    #[test]
    fn a_write_under_a_lost_lease_is_refused_and_changes_nothing() {
        let b = Backend::postgres();
        let admin = b.open();
        let long = Duration::from_secs(60);
        let epoch = admin.take_lease("a", long).unwrap().unwrap();
        let fence = crate::store::pg::Fence::new("a".into());
        fence.set(epoch);
        let mut leader = crate::store::Store::open_fenced(&b.location, Some(fence)).unwrap();
        let now = chrono::Utc::now();
        leader
            .commit(
                &[],
                &[],
                &[crate::store::tests::note("n1", &["mail"])],
                &[],
                now,
            )
            .unwrap();
        assert_eq!(admin.outbox_counts().unwrap(), (1, 0));
        // Taken over: the old leader's next write fails, and nothing of it
        // is kept; nor may it claim notifications to send.
        admin.release_lease("a", epoch).unwrap();
        admin.take_lease("b", long).unwrap().unwrap();
        let e = leader
            .commit(
                &[],
                &[],
                &[crate::store::tests::note("n2", &["mail"])],
                &[],
                now,
            )
            .unwrap_err();
        assert!(e.is_fenced(), "{e}");
        assert_eq!(admin.outbox_counts().unwrap(), (1, 0));
        let e = leader.due("mail", now, 10).unwrap_err();
        assert!(e.is_fenced(), "{e}");
        // Reading is no write: commands work beside the leader.
        assert_eq!(leader.outbox_counts().unwrap(), (1, 0));
    }

    #[test]
    fn a_connection_the_server_ends_is_made_again() {
        let b = Backend::postgres();
        let mut s = b.open();
        let admin = b.open();
        let now = chrono::Utc::now();
        let note = |id: &str| crate::store::tests::note(id, &["mail"]);
        s.commit(&[], &[], &[note("n1")], &[], now).unwrap();
        admin.raw(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        );
        // The first call may meet the broken connection; the next makes a
        // new one, and a transaction on it commits whole.
        let again = (0..50).find_map(|_| {
            std::thread::sleep(Duration::from_millis(20));
            s.commit(&[], &[], &[note("n2")], &[], now).ok()
        });
        assert!(again.is_some(), "no new connection");
        assert_eq!(admin.outbox_counts().unwrap(), (2, 0));
    }
}
