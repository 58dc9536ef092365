use super::*;

// 2024-02-29T13:45:10Z, a leap day.
const LEAP_DAY: u64 = 1_709_214_310;

#[test]
fn civil_dates_known_values() {
    assert_eq!(
        CivilDate::from_unix(0),
        CivilDate {
            year: 1970,
            month: 1,
            day: 1
        }
    );
    assert_eq!(
        CivilDate::from_unix(LEAP_DAY),
        CivilDate {
            year: 2024,
            month: 2,
            day: 29
        }
    );
    let d = CivilDate {
        year: 2026,
        month: 11,
        day: 27,
    };
    assert_eq!(d.to_unix(), Some(1_795_737_600));
    assert_eq!(
        CivilDate {
            year: 2023,
            month: 2,
            day: 29
        }
        .to_unix(),
        None
    );
    assert_eq!(
        CivilDate {
            year: 2024,
            month: 13,
            day: 1
        }
        .to_unix(),
        None
    );
    assert_eq!(
        CivilDate {
            year: 1969,
            month: 12,
            day: 31
        }
        .to_unix(),
        None
    );
}

#[test]
fn month_and_year_boundaries() {
    assert_eq!(month_start(LEAP_DAY), 1_706_745_600); // 2024-02-01
    assert_eq!(next_month_start(LEAP_DAY), Some(1_709_251_200)); // 2024-03-01
    assert_eq!(year_start(LEAP_DAY), 1_704_067_200); // 2024-01-01
    assert_eq!(next_year_start(LEAP_DAY), Some(1_735_689_600)); // 2025-01-01
    // December rolls into January of the next year.
    let dec = CivilDate {
        year: 2025,
        month: 12,
        day: 31,
    }
    .to_unix()
    .unwrap()
        + 86_399;
    assert_eq!(next_month_start(dec), Some(1_767_225_600)); // 2026-01-01
    // A month start is its own window start.
    assert_eq!(month_start(1_706_745_600), 1_706_745_600);
}

#[test]
fn fixed_windows() {
    let ts = LEAP_DAY;
    assert_eq!(Horizon::Minute.window_start(ts), ts - 10);
    assert_eq!(Horizon::Minute.window_end(ts), Some(ts + 50));
    assert_eq!(Horizon::Hour.window_start(ts), ts - 45 * 60 - 10);
    assert_eq!(Horizon::Day.window_start(ts), 1_709_164_800);
    assert_eq!(
        Horizon::Total.window(ts),
        Window {
            start: 0,
            end: None
        }
    );
    assert!(Horizon::Month.window(ts).contains(ts));
    assert!(!Horizon::Month.window(ts).contains(1_709_251_200));
    assert_eq!(Horizon::Month.period_secs(), None);
    assert_eq!(Horizon::Hour.period_secs(), Some(3_600));
}

#[test]
fn extreme_timestamps_do_not_panic() {
    for ts in [u64::MAX, u64::MAX - 1, u64::MAX / 2, 1 << 40] {
        for h in Horizon::ALL {
            let w = h.window(ts);
            assert!(w.start <= ts);
            if let Some(end) = w.end {
                assert!(end > ts);
            }
        }
    }
    assert_eq!(Horizon::Minute.window_end(u64::MAX), None);
}
