use super::*;

#[test]
fn display_has_six_decimals() {
    assert_eq!(Credits(12_500_000).to_string(), "12.500000");
    assert_eq!(Credits::ZERO.to_string(), "0.000000");
    assert_eq!(Credits(1).to_string(), "0.000001");
    assert_eq!(Credits::MAX.to_string(), "18446744073709.551615");
    assert_eq!(format!("{:>12}", Credits(1_000_000)), "    1.000000");
}

#[test]
fn parses_exactly() {
    assert_eq!("12.5".parse::<Credits>(), Ok(Credits(12_500_000)));
    assert_eq!("12".parse::<Credits>(), Ok(Credits(12_000_000)));
    assert_eq!("0.000001".parse::<Credits>(), Ok(Credits(1)));
    assert_eq!("007.010".parse::<Credits>(), Ok(Credits(7_010_000)));
    assert_eq!("18446744073709.551615".parse::<Credits>(), Ok(Credits::MAX));
}

#[test]
fn rejects_bad_amounts_with_typed_errors() {
    use ParseCreditsError as E;
    assert_eq!("".parse::<Credits>(), Err(E::Empty));
    assert!(matches!("-1".parse::<Credits>(), Err(E::Negative(_))));
    assert!(matches!(
        "1.0000001".parse::<Credits>(),
        Err(E::TooPrecise(_))
    ));
    assert!(matches!(
        "18446744073709.551616".parse::<Credits>(),
        Err(E::Overflow(_))
    ));
    assert!(matches!(
        "99999999999999999999".parse::<Credits>(),
        Err(E::Overflow(_))
    ));
    for bad in ["1.", ".5", "1.2.3", "+1", " 1", "1e3", "1,5", "abc", "."] {
        assert!(
            matches!(bad.parse::<Credits>(), Err(E::Invalid(_))),
            "{bad:?} should be Invalid"
        );
    }
}

#[test]
fn checked_arithmetic_never_wraps() {
    assert_eq!(Credits::MAX.checked_add(Credits(1)), None);
    assert_eq!(Credits(1).checked_sub(Credits(2)), None);
    assert_eq!(Credits(1).saturating_sub(Credits(2)), Credits::ZERO);
    assert_eq!(Credits::MAX.saturating_add(Credits(5)), Credits::MAX);
    assert_eq!(Credits(3).checked_mul(4), Some(Credits(12)));
    assert_eq!(Credits::MAX.checked_mul(2), None);
    assert_eq!(Credits::from_credits(20), Some(Credits(20_000_000)));
    assert_eq!(Credits::from_credits(u64::MAX), None);
    assert_eq!(
        Credits::checked_sum([Credits(1), Credits(2)]),
        Some(Credits(3))
    );
    assert_eq!(Credits::checked_sum([Credits::MAX, Credits(1)]), None);
}

#[test]
fn serde_is_integer_micros() {
    let json = serde_json::to_string(&Credits(12_500_000)).unwrap();
    assert_eq!(json, "12500000");
    let back: Credits = serde_json::from_str(&json).unwrap();
    assert_eq!(back, Credits(12_500_000));
    assert!(serde_json::from_str::<Credits>("-1").is_err());
    assert!(serde_json::from_str::<Credits>("1.5").is_err());
}
