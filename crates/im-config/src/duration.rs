//! Durations as written in config: an integer and a unit, `100ms`, `5s`, `30m`, `1h`, `7d`, or several
//! of those run together (`1h30m`), as in Go's `time.ParseDuration` that the guide's values follow.
//! Fractions (`1.5h`) are refused rather than rounded: write `90m`.

use std::time::Duration;

const UNITS: &[(&str, u64)] = &[("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)];

const EXPECTED: &str = "expected a duration such as 100ms, 5s, 30m, 1h or 7d";

pub fn parse(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(format!("invalid value {text:?}: {EXPECTED}"));
    }
    // A bare zero is unambiguous in every unit.
    if trimmed == "0" {
        return Ok(Duration::ZERO);
    }
    let mut millis: u64 = 0;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let digits_end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits_end == 0 {
            return Err(format!("invalid value {text:?}: {EXPECTED}"));
        }
        let (digits, after) = rest.split_at(digits_end);
        if after.starts_with('.') {
            return Err(format!(
                "invalid value {text:?}: fractions are not supported, use a smaller unit (90m, not 1.5h)"
            ));
        }
        let unit_end = after.find(|c: char| c.is_ascii_digit()).unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        if unit.is_empty() {
            return Err(format!("invalid value {text:?}: missing unit, {EXPECTED}"));
        }
        let Some(&(_, unit_millis)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(format!("invalid value {text:?}: unknown unit {unit:?}, {EXPECTED}"));
        };
        let overflow = || format!("invalid value {text:?}: too large");
        let amount: u64 = digits.parse().map_err(|_| overflow())?;
        let part = amount.checked_mul(unit_millis).ok_or_else(overflow)?;
        millis = millis.checked_add(part).ok_or_else(overflow)?;
        rest = next;
    }
    Ok(Duration::from_millis(millis))
}

/// The shortest spelling in one unit that [`parse`] reads back, using hours at most so that values
/// stay readable by Go-style parsers too (`720h`, not `30d`).
pub fn format(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis == 0 {
        return "0s".to_owned();
    }
    let (name, size) =
        UNITS[..4].iter().rev().find(|(_, size)| millis.is_multiple_of(u128::from(*size))).copied().unwrap_or(UNITS[0]);
    format!("{}{name}", millis / u128::from(size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("30m"), Ok(Duration::from_secs(30 * 60)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("720h"), Ok(Duration::from_secs(720 * 3600)));
        assert_eq!(parse("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse(" 1h30m "), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_what_it_cannot_read_exactly() {
        for bad in ["", "5", "s", "5x", "1.5h", "-5s", "5 s", "h5", "99999999999999999999s", "18446744073709551615d"] {
            let error = parse(bad).expect_err(bad);
            assert!(error.contains(&format!("{bad:?}")), "{error}");
        }
        assert!(parse("5").unwrap_err().contains("missing unit"));
        assert!(parse("1.5h").unwrap_err().contains("fractions"));
        assert!(parse("5x").unwrap_err().contains("unknown unit \"x\""));
    }

    #[test]
    fn format_reads_back() {
        for text in ["100ms", "1500ms", "5s", "90s", "30m", "1h", "720h", "0s"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
        assert_eq!(format(parse("1h30m").unwrap()), "90m");
        assert_eq!(format(parse("30d").unwrap()), "720h");
    }
}
