//! The one parser for every seconds-valued flag (`--duration`, `--stats`, `--interval`,
//! `--learn`, `--idle-timeout`, ...): a positive, finite number no larger than
//! [`MAX_SECS`], so that converting it to a `Duration` or adding it to an `Instant`
//! can never overflow.

/// Largest accepted number of seconds (about 31 years).
pub const MAX_SECS: f64 = 1e9;

/// Parses a positive number of seconds of at most [`MAX_SECS`].
pub fn parse_positive_secs(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("`{s}` must be a positive number of seconds"));
    }
    if v > MAX_SECS {
        return Err(format!(
            "`{s}` is out of range: at most {MAX_SECS:e} seconds (about 31 years)"
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn accepts_ordinary_values() {
        assert_eq!(parse_positive_secs("2.5"), Ok(2.5));
        assert_eq!(parse_positive_secs("1e9"), Ok(1e9));
    }

    #[test]
    fn rejects_values_that_would_overflow_a_duration() {
        for s in ["1e19", "1e300", "1.0000001e9"] {
            let err = parse_positive_secs(s).unwrap_err();
            assert!(err.contains("out of range"), "{s}: {err}");
        }
    }

    #[test]
    fn rejects_non_positive_and_non_finite() {
        for s in ["0", "-1", "inf", "NaN", "x"] {
            assert!(parse_positive_secs(s).is_err(), "{s}");
        }
    }

    #[test]
    fn the_largest_value_fits_a_deadline() {
        let d = Duration::from_secs_f64(MAX_SECS);
        assert!(Instant::now().checked_add(d).is_some());
    }
}
