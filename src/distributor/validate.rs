//! Validation of one series against its tenant's limits, as Cortex's
//! `validation` package does: labels first (a bad label set refuses the whole
//! series), then each sample's timestamp (a bad sample refuses only itself).
//! Every refusal carries its [`DiscardReason`] and a message that names the
//! series, the rule and the config key that changes it.

use std::sync::LazyLock;

use regex::Regex;

use crate::limits::{DiscardReason, Limits, NameValidation};
use crate::model::{METRIC_NAME, describe_pairs};
use crate::proto::prometheus::{Label, TimeSeries};

static LEGACY_LABEL_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new("^[a-zA-Z_][a-zA-Z0-9_]*$").expect("invariant: the legacy label regex compiles")
});
static LEGACY_METRIC_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new("^[a-zA-Z_:][a-zA-Z0-9_:]*$").expect("invariant: the legacy metric regex compiles")
});

/// One refusal: why, how many samples it cost, and what to tell the sender.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub reason: DiscardReason,
    pub samples: usize,
    pub message: String,
}

/// `metric{a="b", ...}` for messages, from proto labels.
pub fn describe(labels: &[Label]) -> String {
    describe_pairs(labels.iter().map(|l| (l.name.as_str(), l.value.as_str())))
}

/// Checks and normalises a series' labels in place: drops labels with an
/// empty value and sorts them by name (as Prometheus 3 does: the specs ask
/// senders to sort, the compliance suite's senders do not), then enforces
/// names, uniqueness and limits.
pub fn validate_labels(series: &mut TimeSeries, limits: &Limits) -> Result<(), Refusal> {
    series.labels.retain(|l| !l.value.is_empty());
    if !series.labels.is_sorted_by(|a, b| a.name <= b.name) {
        series.labels.sort_by(|a, b| a.name.cmp(&b.name));
    }
    let samples = series.samples.len() + series.histograms.len();
    let refuse = |reason: DiscardReason, message: String| Refusal {
        reason,
        samples,
        message,
    };
    let labels = &series.labels;
    let Some(name) = labels.iter().find(|l| l.name == METRIC_NAME) else {
        return Err(refuse(
            DiscardReason::MissingMetricName,
            format!(
                "series {} has no metric name (__name__ label)",
                describe(labels)
            ),
        ));
    };
    if limits.name_validation == NameValidation::Legacy && !LEGACY_METRIC_NAME.is_match(&name.value)
    {
        return Err(refuse(
            DiscardReason::InvalidMetricName,
            format!(
                "series {}: metric name {:?} is not valid (limits.name_validation is legacy)",
                describe(labels),
                name.value
            ),
        ));
    }
    if limits.max_label_names_per_series > 0 && labels.len() > limits.max_label_names_per_series {
        return Err(refuse(
            DiscardReason::MaxLabelNamesPerSeries,
            format!(
                "series {} has {} label names, the limit is {} ({})",
                describe(labels),
                labels.len(),
                limits.max_label_names_per_series,
                Limits::config_key("max_label_names_per_series")
            ),
        ));
    }
    for (i, label) in labels.iter().enumerate() {
        let valid_name = match limits.name_validation {
            NameValidation::Utf8 => !label.name.is_empty(),
            NameValidation::Legacy => LEGACY_LABEL_NAME.is_match(&label.name),
        };
        if !valid_name {
            return Err(refuse(
                DiscardReason::InvalidLabel,
                format!(
                    "series {}: label name {:?} is not valid",
                    describe(labels),
                    label.name
                ),
            ));
        }
        if i > 0 {
            let previous = &labels[i - 1].name;
            if *previous == label.name {
                return Err(refuse(
                    DiscardReason::DuplicateLabelNames,
                    format!(
                        "series {}: label name {:?} appears more than once",
                        describe(labels),
                        label.name
                    ),
                ));
            }
        }
        if limits.max_label_name_length > 0 && label.name.len() > limits.max_label_name_length {
            return Err(refuse(
                DiscardReason::LabelNameTooLong,
                format!(
                    "series {}: label name {:?} is {} bytes long, the limit is {} ({})",
                    describe(labels),
                    label.name,
                    label.name.len(),
                    limits.max_label_name_length,
                    Limits::config_key("max_label_name_length")
                ),
            ));
        }
        if limits.max_label_value_length > 0 && label.value.len() > limits.max_label_value_length {
            return Err(refuse(
                DiscardReason::LabelValueTooLong,
                format!(
                    "series {}: the value of label {:?} is {} bytes long, the limit is {} ({})",
                    describe(labels),
                    label.name,
                    label.value.len(),
                    limits.max_label_value_length,
                    Limits::config_key("max_label_value_length")
                ),
            ));
        }
    }
    Ok(())
}

/// Drops samples outside `[now - max_age, now + grace]`; returns the
/// refusals (at most one per reason, with the first offending timestamp).
pub fn validate_samples(series: &mut TimeSeries, limits: &Limits, now_ms: i64) -> Vec<Refusal> {
    let oldest = if limits.reject_old_samples {
        now_ms.saturating_sub(limits.reject_old_samples_max_age.as_millis() as i64)
    } else {
        i64::MIN
    };
    let newest = now_ms.saturating_add(limits.creation_grace_period.as_millis() as i64);
    let mut too_old = (0usize, 0i64);
    let mut too_new = (0usize, 0i64);
    let mut check = |t: i64| -> bool {
        if t < oldest {
            if too_old.0 == 0 {
                too_old.1 = t;
            }
            too_old.0 += 1;
            false
        } else if t > newest {
            if too_new.0 == 0 {
                too_new.1 = t;
            }
            too_new.0 += 1;
            false
        } else {
            true
        }
    };
    series.samples.retain(|s| check(s.timestamp));
    series.histograms.retain(|h| check(h.timestamp));
    let mut refusals = Vec::new();
    if too_old.0 > 0 {
        refusals.push(Refusal {
            reason: DiscardReason::TooOld,
            samples: too_old.0,
            message: format!(
                "series {}: {} sample(s) too old, the first at timestamp {} ms; samples older than {} are refused ({})",
                describe(&series.labels),
                too_old.0,
                too_old.1,
                humantime::format_duration(limits.reject_old_samples_max_age),
                Limits::config_key("reject_old_samples_max_age")
            ),
        });
    }
    if too_new.0 > 0 {
        refusals.push(Refusal {
            reason: DiscardReason::TooFarInFuture,
            samples: too_new.0,
            message: format!(
                "series {}: {} sample(s) too far in the future, the first at timestamp {} ms; at most {} ahead is accepted ({})",
                describe(&series.labels),
                too_new.0,
                too_new.1,
                humantime::format_duration(limits.creation_grace_period),
                Limits::config_key("creation_grace_period")
            ),
        });
    }
    refusals
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::prometheus::Sample;

    fn series(labels: &[(&str, &str)], ts: &[i64]) -> TimeSeries {
        TimeSeries {
            labels: labels
                .iter()
                .map(|(n, v)| Label {
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            samples: ts
                .iter()
                .map(|t| Sample {
                    value: 1.0,
                    timestamp: *t,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn reason(labels: &[(&str, &str)], limits: &Limits) -> Option<DiscardReason> {
        validate_labels(&mut series(labels, &[1]), limits)
            .err()
            .map(|r| r.reason)
    }

    #[test]
    fn label_rules() {
        let limits = Limits::default();
        assert_eq!(reason(&[("__name__", "up"), ("job", "a")], &limits), None);
        assert_eq!(
            reason(&[("job", "a")], &limits),
            Some(DiscardReason::MissingMetricName)
        );
        let mut unsorted = series(&[("__name__", "up"), ("b", "1"), ("a", "2")], &[1]);
        assert!(validate_labels(&mut unsorted, &limits).is_ok());
        let names: Vec<&str> = unsorted.labels.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["__name__", "a", "b"], "sorted in place");
        assert_eq!(
            reason(
                &[("__name__", "up"), ("b", "1"), ("a", "2"), ("b", "3")],
                &limits
            ),
            Some(DiscardReason::DuplicateLabelNames)
        );
        assert_eq!(
            reason(&[("__name__", "up"), ("a", "1"), ("a", "2")], &limits),
            Some(DiscardReason::DuplicateLabelNames)
        );
        assert_eq!(
            reason(&[("", "x"), ("__name__", "up")], &limits),
            Some(DiscardReason::InvalidLabel)
        );
        let legacy = Limits {
            name_validation: NameValidation::Legacy,
            ..Limits::default()
        };
        assert_eq!(
            reason(&[("__name__", "up"), ("a-b", "1")], &legacy),
            Some(DiscardReason::InvalidLabel)
        );
        assert_eq!(
            reason(&[("__name__", "up"), ("a-b", "1")], &limits),
            None,
            "utf8 names"
        );
        assert_eq!(
            reason(&[("__name__", "1up")], &legacy),
            Some(DiscardReason::InvalidMetricName)
        );
        let small = Limits {
            max_label_names_per_series: 2,
            max_label_name_length: 8,
            max_label_value_length: 3,
            ..Limits::default()
        };
        assert_eq!(
            reason(&[("__name__", "up"), ("a", "1"), ("b", "2")], &small),
            Some(DiscardReason::MaxLabelNamesPerSeries)
        );
        assert_eq!(
            reason(&[("__name__", "up"), ("longername", "1")], &small),
            Some(DiscardReason::LabelNameTooLong)
        );
        assert_eq!(
            reason(&[("__name__", "up"), ("a", "1234")], &small),
            Some(DiscardReason::LabelValueTooLong)
        );
    }

    #[test]
    fn empty_values_are_dropped_not_refused() {
        let mut s = series(&[("__name__", "up"), ("empty", ""), ("job", "a")], &[1]);
        validate_labels(&mut s, &Limits::default()).expect("valid");
        let names: Vec<_> = s.labels.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, vec!["__name__", "job"]);
    }

    #[test]
    fn message_names_series_and_config_key() {
        let small = Limits {
            max_label_names_per_series: 1,
            ..Limits::default()
        };
        let refusal = validate_labels(
            &mut series(&[("__name__", "up"), ("job", "a")], &[1, 2]),
            &small,
        )
        .expect_err("too many");
        assert_eq!(refusal.samples, 2);
        assert_eq!(
            refusal.message,
            "series up{job=\"a\"} has 2 label names, the limit is 1 (limits.max_label_names_per_series)"
        );
    }

    #[test]
    fn sample_age_window() {
        let limits = Limits::default();
        let now = 1_000_000_000_000;
        let day = 86_400_000;
        let mut s = series(
            &[("__name__", "up")],
            &[now - 15 * day, now - day, now, now + 3_600_000],
        );
        let refusals = validate_samples(&mut s, &limits, now);
        assert_eq!(s.samples.len(), 2, "the two good samples stay");
        let reasons: Vec<_> = refusals.iter().map(|r| r.reason).collect();
        assert_eq!(
            reasons,
            vec![DiscardReason::TooOld, DiscardReason::TooFarInFuture]
        );
        assert!(
            refusals[0]
                .message
                .contains("limits.reject_old_samples_max_age")
        );
        let lenient = Limits {
            reject_old_samples: false,
            ..Limits::default()
        };
        let mut s = series(&[("__name__", "up")], &[0]);
        assert!(validate_samples(&mut s, &lenient, now).is_empty());
    }
}
