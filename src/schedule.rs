//! Schedules: `every: DURATION`, or standard 5-field cron (croner: names
//! for months and weekdays, 0 and 7 both Sunday) in an IANA time zone, with
//! DST handled by croner and chrono-tz.

use std::time::Duration;

use chrono::{DateTime, Utc};

#[derive(Clone, Debug)]
pub enum Schedule {
    Every(Duration),
    Cron {
        cron: Box<croner::Cron>,
        expr: String,
        tz: chrono_tz::Tz,
    },
}

impl Schedule {
    /// Parses a 5-field cron expression; the error says what is wrong.
    pub fn cron(expr: &str, tz: chrono_tz::Tz) -> Result<Schedule, String> {
        let parser = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Disallowed)
            .build();
        let cron = parser.parse(expr).map_err(|e| e.to_string())?;
        Ok(Schedule::Cron {
            cron: Box::new(cron),
            expr: expr.to_string(),
            tz,
        })
    }

    /// The first tick strictly after `now`.
    pub fn next_after(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Schedule::Every(d) => {
                now + chrono::Duration::from_std(*d).unwrap_or(chrono::Duration::MAX)
            }
            Schedule::Cron { cron, tz, .. } => cron
                .find_next_occurrence(&now.with_timezone(tz), false)
                .map(|t| t.with_timezone(&Utc))
                // No next occurrence (an impossible date): a year on.
                .unwrap_or(now + chrono::Duration::days(365)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn weekday_mornings_in_brussels_across_dst() {
        let s = Schedule::cron("0 8 * * MON-FRI", chrono_tz::Europe::Brussels).unwrap();
        // Friday 2026-03-27 09:00 UTC (10:00 CET): next is Monday 30 March,
        // 08:00 CEST = 06:00 UTC (DST began on Sunday the 29th).
        let now = Utc.with_ymd_and_hms(2026, 3, 27, 9, 0, 0).unwrap();
        assert_eq!(
            s.next_after(now),
            Utc.with_ymd_and_hms(2026, 3, 30, 6, 0, 0).unwrap()
        );
        let s = Schedule::cron("*/15 * * * *", chrono_tz::UTC).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 14, 59).unwrap();
        assert_eq!(
            s.next_after(now),
            Utc.with_ymd_and_hms(2026, 1, 1, 0, 15, 0).unwrap()
        );
        assert!(Schedule::cron("0 8 * *", chrono_tz::UTC).is_err());
        assert!(
            Schedule::cron("0 0 8 * * *", chrono_tz::UTC).is_err(),
            "no seconds field"
        );
    }

    #[test]
    fn a_missing_and_a_repeated_local_hour() {
        let s = Schedule::cron("30 2 * * *", chrono_tz::Europe::Brussels).unwrap();
        // 29 March 2026: clocks go from 02:00 to 03:00; 02:30 does not
        // exist that day. The poll is not lost: it runs once, and the next
        // day's is at 02:30 CEST again.
        let before = Utc.with_ymd_and_hms(2026, 3, 28, 23, 0, 0).unwrap();
        let first = s.next_after(before);
        assert!(
            first > before && first <= Utc.with_ymd_and_hms(2026, 3, 29, 1, 30, 0).unwrap(),
            "{first}"
        );
        let second = s.next_after(first);
        assert_eq!(second, Utc.with_ymd_and_hms(2026, 3, 30, 0, 30, 0).unwrap());
        // 25 October 2026: 02:30 happens twice (CEST, then CET); one tick.
        let before = Utc.with_ymd_and_hms(2026, 10, 24, 22, 0, 0).unwrap();
        let first = s.next_after(before);
        let second = s.next_after(first);
        assert_eq!(first, Utc.with_ymd_and_hms(2026, 10, 25, 0, 30, 0).unwrap());
        assert_eq!(
            second,
            Utc.with_ymd_and_hms(2026, 10, 26, 1, 30, 0).unwrap()
        );
        // Every 10 minutes in Tokyo (no DST) is every 10 minutes in UTC.
        let s = Schedule::cron("*/10 * * * *", chrono_tz::Asia::Tokyo).unwrap();
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 1, 0).unwrap();
        assert_eq!(
            s.next_after(t),
            Utc.with_ymd_and_hms(2026, 1, 1, 0, 10, 0).unwrap()
        );
    }
}
