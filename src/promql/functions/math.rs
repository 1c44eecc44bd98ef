//! Element-wise math on instant vectors, following Prometheus
//! `promql/functions.go` (`funcAbs`, `funcCeil`, ..., `funcClamp`,
//! `funcClampMin`, `funcClampMax`, `funcRound`) and the trigonometric
//! functions of `functions.go`/`trig_functions.test`.

use crate::promql::stats::{go_max, go_min};

/// The element-wise function called `name`, if there is one.
pub(crate) fn simple(name: &str) -> Option<fn(f64) -> f64> {
    Some(match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "sqrt" => f64::sqrt,
        "exp" => f64::exp,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sgn" => sgn,
        "sin" => f64::sin,
        "cos" => f64::cos,
        "tan" => f64::tan,
        "asin" => f64::asin,
        "acos" => f64::acos,
        "atan" => f64::atan,
        "sinh" => f64::sinh,
        "cosh" => f64::cosh,
        "tanh" => f64::tanh,
        "asinh" => f64::asinh,
        "acosh" => f64::acosh,
        "atanh" => f64::atanh,
        "deg" => |v| v * 180.0 / std::f64::consts::PI,
        "rad" => |v| v * std::f64::consts::PI / 180.0,
        _ => return None,
    })
}

fn sgn(v: f64) -> f64 {
    if v < 0.0 {
        -1.0
    } else if v > 0.0 {
        1.0
    } else {
        v
    }
}

/// Prometheus `funcClamp`: `None` drops the sample (when `max < min`).
pub(crate) fn clamp(v: f64, min: f64, max: f64) -> Option<f64> {
    if max < min {
        return None;
    }
    Some(go_max(min, go_min(max, v)))
}

pub(crate) fn clamp_min(v: f64, min: f64) -> f64 {
    go_max(min, v)
}

pub(crate) fn clamp_max(v: f64, max: f64) -> f64 {
    go_min(max, v)
}

/// Prometheus `funcRound`: rounds half up to a multiple of `to_nearest`.
pub(crate) fn round(v: f64, to_nearest: f64) -> f64 {
    let inverse = 1.0 / to_nearest;
    (v * inverse + 0.5).floor() / inverse
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamp_and_round() {
        assert_eq!(clamp(5.0, 0.0, 3.0), Some(3.0));
        assert_eq!(clamp(5.0, 3.0, 0.0), None);
        assert!(clamp_min(f64::NAN, 0.0).is_nan());
        assert_eq!(round(2.5, 1.0), 3.0);
        assert_eq!(round(-2.5, 1.0), -2.0);
        assert_eq!(round(12.3, 5.0), 10.0);
        assert_eq!(simple("sgn").map(|f| f(-3.0)), Some(-1.0));
    }
}
