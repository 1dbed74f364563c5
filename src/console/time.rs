//! Times as operators read them: "3 min ago" on the page, the exact UTC time on hover (the
//! script keeps the relative text current without a reload).

use chrono::{DateTime, Utc};
use maud::{Markup, html};

/// A duration in words at one or two units: `42 s`, `3 min`, `2 h 5 min`, `4 d 3 h`.
pub fn duration_words(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => match (s % 3600) / 60 {
            0 => format!("{} h", s / 3600),
            m => format!("{} h {m} min", s / 3600),
        },
        _ => match (s % 86_400) / 3600 {
            0 => format!("{} d", s / 86_400),
            h => format!("{} d {h} h", s / 86_400),
        },
    }
}

/// `3 min ago` (or `in 3 min` for a time ahead of `now`, e.g. a license's expiry).
pub fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - t).num_seconds();
    if secs.abs() < 5 {
        "just now".into()
    } else if secs > 0 {
        format!("{} ago", duration_words(secs))
    } else {
        format!("in {}", duration_words(-secs))
    }
}

/// The exact time, as the hover text shows it.
pub fn exact(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A `<time>` element: relative text, exact time on hover, machine-readable `datetime`.
pub fn time_el(t: DateTime<Utc>, now: DateTime<Utc>) -> Markup {
    html! {
        time datetime=(t.to_rfc3339()) title=(exact(t)) data-relative { (relative(t, now)) }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration_words(42), "42 s");
        assert_eq!(duration_words(3 * 60 + 5), "3 min");
        assert_eq!(duration_words(7200), "2 h");
        assert_eq!(duration_words(7200 + 300), "2 h 5 min");
        assert_eq!(duration_words(4 * 86_400 + 3 * 3600), "4 d 3 h");
        let now = Utc::now();
        assert_eq!(relative(now - Duration::minutes(3), now), "3 min ago");
        assert_eq!(relative(now, now), "just now");
        assert_eq!(relative(now + Duration::days(2), now), "in 2 d");
    }
}
