//! Time functions, following Prometheus `promql/functions.go` (`funcTime`,
//! `funcTimestamp`, `dateWrapper` and `funcDayOfMonth` ... `funcYear`):
//! values are Unix seconds, calendar fields in UTC.

/// Civil date (year, month 1-12, day 1-31) of days since the epoch
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// The calendar function called `name` applied to Unix seconds `v`.
pub(crate) fn date_fn(name: &str) -> Option<fn(f64) -> f64> {
    Some(match name {
        "day_of_month" => |v| date(v, |_, _, d, _, _| d as f64),
        "day_of_week" => |v| {
            let days = (v as i64).div_euclid(86_400);
            (days + 4).rem_euclid(7) as f64
        },
        "day_of_year" => |v| {
            date(v, |y, m, d, _, _| {
                let before: u32 = (1..m).map(|mm| days_in(y, mm)).sum();
                (before + d) as f64
            })
        },
        "days_in_month" => |v| date(v, |y, m, _, _, _| days_in(y, m) as f64),
        "hour" => |v| date(v, |_, _, _, secs, _| (secs / 3600) as f64),
        "minute" => |v| date(v, |_, _, _, secs, _| ((secs % 3600) / 60) as f64),
        "month" => |v| date(v, |_, m, _, _, _| m as f64),
        "year" => |v| date(v, |y, _, _, _, _| y as f64),
        _ => return None,
    })
}

fn date(v: f64, f: impl Fn(i64, u32, u32, i64, i64) -> f64) -> f64 {
    if v.is_nan() || v.is_infinite() {
        return f64::NAN;
    }
    let secs = v as i64;
    let days = secs.div_euclid(86_400);
    let in_day = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    f(y, m, d, in_day, secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_fields() {
        // 2024-02-29T13:45:00Z
        let t = 1_709_214_300.0;
        let call = |n: &str| date_fn(n).expect("known function")(t);
        assert_eq!(call("year"), 2024.0);
        assert_eq!(call("month"), 2.0);
        assert_eq!(call("day_of_month"), 29.0);
        assert_eq!(call("days_in_month"), 29.0);
        assert_eq!(call("day_of_year"), 60.0);
        assert_eq!(call("day_of_week"), 4.0);
        assert_eq!(call("hour"), 13.0);
        assert_eq!(call("minute"), 45.0);
    }
}
