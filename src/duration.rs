//! Human-friendly durations (`90s`, `15m`, `1h30m`, `500ms`, `2d`) for config and policy files.
//!
//! The grammar is deliberately small: one or more `<digits><unit>` groups, units `ms`, `s`, `m`,
//! `h`, `d`, no signs, no spaces, no fractions. Anything else is an error rather than a guess,
//! because a misread lifetime in a security config fails silently.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The string was empty.
    #[error("duration is empty")]
    Empty,
    /// A group has a number but no unit, e.g. `90`.
    #[error("duration `{0}` has a number without a unit; add one of ms, s, m, h, d")]
    MissingUnit(String),
    /// A group has a unit but no number, e.g. `h` or `1hm`.
    #[error("duration `{0}` has a unit without a number")]
    MissingNumber(String),
    /// A unit other than ms, s, m, h, d.
    #[error("duration `{input}` has unknown unit `{unit}`; use ms, s, m, h or d")]
    UnknownUnit {
        /// The whole input, for context.
        input: String,
        /// The unit that was not recognised.
        unit: String,
    },
    /// A character that is neither a digit nor a unit letter.
    #[error("duration `{0}` contains an unexpected character")]
    InvalidCharacter(String),
    /// The value does not fit in a `Duration`.
    #[error("duration `{0}` is too large")]
    Overflow(String),
}

/// Parse a duration such as `90s`, `15m`, `1h30m`, `500ms` or `2d`.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let overflow = || DurationError::Overflow(s.to_owned());
    let mut total_ms: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (digits, after) = rest.split_at(digits_end);
        let unit_end = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, tail) = after.split_at(unit_end);
        if digits.is_empty() {
            return Err(if unit.is_empty() {
                DurationError::InvalidCharacter(s.to_owned())
            } else {
                DurationError::MissingNumber(s.to_owned())
            });
        }
        if unit.is_empty() {
            return Err(if tail.is_empty() {
                DurationError::MissingUnit(s.to_owned())
            } else {
                DurationError::InvalidCharacter(s.to_owned())
            });
        }
        let per_unit_ms: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            other => {
                return Err(DurationError::UnknownUnit {
                    input: s.to_owned(),
                    unit: other.to_owned(),
                });
            }
        };
        let n: u64 = digits.parse().map_err(|_| overflow())?;
        let group_ms = n.checked_mul(per_unit_ms).ok_or_else(overflow)?;
        total_ms = total_ms.checked_add(group_ms).ok_or_else(overflow)?;
        rest = tail;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Format a duration in the same grammar [`parse_duration`] accepts (largest units first).
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        let n = ms / size;
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
            ms %= size;
        }
    }
    out
}

/// Serde helper: `#[serde(deserialize_with = "crate::duration::deserialize")]` on a `Duration`.
pub fn deserialize<'de, D>(deserializer: D) -> Result<Duration, D::Error>
where
    D: Deserializer<'de>,
{
    let s = String::deserialize(deserializer)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_single_units() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn accepts_compound() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(
            parse_duration("1d2h3m4s5ms"),
            Ok(Duration::from_millis(93_784_005))
        );
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert!(matches!(
            parse_duration("90"),
            Err(DurationError::MissingUnit(_))
        ));
        assert!(matches!(
            parse_duration("h"),
            Err(DurationError::MissingNumber(_))
        ));
        assert!(matches!(
            parse_duration("1hm"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration("1h30"),
            Err(DurationError::MissingUnit(_))
        ));
        assert!(matches!(
            parse_duration("5y"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration("1 h"),
            Err(DurationError::InvalidCharacter(_))
        ));
        assert!(matches!(
            parse_duration("-1s"),
            Err(DurationError::InvalidCharacter(_))
        ));
        assert!(matches!(
            parse_duration("1.5h"),
            Err(DurationError::InvalidCharacter(_))
        ));
        assert!(matches!(
            parse_duration("1h "),
            Err(DurationError::InvalidCharacter(_))
        ));
        assert!(matches!(
            parse_duration("٣s"),
            Err(DurationError::InvalidCharacter(_))
        ));
    }

    #[test]
    fn rejects_overflow() {
        assert!(matches!(
            parse_duration("99999999999999999999999s"),
            Err(DurationError::Overflow(_))
        ));
        assert!(matches!(
            parse_duration("213503982335d"),
            Err(DurationError::Overflow(_))
        ));
        assert!(matches!(
            parse_duration("18446744073709551615ms1ms"),
            Err(DurationError::Overflow(_))
        ));
    }

    #[test]
    fn format_round_trips() {
        for s in ["1h30m", "2d", "500ms", "1d2h3m4s5ms", "0s"] {
            let d = parse_duration(s).unwrap();
            assert_eq!(format_duration(d), s);
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
    }

    #[test]
    fn serde_helper_reports_bad_values() {
        #[derive(Deserialize, Debug)]
        struct C {
            #[serde(deserialize_with = "deserialize")]
            ttl: Duration,
        }
        let c: C = serde_saphyr::from_str("ttl: 5m\n").unwrap();
        assert_eq!(c.ttl, Duration::from_secs(300));
        let err = serde_saphyr::from_str::<C>("ttl: 5x\n").unwrap_err();
        assert!(err.to_string().contains("unknown unit"));
    }
}
