//! Whether a sample may enter a series: a pure function of the sample and
//! the series' newest sample, after Prometheus's `memSeries.appendable`
//! (`tsdb/head_append.go`). The same [`AppendError`] feeds the discard
//! counters ([`AppendError::reason`]) and the 400 message (its `Display`).

use crate::limits::{DiscardReason, Limits};

/// How an admissible sample enters its series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Newer than every sample of the series: appended to the head chunk.
    InOrder,
    /// Older than the newest sample but inside the out-of-order window: goes
    /// to the series' out-of-order buffer, unless a sample already sits at
    /// that timestamp (see [`appendable`]).
    OutOfOrder,
    /// The same timestamp and bit-for-bit the same value as a stored sample:
    /// accepted and dropped, as Prometheus does (a retried push).
    Duplicate,
}

/// Why a sample was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// Older than the series' newest sample, and out-of-order ingestion is
    /// off for the tenant.
    #[error(
        "sample at {t} is older than the series' newest sample at {max_t} \
         (out-of-order samples are off: set limits.out_of_order_time_window to accept them)"
    )]
    OutOfOrder { t: i64, max_t: i64 },
    /// Older than the series' newest sample by more than the out-of-order
    /// window (Prometheus's "out of bounds").
    #[error(
        "sample at {t} is older than the out-of-order window allows: the oldest timestamp \
         accepted for this series is {min_valid_t} (limits.out_of_order_time_window)"
    )]
    TooOldForOooWindow { t: i64, min_valid_t: i64 },
    /// A sample at that timestamp is stored with a different value.
    #[error("a sample at {t} is already stored with a different value")]
    DuplicateTimestampDifferentValue { t: i64 },
    /// A native histogram that is not valid (the distributor refuses
    /// these with the reason; this guards the head against the WAL).
    #[error("the native histogram at {t} is not valid")]
    InvalidHistogram { t: i64 },
}

impl AppendError {
    /// The reason label of `strata_discarded_samples_total`.
    pub fn reason(&self) -> DiscardReason {
        match self {
            AppendError::OutOfOrder { .. } => DiscardReason::OutOfOrder,
            AppendError::TooOldForOooWindow { .. } => DiscardReason::OutOfBounds,
            AppendError::DuplicateTimestampDifferentValue { .. } => DiscardReason::DuplicateSample,
            AppendError::InvalidHistogram { .. } => DiscardReason::InvalidSample,
        }
    }
}

/// Decides how the sample `(t, v)` enters a series whose newest sample is at
/// `series_max_t` with value `last_value_at_max_t` (`None` for a series
/// without samples).
///
/// * `t > series_max_t`, or no samples yet: [`Admission::InOrder`].
/// * `t == series_max_t`: [`Admission::Duplicate`] if `v` has the same bits
///   as the stored value (so staleness markers and NaN payloads compare
///   exactly), else [`AppendError::DuplicateTimestampDifferentValue`].
/// * `t < series_max_t` with `ooo_window_ms == 0`: [`AppendError::OutOfOrder`].
/// * `series_max_t - ooo_window_ms <= t < series_max_t`:
///   [`Admission::OutOfOrder`].
/// * older still: [`AppendError::TooOldForOooWindow`].
///
/// Only the newest sample is known here, so an out-of-order verdict is
/// provisional: the series then looks for a stored sample at `t` and turns
/// the verdict into `Duplicate` or `DuplicateTimestampDifferentValue` when
/// it finds one.
pub fn appendable(
    t: i64,
    v: f64,
    series_max_t: Option<i64>,
    last_value_at_max_t: Option<f64>,
    ooo_window_ms: i64,
) -> Result<Admission, AppendError> {
    let Some(max_t) = series_max_t else {
        return Ok(Admission::InOrder);
    };
    if t > max_t {
        return Ok(Admission::InOrder);
    }
    if t == max_t {
        return match last_value_at_max_t {
            Some(last) if last.to_bits() != v.to_bits() => {
                Err(AppendError::DuplicateTimestampDifferentValue { t })
            }
            _ => Ok(Admission::Duplicate),
        };
    }
    if ooo_window_ms <= 0 {
        return Err(AppendError::OutOfOrder { t, max_t });
    }
    let min_valid_t = max_t.saturating_sub(ooo_window_ms);
    if t < min_valid_t {
        return Err(AppendError::TooOldForOooWindow { t, min_valid_t });
    }
    Ok(Admission::OutOfOrder)
}

/// The tenant's out-of-order window in milliseconds, as [`appendable`]
/// takes it.
pub fn ooo_window_ms(limits: &Limits) -> i64 {
    i64::try_from(limits.out_of_order_time_window.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::STALE_NAN_BITS;

    #[test]
    fn admission_table() {
        let stale = f64::from_bits(STALE_NAN_BITS);
        type Case = (
            &'static str,
            i64,
            f64,
            Option<i64>,
            Option<f64>,
            i64,
            Result<Admission, AppendError>,
        );
        let cases: &[Case] = &[
            (
                "first sample",
                5,
                1.0,
                None,
                None,
                0,
                Ok(Admission::InOrder),
            ),
            (
                "newer",
                11,
                1.0,
                Some(10),
                Some(1.0),
                0,
                Ok(Admission::InOrder),
            ),
            (
                "same t same value",
                10,
                1.0,
                Some(10),
                Some(1.0),
                0,
                Ok(Admission::Duplicate),
            ),
            (
                "same t stale marker twice",
                10,
                stale,
                Some(10),
                Some(stale),
                0,
                Ok(Admission::Duplicate),
            ),
            (
                "same t different value",
                10,
                2.0,
                Some(10),
                Some(1.0),
                0,
                Err(AppendError::DuplicateTimestampDifferentValue { t: 10 }),
            ),
            (
                "0.0 and -0.0 differ bitwise",
                10,
                -0.0,
                Some(10),
                Some(0.0),
                0,
                Err(AppendError::DuplicateTimestampDifferentValue { t: 10 }),
            ),
            (
                "older, no window",
                9,
                1.0,
                Some(10),
                Some(1.0),
                0,
                Err(AppendError::OutOfOrder { t: 9, max_t: 10 }),
            ),
            (
                "older, inside window",
                5,
                1.0,
                Some(10),
                Some(1.0),
                5,
                Ok(Admission::OutOfOrder),
            ),
            (
                "inside window, newest edge",
                9,
                1.0,
                Some(10),
                Some(1.0),
                5,
                Ok(Admission::OutOfOrder),
            ),
            (
                "older, outside window",
                4,
                1.0,
                Some(10),
                Some(1.0),
                5,
                Err(AppendError::TooOldForOooWindow {
                    t: 4,
                    min_valid_t: 5,
                }),
            ),
            (
                "window does not overflow",
                i64::MIN,
                1.0,
                Some(i64::MIN + 1),
                Some(1.0),
                i64::MAX,
                Ok(Admission::OutOfOrder),
            ),
        ];
        for (name, t, v, max_t, last, window, want) in cases {
            assert_eq!(appendable(*t, *v, *max_t, *last, *window), *want, "{name}");
        }
    }

    #[test]
    fn errors_map_to_discard_reasons_and_name_the_limit() {
        let ooo = AppendError::OutOfOrder { t: 1, max_t: 2 };
        assert_eq!(ooo.reason(), DiscardReason::OutOfOrder);
        assert!(ooo.to_string().contains("limits.out_of_order_time_window"));
        let old = AppendError::TooOldForOooWindow {
            t: 1,
            min_valid_t: 2,
        };
        assert_eq!(old.reason(), DiscardReason::OutOfBounds);
        assert!(old.to_string().contains("limits.out_of_order_time_window"));
        let dup = AppendError::DuplicateTimestampDifferentValue { t: 1 };
        assert_eq!(dup.reason(), DiscardReason::DuplicateSample);
    }

    #[test]
    fn window_from_limits() {
        let limits = Limits {
            out_of_order_time_window: std::time::Duration::from_secs(600),
            ..Limits::default()
        };
        assert_eq!(ooo_window_ms(&limits), 600_000);
        assert_eq!(ooo_window_ms(&Limits::default()), 0);
    }
}
