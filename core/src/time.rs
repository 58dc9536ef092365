//! Time windows: [`Horizon`]s and calendar-aligned (UTC) window boundaries.
//!
//! Timestamps are unix seconds as `u64` (billing never predates 1970). Calendar math is
//! integer civil-date arithmetic (Howard Hinnant's `days_from_civil` / `civil_from_days`),
//! exact for every `u64` timestamp; nothing here panics, and a boundary past `u64::MAX`
//! is `None`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Seconds in a minute, an hour, a day.
pub const SECS_PER_MINUTE: u64 = 60;
/// Seconds in an hour.
pub const SECS_PER_HOUR: u64 = 3_600;
/// Seconds in a day (UTC days have no leap seconds in unix time).
pub const SECS_PER_DAY: u64 = 86_400;

/// The horizon of a windowed limit. Minute, hour and day windows are fixed-length and
/// aligned to multiples of their length since the epoch (so to UTC boundaries); month
/// and year windows are calendar-aligned in UTC; `Total` never resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Horizon {
    /// `[hh:mm:00, hh:mm+1:00)`.
    Minute,
    /// `[hh:00:00, hh+1:00:00)`.
    Hour,
    /// A UTC day.
    Day,
    /// A UTC calendar month.
    Month,
    /// A UTC calendar year.
    Year,
    /// All time: one window that never resets.
    Total,
}

impl Horizon {
    /// Every horizon, shortest first.
    pub const ALL: [Horizon; 6] = [
        Horizon::Minute,
        Horizon::Hour,
        Horizon::Day,
        Horizon::Month,
        Horizon::Year,
        Horizon::Total,
    ];

    /// Fixed window length in seconds; `None` for months and years (their length varies)
    /// and for `Total`.
    pub const fn period_secs(self) -> Option<u64> {
        match self {
            Horizon::Minute => Some(SECS_PER_MINUTE),
            Horizon::Hour => Some(SECS_PER_HOUR),
            Horizon::Day => Some(SECS_PER_DAY),
            Horizon::Month | Horizon::Year | Horizon::Total => None,
        }
    }

    /// Start of the window containing `ts` (`0` for `Total`).
    pub fn window_start(self, ts: u64) -> u64 {
        match self {
            Horizon::Minute | Horizon::Hour | Horizon::Day => {
                let p = self.period_secs().unwrap_or(1);
                ts - ts % p
            }
            Horizon::Month => month_start(ts),
            Horizon::Year => year_start(ts),
            Horizon::Total => 0,
        }
    }

    /// End (exclusive) of the window containing `ts`, i.e. when the limit resets; `None`
    /// for `Total` (never) or when the boundary does not fit in `u64`.
    pub fn window_end(self, ts: u64) -> Option<u64> {
        match self {
            Horizon::Minute | Horizon::Hour | Horizon::Day => {
                let p = self.period_secs()?;
                (ts - ts % p).checked_add(p)
            }
            Horizon::Month => next_month_start(ts),
            Horizon::Year => next_year_start(ts),
            Horizon::Total => None,
        }
    }

    /// The window containing `ts`.
    pub fn window(self, ts: u64) -> Window {
        Window {
            start: self.window_start(ts),
            end: self.window_end(ts),
        }
    }

    /// Lower-case name, as in config files.
    pub const fn as_str(self) -> &'static str {
        match self {
            Horizon::Minute => "minute",
            Horizon::Hour => "hour",
            Horizon::Day => "day",
            Horizon::Month => "month",
            Horizon::Year => "year",
            Horizon::Total => "total",
        }
    }
}

impl fmt::Display for Horizon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A half-open time window `[start, end)` in unix seconds; `end == None` is unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Window {
    /// First second in the window.
    pub start: u64,
    /// First second after the window; `None` if it never ends.
    pub end: Option<u64>,
}

impl Window {
    /// `true` if `ts` lies in `[start, end)`.
    pub fn contains(&self, ts: u64) -> bool {
        ts >= self.start && self.end.is_none_or(|e| ts < e)
    }
}

/// A UTC calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CivilDate {
    /// Year (1970 or later for any `u64` timestamp).
    pub year: i64,
    /// Month, 1..=12.
    pub month: u8,
    /// Day of the month, 1..=31.
    pub day: u8,
}

impl CivilDate {
    /// The UTC date of a unix timestamp.
    pub fn from_unix(ts: u64) -> CivilDate {
        // ts / 86400 <= 2.2e14, well inside i64.
        civil_from_days((ts / SECS_PER_DAY) as i64)
    }

    /// Unix timestamp of this date's midnight UTC; `None` if the date is invalid, before
    /// 1970, or past `u64::MAX` seconds.
    pub fn to_unix(self) -> Option<u64> {
        if !(1..=12).contains(&self.month)
            || self.day == 0
            || self.day > days_in_month(self.year, self.month)
        {
            return None;
        }
        // Years past ~5.8e11 cannot be a u64 timestamp; bail out before i64 math could overflow.
        if !(1970..=600_000_000_000).contains(&self.year) {
            return None;
        }
        let days = days_from_civil(self.year, self.month, self.day);
        u64::try_from(days).ok()?.checked_mul(SECS_PER_DAY)
    }
}

/// `true` in a Gregorian leap year.
pub const fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

/// Days in `month` (1..=12) of `year`; 0 for an invalid month.
pub const fn days_in_month(year: i64, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Midnight UTC on the first day of the month containing `ts`. Always `<= ts`.
pub fn month_start(ts: u64) -> u64 {
    let d = CivilDate::from_unix(ts);
    day_start_of(d.year, d.month, 1, ts)
}

/// Midnight UTC on the first day of the month after the one containing `ts`; `None` if
/// that does not fit in `u64`.
pub fn next_month_start(ts: u64) -> Option<u64> {
    let d = CivilDate::from_unix(ts);
    let (y, m) = if d.month == 12 {
        (d.year + 1, 1)
    } else {
        (d.year, d.month + 1)
    };
    CivilDate {
        year: y,
        month: m,
        day: 1,
    }
    .to_unix()
}

/// Midnight UTC on January 1st of the year containing `ts`. Always `<= ts`.
pub fn year_start(ts: u64) -> u64 {
    let d = CivilDate::from_unix(ts);
    day_start_of(d.year, 1, 1, ts)
}

/// Midnight UTC on January 1st of the year after the one containing `ts`; `None` if that
/// does not fit in `u64`.
pub fn next_year_start(ts: u64) -> Option<u64> {
    let d = CivilDate::from_unix(ts);
    CivilDate {
        year: d.year + 1,
        month: 1,
        day: 1,
    }
    .to_unix()
}

/// Midnight of a date known to be at or before `ts` (so it fits in `u64`).
fn day_start_of(year: i64, month: u8, day: u8, ts: u64) -> u64 {
    let days = days_from_civil(year, month, day);
    // The date is at or before ts's date, so 0 <= days and days * 86400 <= ts.
    u64::try_from(days).map_or(0, |d| d * SECS_PER_DAY).min(ts)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's algorithm).
fn days_from_civil(year: i64, month: u8, day: u8) -> i64 {
    let (m, d) = (i64::from(month), i64::from(day));
    let y = if m <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400); // [0, 399]
    let mp = if m > 2 { m - 3 } else { m + 9 }; // March = 0
    let doy = (153 * mp + 2) / 5 + d - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Hinnant's algorithm).
fn civil_from_days(days: i64) -> CivilDate {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = yoe + era * 400 + i64::from(month <= 2);
    CivilDate { year, month, day }
}

#[cfg(test)]
mod tests;
