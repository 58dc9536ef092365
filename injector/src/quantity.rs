//! Kubernetes resource quantities ("100m", "64Mi", "1.5Gi", "2e3"), parsed exactly enough to
//! validate an override before the API server sees it and to compare a request with a limit.
//!
//! Values are held as an integer count of nano-units (`u128`), so comparison is exact and no
//! float is involved. The grammar is the one of `k8s.io/apimachinery/pkg/api/resource`:
//! a non-negative decimal number followed by an optional suffix: a binary SI suffix
//! (`Ki Mi Gi Ti Pi Ei`), a decimal SI suffix (`n u m k M G T P E`) or a decimal exponent
//! (`e3`, `E-2`).

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// A validated quantity: the text as written (what goes into the pod) and its exact value.
#[derive(Debug, Clone)]
pub struct Quantity {
    text: String,
    nanos: u128,
}

/// Why a string is not a Kubernetes quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("empty quantity")]
    Empty,
    #[error(
        "{0:?} is not a quantity: expected a number with an optional suffix such as 100m, 64Mi or 1Gi"
    )]
    Syntax(String),
    #[error(
        "{0:?} has an unknown suffix: use one of Ki Mi Gi Ti Pi Ei, n u m k M G T P E, or an exponent like e3"
    )]
    Suffix(String),
    #[error("{0:?} is out of range")]
    Range(String),
}

impl Quantity {
    /// The quantity as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The exact value in nano-units (1 = 1e-9 of the unit: of a core for CPU, of a byte for memory).
    pub fn nanos(&self) -> u128 {
        self.nanos
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}
impl Eq for Quantity {}
impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        if text.is_empty() {
            return Err(QuantityError::Empty);
        }
        let syntax = || QuantityError::Syntax(text.to_owned());
        let range = || QuantityError::Range(text.to_owned());
        let unsigned = text.strip_prefix('+').unwrap_or(text);
        let number_len = unsigned
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(unsigned.len());
        let (number, suffix) = unsigned.split_at(number_len);
        let (int_part, frac_part) = match number.split_once('.') {
            Some((i, f)) => (i, f),
            None => (number, ""),
        };
        if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
            return Err(syntax());
        }
        // Beyond nano precision the API server rounds; 18 fractional digits keeps u128 safe.
        if int_part.len() > 20 || frac_part.len() > 18 {
            return Err(range());
        }
        // mantissa = number * 10^frac_len, an integer.
        let digits = format!("{int_part}{frac_part}");
        let mantissa: u128 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| syntax())?
        };
        let frac_len = frac_part.len() as u32;

        // value_in_nanos = mantissa * multiplier_nanos / 10^frac_len, rounded up.
        let (numerator, denominator) = match suffix {
            "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => {
                let power = match suffix {
                    "Ki" => 1,
                    "Mi" => 2,
                    "Gi" => 3,
                    "Ti" => 4,
                    "Pi" => 5,
                    _ => 6,
                };
                let multiplier = (1u128 << (10 * power)) * 1_000_000_000;
                (
                    mantissa.checked_mul(multiplier).ok_or_else(range)?,
                    10u128.pow(frac_len),
                )
            }
            _ => {
                let exp10: i32 = match suffix {
                    "" => 0,
                    "n" => -9,
                    "u" => -6,
                    "m" => -3,
                    "k" => 3,
                    "M" => 6,
                    "G" => 9,
                    "T" => 12,
                    "P" => 15,
                    "E" => 18,
                    s if s.len() > 1 && (s.starts_with('e') || s.starts_with('E')) => s[1..]
                        .parse::<i32>()
                        .map_err(|_| QuantityError::Suffix(text.to_owned()))?,
                    _ => return Err(QuantityError::Suffix(text.to_owned())),
                };
                if !(-9..=18).contains(&exp10) {
                    return Err(range());
                }
                // nanos = mantissa * 10^(9 + exp10) / 10^frac_len
                let scale = 9 + exp10 - frac_len as i32;
                if scale >= 0 {
                    let m = 10u128.checked_pow(scale as u32).ok_or_else(range)?;
                    (mantissa.checked_mul(m).ok_or_else(range)?, 1)
                } else {
                    (
                        mantissa,
                        10u128.checked_pow((-scale) as u32).ok_or_else(range)?,
                    )
                }
            }
        };
        let nanos = numerator.div_ceil(denominator);
        Ok(Quantity {
            text: text.to_owned(),
            nanos,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        s.parse().unwrap()
    }

    #[test]
    fn parses_common_forms_exactly() {
        assert_eq!(q("100m").nanos(), 100_000_000);
        assert_eq!(q("1").nanos(), 1_000_000_000);
        assert_eq!(q("0.5").nanos(), 500_000_000);
        assert_eq!(q("64Mi").nanos(), 64 * 1024 * 1024 * 1_000_000_000);
        assert_eq!(q("1.5Gi").nanos(), 3 * 512 * 1024 * 1024 * 1_000_000_000);
        assert_eq!(q("2k").nanos(), 2_000 * 1_000_000_000);
        assert_eq!(q("2e3"), q("2k"));
        assert_eq!(q("1E-3"), q("1m"));
        assert_eq!(q("+1"), q("1000m"));
        assert_eq!(q("1n").nanos(), 1);
    }

    #[test]
    fn compares_across_suffixes() {
        assert!(q("100m") < q("1"));
        assert!(q("1Gi") > q("1G"));
        assert!(q("1024Mi") == q("1Gi"));
        assert!(q("500m") < q("0.6"));
    }

    #[test]
    fn rejects_what_kubernetes_rejects() {
        for bad in [
            "", "-1", "abc", "1.2.3", "10 Mi", "10mb", "1Qi", ".", "1e", "Mi", "1e99",
        ] {
            assert!(
                bad.parse::<Quantity>().is_err(),
                "{bad:?} should be rejected"
            );
        }
    }
}
