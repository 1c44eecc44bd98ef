//! A float histogram as Prometheus writes it as text
//! (`FloatHistogram.String`), e.g. for `count_values` label values:
//! `{count:20, sum:10, [-2,-1):2, [-0.001,0.001]:2, (0.5,1]:1}` — the
//! populated negative buckets from the lowest, the zero bucket when it
//! counts anything, the populated positive buckets; numbers as Go's `%g`.

use std::fmt;

use super::histogram::FloatHistogram;

/// `v` as Go's `%g` (shortest representation) writes it: plain decimal
/// for exponents from -4 to 5, else `d.ddde±XX`.
pub fn go_format_g(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    // Rust's `{:e}` gives the shortest round-trip digits and the exponent.
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..6).contains(&exp) {
        return format!("{v}");
    }
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.abs())
}

impl fmt::Display for FloatHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{{count:{}, sum:{}",
            go_format_g(self.count),
            go_format_g(self.sum)
        )?;
        let custom = self.uses_custom_buckets();
        for b in self.all_buckets() {
            if b.count == 0.0 {
                continue;
            }
            let zero = !custom && b.lower == -self.zero_threshold && b.upper == self.zero_threshold;
            let (open, close) = if zero {
                ('[', ']')
            } else if b.upper <= 0.0 && !custom {
                ('[', ')')
            } else {
                ('(', ']')
            };
            write!(
                f,
                ", {open}{},{}{close}:{}",
                go_format_g(b.lower),
                go_format_g(b.upper),
                go_format_g(b.count)
            )?;
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::histogram::Span;

    #[test]
    fn numbers_as_go_writes_them() {
        assert_eq!(go_format_g(20.0), "20");
        assert_eq!(go_format_g(0.001), "0.001");
        assert_eq!(go_format_g(1e-5), "1e-05");
        assert_eq!(go_format_g(1e6), "1e+06");
        assert_eq!(go_format_g(123456.0), "123456");
        assert_eq!(go_format_g(1234567.0), "1.234567e+06");
        assert_eq!(go_format_g(-0.5), "-0.5");
    }

    #[test]
    fn buckets_from_lowest_with_their_bounds() {
        let h = FloatHistogram {
            count: 20.0,
            sum: 10.0,
            zero_threshold: 0.001,
            zero_count: 2.0,
            positive_spans: vec![Span {
                offset: 0,
                length: 2,
            }],
            positive_buckets: vec![1.0, 2.0],
            negative_spans: vec![Span {
                offset: 0,
                length: 2,
            }],
            negative_buckets: vec![1.0, 2.0],
            ..FloatHistogram::default()
        };
        assert_eq!(
            h.to_string(),
            "{count:20, sum:10, [-2,-1):2, [-1,-0.5):1, [-0.001,0.001]:2, (0.5,1]:1, (1,2]:2}"
        );
    }
}
