//! Cron expressions, as crontab(5) writes them, evaluated in UTC: five
//! fields (minute, hour, day of month, month, day of week), each `*`, a
//! number or name, a range `a-b`, a step `*/n`, `a-b/n` or `a/n`, or a list
//! of those; or one of `@hourly`, `@daily` (`@midnight`), `@weekly`,
//! `@monthly`, `@yearly` (`@annually`). As in Vixie cron, when both the day
//! of month and the day of week are restricted, a day matching either is
//! a fire day; a field starting with `*` is unrestricted.

use chrono::{Datelike, NaiveDate};

/// Longest expression accepted.
const MAX_LEN: usize = 256;
/// Days searched for a fire time (28 years: every weekday of every
/// February 29th comes round).
const SEARCH_DAYS: i64 = 28 * 366;

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    text: String,
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    days_restricted: bool,
    weekdays_restricted: bool,
}

/// Why an expression does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cron expression {text:?}: {reason}")]
pub struct CronError {
    text: String,
    reason: String,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl std::str::FromStr for Cron {
    type Err = CronError;

    fn from_str(text: &str) -> Result<Cron, CronError> {
        let fail = |reason: String| CronError {
            text: text.chars().take(MAX_LEN).collect(),
            reason,
        };
        if text.len() > MAX_LEN {
            return Err(fail(format!("longer than {MAX_LEN} bytes")));
        }
        let expanded = match text.trim() {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            other if other.starts_with('@') => {
                return Err(fail(format!(
                    "unknown macro {other}: use @hourly, @daily, @weekly, @monthly or @yearly"
                )));
            }
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(fail(format!(
                "{} fields; a schedule has five: minute hour day-of-month month day-of-week (e.g. \"0 0 * * *\")",
                fields.len()
            )));
        }
        let field = |i: usize, name: &str, min: u32, max: u32, names: &[&str], base: u32| {
            parse_field(fields[i], min, max, names, base)
                .map_err(|e| fail(format!("{name} field {:?}: {e}", fields[i])))
        };
        let minutes = field(0, "minute", 0, 59, &[], 0)?;
        let hours = field(1, "hour", 0, 23, &[], 0)?;
        let days = field(2, "day-of-month", 1, 31, &[], 0)?;
        let months = field(3, "month", 1, 12, &MONTHS, 1)?;
        let mut weekdays = field(4, "day-of-week", 0, 7, &WEEKDAYS, 0)?;
        // 7 is Sunday too.
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1;
        }
        Ok(Cron {
            text: text.trim().to_string(),
            minutes,
            hours: hours as u32,
            days: days as u32,
            months: months as u16,
            weekdays: (weekdays & 0x7f) as u8,
            days_restricted: !fields[2].starts_with('*'),
            weekdays_restricted: !fields[4].starts_with('*'),
        })
    }
}

/// One field as a bit set (bit `v` for value `v`).
fn parse_field(text: &str, min: u32, max: u32, names: &[&str], base: u32) -> Result<u64, String> {
    let value = |s: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(i as u32 + base);
        }
        let v: u32 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
        if v < min || v > max {
            return Err(format!("{v} is outside {min}-{max}"));
        }
        Ok(v)
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s.parse().map_err(|_| format!("step {s:?} is not a number"))?;
                if step == 0 || step > max {
                    return Err(format!("step {step} is outside 1-{max}"));
                }
                (r, step)
            }
            None => (part, 1),
        };
        let (from, to) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a)?, value(b)?);
            if a > b {
                return Err(format!("range {a}-{b} runs backwards"));
            }
            (a, b)
        } else {
            let a = value(range)?;
            // `a/n` runs from a to the end.
            (a, if part.contains('/') { max } else { a })
        };
        let mut v = from;
        while v <= to {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

impl std::fmt::Display for Cron {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Cron {
    /// Whether the schedule fires on `date`.
    fn fires_on(&self, date: NaiveDate) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let day = self.days & (1 << date.day()) != 0;
        let weekday = self.weekdays & (1 << date.weekday().num_days_from_sunday()) != 0;
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => day || weekday,
            (true, false) => day,
            (false, true) => weekday,
            (false, false) => true,
        }
    }

    /// Minutes of the day (0..1440) it fires at, ascending.
    fn times(&self) -> impl DoubleEndedIterator<Item = i64> + '_ {
        (0..24).filter(|h| self.hours & (1 << h) != 0).flat_map(move |h| {
            (0..60)
                .filter(|m| self.minutes & (1u64 << m) != 0)
                .map(move |m| h * 60 + m)
        })
    }

    /// The first fire time strictly after `unix_secs`, in Unix seconds.
    pub fn next_after(&self, unix_secs: i64) -> Option<i64> {
        let (day0, minute) = split(unix_secs);
        for d in 0..SEARCH_DAYS {
            let day = day0 + d;
            if !self.fires_on(date(day)?) {
                continue;
            }
            let after = if d == 0 { minute } else { -1 };
            if let Some(m) = self.times().find(|m| *m > after) {
                return Some(day * 86_400 + m * 60);
            }
        }
        None
    }

    /// The last fire time at or before `unix_secs`, in Unix seconds.
    pub fn last_at_or_before(&self, unix_secs: i64) -> Option<i64> {
        let (day0, minute) = split(unix_secs);
        for d in 0..SEARCH_DAYS {
            let day = day0 - d;
            if !self.fires_on(date(day)?) {
                continue;
            }
            let until = if d == 0 { minute } else { i64::MAX };
            if let Some(m) = self.times().rev().find(|m| *m <= until) {
                return Some(day * 86_400 + m * 60);
            }
        }
        None
    }
}

/// Days since the epoch and minute of that day of `unix_secs`.
fn split(unix_secs: i64) -> (i64, i64) {
    (unix_secs.div_euclid(86_400), unix_secs.rem_euclid(86_400) / 60)
}

fn date(days_since_epoch: i64) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(1970, 1, 1)?.checked_add_signed(chrono::TimeDelta::try_days(days_since_epoch)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp()
    }

    fn next(expr: &str, after: &str) -> String {
        let cron: Cron = expr.parse().unwrap();
        let t = cron.next_after(at(after)).unwrap();
        chrono::DateTime::from_timestamp(t, 0).unwrap().to_rfc3339()
    }

    #[test]
    fn next_fire_times_follow_crontab() {
        assert_eq!(next("0 0 * * *", "2026-12-01T18:46:00Z"), "2026-12-02T00:00:00+00:00");
        assert_eq!(next("@daily", "2026-12-31T23:59:59Z"), "2027-01-01T00:00:00+00:00");
        // Strictly after: a fire time itself is not "next".
        assert_eq!(
            next("*/15 * * * *", "2026-12-01T10:15:00Z"),
            "2026-12-01T10:30:00+00:00"
        );
        assert_eq!(
            next("5-10/5 9-17 * * mon-fri", "2026-12-04T17:10:00Z"),
            "2026-12-07T09:05:00+00:00"
        );
        // Both day fields restricted: either matches (the 13th, or a Friday).
        assert_eq!(next("0 12 13 * 5", "2026-12-01T00:00:00Z"), "2026-12-04T12:00:00+00:00");
        assert_eq!(next("0 12 13 * 5", "2026-12-11T13:00:00Z"), "2026-12-13T12:00:00+00:00");
        // 7 is Sunday, as 0.
        assert_eq!(next("0 0 * * 7", "2026-12-01T00:00:00Z"), "2026-12-06T00:00:00+00:00");
        assert_eq!(
            next("0 0 29 feb *", "2026-12-01T00:00:00Z"),
            "2028-02-29T00:00:00+00:00"
        );
        assert_eq!(
            next("30 2 1,15 * *", "2026-12-01T02:30:00Z"),
            "2026-12-15T02:30:00+00:00"
        );
    }

    #[test]
    fn last_fire_time_at_or_before() {
        let nightly: Cron = "0 0 * * *".parse().unwrap();
        assert_eq!(
            nightly.last_at_or_before(at("2026-12-01T18:46:10Z")),
            Some(at("2026-12-01T00:00:00Z"))
        );
        assert_eq!(
            nightly.last_at_or_before(at("2026-12-01T00:00:00Z")),
            Some(at("2026-12-01T00:00:00Z"))
        );
        let hourly: Cron = "@hourly".parse().unwrap();
        assert_eq!(
            hourly.last_at_or_before(at("2026-12-01T00:59:59Z")),
            Some(at("2026-12-01T00:00:00Z"))
        );
    }

    #[test]
    fn a_day_that_never_comes_has_no_fire_time() {
        let never: Cron = "0 0 31 2 *".parse().unwrap();
        assert_eq!(never.next_after(0), None);
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        let error = |e: &str| e.parse::<Cron>().unwrap_err().to_string();
        assert!(error("0 0 * *").contains("4 fields"), "{}", error("0 0 * *"));
        assert!(error("60 * * * *").contains("minute field \"60\": 60 is outside 0-59"));
        assert!(error("* * * * 8").contains("outside 0-7"));
        assert!(error("*/0 * * * *").contains("step 0"));
        assert!(error("5-1 * * * *").contains("backwards"));
        assert!(error("@reboot").contains("unknown macro"));
        assert!(error("0 0 * foo *").contains("\"foo\" is not a number"));
        assert!(error(&"1,".repeat(200)).contains("longer than"));
    }
}
