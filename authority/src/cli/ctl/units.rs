//! What ctl reads and prints: credits (decimal on the command line, integer micro-credits
//! on the wire), dates (`YYYY-MM-DD` at UTC midnight, or unix seconds) and text tables.

use std::str::FromStr;

use anyhow::{anyhow, bail};
use comfy_table::{CellAlignment, Table, presets};
use time::macros::format_description;
use time::{Date, OffsetDateTime};
use tollgate_core::Credits;

/// Parses the credits given to `flag` as micro-credits.
pub(super) fn credits(flag: &str, s: &str) -> anyhow::Result<u64> {
    Credits::from_str(s)
        .map(|c| c.micros())
        .map_err(|e| anyhow!("{flag} {s:?}: {e} (give credits like 100 or 12.5)"))
}

/// `YYYY-MM-DD` (UTC midnight) or unix seconds, as unix milliseconds.
pub fn parse_time(flag: &str, s: &str) -> anyhow::Result<u64> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(secs.saturating_mul(1000));
    }
    // Month and day may have one digit or two, as before.
    let format = format_description!("[year]-[month padding:none]-[day padding:none]");
    if let Ok(date) = Date::parse(s, format)
        && let Ok(secs) = u64::try_from(date.midnight().assume_utc().unix_timestamp())
    {
        return Ok(secs.saturating_mul(1000));
    }
    bail!("{flag} {s:?} is not a date: use YYYY-MM-DD (UTC) or unix seconds")
}

/// Micro-credits as credits with six decimals.
pub(super) fn show(c: u64) -> String {
    format!("{}", Credits(c))
}

/// Micro-credits as credits, or `none` for 0 (a cap of 0 is no cap).
pub(super) fn show_cap(c: u64) -> String {
    if c == 0 { "none".into() } else { show(c) }
}

/// ` (shadow)` after a limit that is measured, not enforced.
pub(super) fn shadow_mark(shadow: bool) -> &'static str {
    if shadow { " (shadow)" } else { "" }
}

/// Unix milliseconds as a UTC time to the second; `-` for 0 (never, unknown).
pub(super) fn show_ms(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    let format = format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    i64::try_from(ms / 1000)
        .ok()
        .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok())
        .and_then(|t| t.format(format).ok())
        // Past the year 9999: no calendar date to show, the number still says it.
        .unwrap_or_else(|| format!("unix ms {ms}"))
}

/// A borderless table with `header`; the columns numbered in `right` align right
/// (amounts, counts).
pub(super) fn table(header: &[&str], right: &[usize]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING).set_header(header.to_vec());
    // Two spaces between columns, none at the ends of a line.
    let last = header.len().saturating_sub(1);
    for (i, c) in t.column_iter_mut().enumerate() {
        c.set_padding((0, if i == last { 0 } else { 2 }));
        if right.contains(&i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    t
}

/// Appends `t` to `out`, without the spaces that pad the last column.
pub(super) fn put_table(out: &mut String, t: &Table) {
    for line in t.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse_and_print_in_utc() {
        assert_eq!(
            parse_time("--from", "2026-11-01").unwrap(),
            1_793_491_200_000
        );
        assert_eq!(parse_time("--from", "2026-1-5").unwrap(), 1_767_571_200_000);
        assert_eq!(
            parse_time("--from", "1767571200").unwrap(),
            1_767_571_200_000
        );
        for bad in [
            "2026-13-01",
            "2026-02-29",
            "2026-11-01x",
            "1969-12-31",
            "soon",
            "",
        ] {
            let e = parse_time("--to", bad).unwrap_err().to_string();
            assert!(e.contains("--to") && e.contains("YYYY-MM-DD"), "{bad}: {e}");
        }
        assert_eq!(
            show_ms(1_793_491_200_000 + 3_723_000),
            "2026-11-01 01:02:03 UTC"
        );
        assert_eq!(show_ms(0), "-");
        assert_eq!(show_ms(u64::MAX), format!("unix ms {}", u64::MAX));
    }

    #[test]
    fn credits_parse_and_print_as_micro_credits() {
        assert_eq!(credits("--amount", "12.5").unwrap(), 12_500_000);
        let e = credits("--amount", "-3").unwrap_err().to_string();
        assert!(e.contains("--amount") && e.contains("12.5"), "{e}");
        assert_eq!(show(1), "0.000001");
        assert_eq!(show_cap(0), "none");
    }

    #[test]
    fn tables_align_amounts_right_and_end_lines_without_padding() {
        let mut t = table(&["amount", "label"], &[0]);
        t.add_row(vec!["1.000000", "a label longer than its header"]);
        t.add_row(vec!["100.000000", "x"]);
        let mut text = String::new();
        put_table(&mut text, &t);
        assert_eq!(
            text,
            "    amount  label\n  1.000000  a label longer than its header\n100.000000  x\n"
        );
    }
}
