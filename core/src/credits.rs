//! `Credits`: the one money unit of Tollgate, an integer count of micro-credits.
//!
//! Invariant: no arithmetic on `Credits` wraps or panics. Every operation that can
//! overflow is `checked_*` (returns `None`) or `saturating_*` (documented clamp).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Micro-credits in one credit.
pub const MICROS_PER_CREDIT: u64 = 1_000_000;

/// Number of decimal places a credit amount has (micro-credits).
const DECIMALS: usize = 6;

/// An amount of credits, stored as integer micro-credits (1 credit = 1,000,000).
///
/// Serialized as the bare integer number of micro-credits (`12500000` for 12.5 credits),
/// shown by `Display` as credits with six decimals (`12.500000`), and parsed by `FromStr`
/// from a decimal number of credits (`"12.5"`, `"12"`, `"0.000001"`), exactly.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Credits(pub u64);

impl Credits {
    /// No credits.
    pub const ZERO: Credits = Credits(0);
    /// The largest representable amount (about 18.4 trillion credits).
    pub const MAX: Credits = Credits(u64::MAX);
    /// Exactly one credit.
    pub const ONE: Credits = Credits(MICROS_PER_CREDIT);

    /// An amount given in micro-credits.
    #[inline]
    pub const fn from_micros(micros: u64) -> Credits {
        Credits(micros)
    }

    /// An amount given in whole credits; `None` if it does not fit in `u64` micro-credits.
    #[inline]
    pub const fn from_credits(credits: u64) -> Option<Credits> {
        match credits.checked_mul(MICROS_PER_CREDIT) {
            Some(m) => Some(Credits(m)),
            None => None,
        }
    }

    /// The amount in micro-credits.
    #[inline]
    pub const fn micros(self) -> u64 {
        self.0
    }

    /// Whole credits, rounded down (the fractional micro-credits are dropped).
    #[inline]
    pub const fn whole_credits(self) -> u64 {
        self.0 / MICROS_PER_CREDIT
    }

    /// `true` if the amount is zero.
    #[inline]
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// `self + rhs`, or `None` on overflow.
    #[inline]
    pub const fn checked_add(self, rhs: Credits) -> Option<Credits> {
        match self.0.checked_add(rhs.0) {
            Some(v) => Some(Credits(v)),
            None => None,
        }
    }

    /// `self - rhs`, or `None` if `rhs > self`.
    #[inline]
    pub const fn checked_sub(self, rhs: Credits) -> Option<Credits> {
        match self.0.checked_sub(rhs.0) {
            Some(v) => Some(Credits(v)),
            None => None,
        }
    }

    /// `self + rhs`, clamped at [`Credits::MAX`].
    #[inline]
    pub const fn saturating_add(self, rhs: Credits) -> Credits {
        Credits(self.0.saturating_add(rhs.0))
    }

    /// `self - rhs`, clamped at zero.
    #[inline]
    pub const fn saturating_sub(self, rhs: Credits) -> Credits {
        Credits(self.0.saturating_sub(rhs.0))
    }

    /// `self * n` (e.g. a unit price times a count), or `None` on overflow.
    #[inline]
    pub const fn checked_mul(self, n: u64) -> Option<Credits> {
        match self.0.checked_mul(n) {
            Some(v) => Some(Credits(v)),
            None => None,
        }
    }

    /// The smaller of two amounts.
    #[inline]
    pub fn min(self, other: Credits) -> Credits {
        Ord::min(self, other)
    }

    /// Sum of amounts, or `None` on overflow.
    pub fn checked_sum<I: IntoIterator<Item = Credits>>(iter: I) -> Option<Credits> {
        iter.into_iter()
            .try_fold(Credits::ZERO, |acc, c| acc.checked_add(c))
    }
}

impl fmt::Display for Credits {
    /// Credits with exactly six decimals: `Credits(12_500_000)` shows as `12.500000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = format!(
            "{}.{:06}",
            self.0 / MICROS_PER_CREDIT,
            self.0 % MICROS_PER_CREDIT
        );
        f.pad(&s)
    }
}

/// Why a string is not a credit amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseCreditsError {
    /// The string is empty.
    #[error("empty credit amount: write a number of credits such as 12.5")]
    Empty,
    /// A leading minus sign: credit amounts are never negative.
    #[error("negative credit amount {0:?}: amounts are never negative")]
    Negative(String),
    /// Something other than digits and one decimal point.
    #[error(
        "invalid credit amount {0:?}: use digits with at most one '.' and digits on both sides (e.g. 12.5)"
    )]
    Invalid(String),
    /// More than six decimals: finer than a micro-credit.
    #[error("credit amount {0:?} has more than 6 decimals: the smallest unit is 0.000001")]
    TooPrecise(String),
    /// Larger than [`Credits::MAX`].
    #[error("credit amount {0:?} is too large: the maximum is {max}", max = Credits::MAX)]
    Overflow(String),
}

impl FromStr for Credits {
    type Err = ParseCreditsError;

    /// Parses a decimal number of credits exactly: `"12.5"`, `"12"`, `"0.000001"`.
    /// No sign, no exponent, no whitespace, at most six decimals.
    fn from_str(s: &str) -> Result<Credits, ParseCreditsError> {
        if s.is_empty() {
            return Err(ParseCreditsError::Empty);
        }
        if s.starts_with('-') {
            return Err(ParseCreditsError::Negative(s.to_owned()));
        }
        let (whole, frac) = match s.split_once('.') {
            Some((w, f)) => (w, Some(f)),
            None => (s, None),
        };
        let all_digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(whole) || frac.is_some_and(|f| !all_digits(f)) {
            return Err(ParseCreditsError::Invalid(s.to_owned()));
        }
        let frac = frac.unwrap_or("");
        if frac.len() > DECIMALS {
            return Err(ParseCreditsError::TooPrecise(s.to_owned()));
        }
        let overflow = || ParseCreditsError::Overflow(s.to_owned());
        // Digits only (checked above), so the only possible failure is overflow.
        let mut micros: u64 = 0;
        for b in whole.bytes() {
            micros = micros
                .checked_mul(10)
                .and_then(|m| m.checked_add(u64::from(b - b'0')))
                .ok_or_else(overflow)?;
        }
        micros = micros.checked_mul(MICROS_PER_CREDIT).ok_or_else(overflow)?;
        let mut frac_micros: u64 = 0;
        for i in 0..DECIMALS {
            let d = frac.as_bytes().get(i).map_or(0, |b| u64::from(b - b'0'));
            frac_micros = frac_micros * 10 + d;
        }
        micros = micros.checked_add(frac_micros).ok_or_else(overflow)?;
        Ok(Credits(micros))
    }
}

#[cfg(test)]
mod tests;
