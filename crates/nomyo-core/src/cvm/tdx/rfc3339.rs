//! UTC times in RFC 3339 form (the collateral's dates, a person's `at`),
//! read as unix seconds.

/// Parses `YYYY-MM-DDTHH:MM:SSZ` (optionally with fractional seconds) to
/// unix seconds. Bounded: every field is range-checked, no overflow.
pub(crate) fn rfc3339_utc(s: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "not a UTC RFC 3339 time: {:?}",
            s.chars().take(40).collect::<String>()
        )
    };
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<u64, String> {
        let part = s.get(r).ok_or_else(bad)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        part.parse::<u64>().map_err(|_| bad())
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let rest = &b[19..];
    let rest = match rest.first() {
        Some(b'.') => {
            let digits = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if digits == 0 {
                return Err(bad());
            }
            &rest[1 + digits..]
        }
        _ => rest,
    };
    if !matches!(rest, b"Z" | b"z" | b"+00:00") {
        return Err(bad());
    }
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&mo) || h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if d == 0 || d > month_days[(mo - 1) as usize] {
        return Err(bad());
    }
    // Days since 1970-01-01 (Howard Hinnant's days_from_civil, for y >= 1970).
    let (y2, m2) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y2 / 400;
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(days * 86_400 + h * 3600 + mi * 60 + sec)
}

/// Reads an RFC 3339 time in UTC (`2025-06-20T00:00:00Z`, fractional
/// seconds allowed) as unix seconds: the `at` of
/// [`verify_tdx`](super::verify_tdx) from a person's input.
pub fn parse_rfc3339(s: &str) -> Result<u64, String> {
    rfc3339_utc(s)
}

/// [`rfc3339_utc`], for the fuzz targets.
#[doc(hidden)]
pub fn fuzz_rfc3339(s: &str) -> Result<u64, String> {
    rfc3339_utc(s)
}

#[cfg(test)]
mod tests {
    use super::rfc3339_utc;

    #[test]
    fn rfc3339_reads_utc_times_and_refuses_the_rest() {
        assert_eq!(rfc3339_utc("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(rfc3339_utc("2025-06-19T10:16:03Z"), Ok(1_750_328_163));
        assert_eq!(rfc3339_utc("2024-02-29T23:59:59.123Z"), Ok(1_709_251_199));
        assert_eq!(rfc3339_utc("2000-03-01T00:00:00+00:00"), Ok(951_868_800));
        for bad in [
            "",
            "2025-06-19",
            "2025-06-19T10:16:03",
            "2025-06-19T10:16:03+01:00",
            "2023-02-29T00:00:00Z",
            "2025-13-01T00:00:00Z",
            "2025-00-01T00:00:00Z",
            "2025-06-19T24:00:00Z",
            "1969-12-31T23:59:59Z",
            "2025-06-19T10:16:03.Z",
            "+025-06-19T10:16:03Z",
            "2025-06-19T10:16:0\u{e9}Z",
        ] {
            assert!(rfc3339_utc(bad).is_err(), "{bad}");
        }
    }
}
