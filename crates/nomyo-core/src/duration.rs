//! The one duration syntax of the configuration file and the command line:
//! `"500ms"`, `"30s"`, `"10m"`, `"24h"`, `"7d"`.

use std::time::Duration;

/// Parses `"500ms"`, `"30s"`, `"10m"`, `"24h"`, `"7d"` (one number, one
/// unit; a bare number is seconds). `None` for anything else, and for a
/// duration too long to represent in milliseconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let ms_per = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(ms_per).map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn one_number_one_unit() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("24h"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration(" 15 m "), Some(Duration::from_secs(900)));
    }

    #[test]
    fn everything_else_is_refused() {
        for bad in ["", "h", "-5s", "1.5s", "5 weeks", "10M", "1h30m", "s5"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        // Too long for milliseconds in a u64.
        assert_eq!(parse_duration(&format!("{}d", u64::MAX / 1000)), None);
    }
}
