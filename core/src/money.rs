//! Real money and its exchange with credits: [`Money`], [`CurrencyCode`], [`CreditPack`].
//!
//! Money is a `u64` count of **micro-units** of a currency (1 USD = 1,000,000 micro-USD),
//! so cents and credits convert without floats. Rounding rules, all explicit:
//! - credits → money ([`CreditPack::money_for`]): round **up** (the customer is charged
//!   for at least what they used);
//! - money → credits bought ([`CreditPack::credits_for`]): round **down** (a purchase never
//!   yields more credits than were paid for);
//! - a price stated in money → credits ([`CreditPack::price_in_credits`]): round **up**
//!   (the money price is never undercut);
//! - money → minor units for an invoice ([`Money::to_minor_units_ceil`]): round **up**.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::credits::{Credits, ParseCreditsError};

/// Micro-units in one currency unit (one dollar, one euro).
pub const MICROS_PER_UNIT: u64 = 1_000_000;

/// An amount of money in micro-units of its currency. Serialized as the integer.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Money(pub u64);

impl Money {
    /// Nothing.
    pub const ZERO: Money = Money(0);

    /// An amount in micro-units.
    pub const fn from_micros(micros: u64) -> Money {
        Money(micros)
    }

    /// Whole currency units (dollars); `None` on overflow.
    pub const fn from_units(units: u64) -> Option<Money> {
        match units.checked_mul(MICROS_PER_UNIT) {
            Some(m) => Some(Money(m)),
            None => None,
        }
    }

    /// Cents (hundredths); `None` on overflow.
    pub const fn from_cents(cents: u64) -> Option<Money> {
        match cents.checked_mul(MICROS_PER_UNIT / 100) {
            Some(m) => Some(Money(m)),
            None => None,
        }
    }

    /// The amount in micro-units.
    pub const fn micros(self) -> u64 {
        self.0
    }

    /// Minor units for a currency with `exponent` decimals (2 for USD cents, 0 for JPY),
    /// rounded up; `None` if `exponent > 6`.
    pub const fn to_minor_units_ceil(self, exponent: u32) -> Option<u64> {
        if exponent > 6 {
            return None;
        }
        let per_minor = MICROS_PER_UNIT / 10u64.pow(exponent);
        Some(self.0.div_ceil(per_minor))
    }

    /// Cents, rounded up.
    pub const fn to_cents_ceil(self) -> u64 {
        self.0.div_ceil(MICROS_PER_UNIT / 100)
    }

    /// `self + rhs`, or `None` on overflow.
    pub const fn checked_add(self, rhs: Money) -> Option<Money> {
        match self.0.checked_add(rhs.0) {
            Some(v) => Some(Money(v)),
            None => None,
        }
    }

    /// `self * n`, or `None` on overflow.
    pub const fn checked_mul(self, n: u64) -> Option<Money> {
        match self.0.checked_mul(n) {
            Some(v) => Some(Money(v)),
            None => None,
        }
    }
}

impl fmt::Display for Money {
    /// Currency units with six decimals: `Money(100_000)` is `0.100000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&Credits::from_micros(self.0), f)
    }
}

impl FromStr for Money {
    type Err = ParseCreditsError;

    /// Parses currency units exactly (`"0.99"`, `"500"`), with the rules of `Credits`.
    fn from_str(s: &str) -> Result<Money, ParseCreditsError> {
        s.parse::<Credits>().map(|c| Money(c.micros()))
    }
}

/// An ISO 4217 currency code such as `USD`: three ASCII upper-case letters.
/// Serialized as the string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CurrencyCode([u8; 3]);

impl CurrencyCode {
    /// US dollars.
    pub const USD: CurrencyCode = CurrencyCode(*b"USD");

    /// The code as a string.
    pub fn as_str(&self) -> &str {
        // Only ASCII upper-case letters get in (see `FromStr`), so this never fails.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl FromStr for CurrencyCode {
    type Err = MoneyError;

    fn from_str(s: &str) -> Result<CurrencyCode, MoneyError> {
        match s.as_bytes() {
            &[a, b, c] if [a, b, c].iter().all(u8::is_ascii_uppercase) => {
                Ok(CurrencyCode([a, b, c]))
            }
            _ => Err(MoneyError::BadCurrency(s.to_owned())),
        }
    }
}

impl TryFrom<String> for CurrencyCode {
    type Error = MoneyError;
    fn try_from(s: String) -> Result<CurrencyCode, MoneyError> {
        s.parse()
    }
}

impl From<CurrencyCode> for String {
    fn from(c: CurrencyCode) -> String {
        c.as_str().to_owned()
    }
}

impl fmt::Display for CurrencyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Why a money conversion failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MoneyError {
    /// The result does not fit in `u64`.
    #[error("money conversion overflows u64: amounts too large")]
    Overflow,
    /// A pack with zero credits or zero price defines no exchange rate.
    #[error("credit pack has zero credits or zero price: it defines no exchange rate")]
    EmptyPack,
    /// Not a three-letter upper-case currency code.
    #[error("invalid currency code {0:?}: use three upper-case letters such as USD")]
    BadCurrency(String),
}

/// A pack of credits sold for a price: it defines the exchange rate between credits and
/// money (e.g. 100,000 credits for $500, so one credit is half a cent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CreditPack {
    /// Credits in the pack.
    pub credits: Credits,
    /// What the pack costs.
    pub price: Money,
    /// The price's currency.
    pub currency: CurrencyCode,
}

impl CreditPack {
    /// A pack; [`MoneyError::EmptyPack`] if either amount is zero.
    pub fn new(credits: Credits, price: Money, currency: CurrencyCode) -> Result<Self, MoneyError> {
        let pack = CreditPack {
            credits,
            price,
            currency,
        };
        pack.check()?;
        Ok(pack)
    }

    fn check(&self) -> Result<(), MoneyError> {
        if self.credits.is_zero() || self.price.0 == 0 {
            return Err(MoneyError::EmptyPack);
        }
        Ok(())
    }

    /// What `credits` cost in money at this pack's rate, rounded **up**.
    pub fn money_for(&self, credits: Credits) -> Result<Money, MoneyError> {
        self.check()?;
        let n = u128::from(credits.micros()) * u128::from(self.price.0);
        let m = n.div_ceil(u128::from(self.credits.micros()));
        u64::try_from(m)
            .map(Money)
            .map_err(|_| MoneyError::Overflow)
    }

    /// Credits that `money` buys at this pack's rate, rounded **down**.
    pub fn credits_for(&self, money: Money) -> Result<Credits, MoneyError> {
        self.check()?;
        let n = u128::from(money.0) * u128::from(self.credits.micros());
        let c = n / u128::from(self.price.0);
        u64::try_from(c)
            .map(Credits::from_micros)
            .map_err(|_| MoneyError::Overflow)
    }

    /// A price stated in money (say $0.04 a request) as credits, rounded **up**, so that
    /// charging it never costs the seller.
    pub fn price_in_credits(&self, price: Money) -> Result<Credits, MoneyError> {
        self.check()?;
        let n = u128::from(price.0) * u128::from(self.credits.micros());
        let c = n.div_ceil(u128::from(self.price.0));
        u64::try_from(c)
            .map(Credits::from_micros)
            .map_err(|_| MoneyError::Overflow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack_500_usd() -> CreditPack {
        CreditPack::new(
            Credits::from_credits(100_000).unwrap(),
            Money::from_units(500).unwrap(),
            CurrencyCode::USD,
        )
        .unwrap()
    }

    #[test]
    fn action_of_20_credits_is_ten_cents() {
        // 100,000 credits for $500: an action of 20 credits is $0.10.
        let pack = pack_500_usd();
        let money = pack.money_for(Credits::from_credits(20).unwrap()).unwrap();
        assert_eq!(money, Money::from_cents(10).unwrap());
        assert_eq!(money.to_cents_ceil(), 10);
        assert_eq!(money.to_string(), "0.100000");
        assert_eq!(
            pack.credits_for(Money::from_units(500).unwrap()),
            Ok(Credits::from_credits(100_000).unwrap())
        );
    }

    #[test]
    fn rounding_directions() {
        // 3 credits for $1: one credit is 333,333.33.. micro-dollars.
        let pack = CreditPack::new(
            Credits::from_credits(3).unwrap(),
            Money::from_units(1).unwrap(),
            CurrencyCode::USD,
        )
        .unwrap();
        assert_eq!(pack.money_for(Credits::ONE), Ok(Money(333_334))); // up
        assert_eq!(pack.credits_for(Money(1)), Ok(Credits(3))); // exact
        assert_eq!(pack.credits_for(Money(333_333)), Ok(Credits(999_999))); // down
        assert_eq!(pack.price_in_credits(Money(333_333)), Ok(Credits(999_999)));
        assert_eq!(Money(1).to_cents_ceil(), 1);
        assert_eq!(Money(1_500_000).to_minor_units_ceil(0), Some(2));
        assert_eq!(Money(1).to_minor_units_ceil(7), None);
    }

    #[test]
    fn bad_packs_and_overflow_are_errors() {
        assert_eq!(
            CreditPack::new(Credits::ZERO, Money(1), CurrencyCode::USD),
            Err(MoneyError::EmptyPack)
        );
        let cheap = CreditPack::new(Credits::MAX, Money(1), CurrencyCode::USD).unwrap();
        assert_eq!(cheap.credits_for(Money(2)), Err(MoneyError::Overflow));
        let dear = CreditPack::new(Credits(1), Money(u64::MAX), CurrencyCode::USD).unwrap();
        assert_eq!(dear.money_for(Credits(2)), Err(MoneyError::Overflow));
    }

    #[test]
    fn currency_codes() {
        assert_eq!("EUR".parse::<CurrencyCode>().unwrap().as_str(), "EUR");
        assert!("usd".parse::<CurrencyCode>().is_err());
        assert!("USDX".parse::<CurrencyCode>().is_err());
        let json = serde_json::to_string(&pack_500_usd()).unwrap();
        assert_eq!(
            json,
            r#"{"credits":100000000000,"price":500000000,"currency":"USD"}"#
        );
        assert_eq!(
            serde_json::from_str::<CreditPack>(&json).unwrap(),
            pack_500_usd()
        );
        assert!(serde_json::from_str::<CurrencyCode>(r#""us""#).is_err());
        assert_eq!("0.99".parse::<Money>(), Ok(Money(990_000)));
    }
}
