//! Compensated (Kahan-Neumaier) summation and means of float histograms,
//! as Prometheus 3.x sums and averages histograms in `sum`, `avg`,
//! `sum_over_time` and `avg_over_time`: every count, the sum and every
//! bucket carry their own compensation, so that large values cancelling out
//! do not swallow small ones.

use super::float_histogram::{HistogramArithError, Reconciled};
use super::histogram::FloatHistogram;

/// Kahan-Neumaier compensated summation step (Prometheus `kahanSumInc`):
/// returns the new sum and compensation.
pub fn kahan_sum_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// A running compensated sum of histograms: the sum and, bucket for
/// bucket, its compensation.
#[derive(Clone, Debug)]
pub struct HistogramSum {
    sum: FloatHistogram,
    comp: FloatHistogram,
}

impl HistogramSum {
    pub fn new(first: &FloatHistogram) -> HistogramSum {
        let mut comp = first.clone();
        comp.mul(0.0);
        HistogramSum {
            sum: first.clone(),
            comp,
        }
    }

    /// Adds `h`: both histograms at the lower schema and the wider zero
    /// bucket, custom bounds reconciled to the ones both have.
    pub fn add(&mut self, h: &FloatHistogram) -> Result<Reconciled, HistogramArithError> {
        if self.sum.uses_custom_buckets() != h.uses_custom_buckets() {
            return Err(HistogramArithError::MixedExponentialCustom);
        }
        let mut h = h.clone();
        let mut reconciled = Reconciled(false);
        if h.uses_custom_buckets() {
            if h.custom_values != self.sum.custom_values {
                // Adding an empty histogram with the other bounds moves
                // every operand to the bounds both have.
                let (mut empty_self, mut empty_h) = (self.sum.clone(), h.clone());
                empty_self.mul(0.0);
                empty_h.mul(0.0);
                self.sum.add(&empty_h)?;
                self.comp.add(&empty_h)?;
                h.add(&empty_self)?;
                h.custom_values.clone_from(&self.sum.custom_values);
                reconciled = Reconciled(true);
            }
        } else {
            let target = self.sum.schema.min(h.schema);
            self.sum = self.sum.copy_to_schema(target);
            self.comp = self.comp.copy_to_schema(target);
            h = h.copy_to_schema(target);
            widen_zero_buckets(&mut [&mut self.sum, &mut self.comp, &mut h]);
        }
        (self.sum.sum, self.comp.sum) = kahan_sum_inc(h.sum, self.sum.sum, self.comp.sum);
        (self.sum.count, self.comp.count) = kahan_sum_inc(h.count, self.sum.count, self.comp.count);
        (self.sum.zero_count, self.comp.zero_count) =
            kahan_sum_inc(h.zero_count, self.sum.zero_count, self.comp.zero_count);
        let pos = kahan_merge(
            &self.sum.trim_in_zero_bucket(self.sum.positive_pairs()),
            &self.comp.trim_in_zero_bucket(self.comp.positive_pairs()),
            &h.trim_in_zero_bucket(h.positive_pairs()),
        );
        let neg = kahan_merge(
            &self.sum.trim_in_zero_bucket(self.sum.negative_pairs()),
            &self.comp.trim_in_zero_bucket(self.comp.negative_pairs()),
            &h.trim_in_zero_bucket(h.negative_pairs()),
        );
        let (ps, pc): (Vec<_>, Vec<_>) = pos.into_iter().map(|(i, s, c)| ((i, s), (i, c))).unzip();
        let (ns, nc): (Vec<_>, Vec<_>) = neg.into_iter().map(|(i, s, c)| ((i, s), (i, c))).unzip();
        self.sum.set_pairs(&ps, &ns);
        self.comp.set_pairs(&pc, &nc);
        Ok(reconciled)
    }

    /// Multiplies the sum and its compensation by `f`.
    pub fn mul(&mut self, f: f64) {
        self.sum.mul(f);
        self.comp.mul(f);
    }

    /// Divides the sum and its compensation by `f`.
    pub fn div(&mut self, f: f64) {
        self.sum.div(f);
        self.comp.div(f);
    }

    /// Whether any count or the sum has overflowed to an infinity.
    pub fn overflowed(&self) -> bool {
        let h = &self.sum;
        [h.count, h.sum, h.zero_count]
            .iter()
            .chain(&h.positive_buckets)
            .chain(&h.negative_buckets)
            .any(|v| v.is_infinite())
    }

    /// The compensated sum.
    pub fn value(&self) -> FloatHistogram {
        let mut out = self.sum.clone();
        // Same layout, so the addition cannot fail.
        let _ = out.add(&self.comp);
        out
    }
}

/// `sum + inc` bucket by bucket with compensation `comp`; all three sorted
/// by index. Returns `(index, sum, compensation)`.
fn kahan_merge(
    sum: &[(i32, f64)],
    comp: &[(i32, f64)],
    inc: &[(i32, f64)],
) -> Vec<(i32, f64, f64)> {
    let mut idx: Vec<i32> = sum.iter().chain(comp).chain(inc).map(|&(i, _)| i).collect();
    idx.sort_unstable();
    idx.dedup();
    let at = |p: &[(i32, f64)], i: i32| {
        p.binary_search_by_key(&i, |&(j, _)| j)
            .map_or(0.0, |k| p[k].1)
    };
    idx.into_iter()
        .map(|i| {
            let (s, c) = kahan_sum_inc(at(inc, i), at(sum, i), at(comp, i));
            (i, s, c)
        })
        .collect()
}

/// Raises every histogram's zero threshold to the widest, each raised
/// further to a bucket boundary as Prometheus does, until they agree.
fn widen_zero_buckets(hs: &mut [&mut FloatHistogram]) {
    loop {
        let widest = hs.iter().map(|h| h.zero_threshold).fold(0.0, f64::max);
        if hs.iter().all(|h| h.zero_threshold == widest) {
            return;
        }
        for h in hs.iter_mut() {
            let (count, threshold) = h.zero_count_for_larger_threshold(widest);
            h.zero_count = count;
            h.zero_threshold = threshold;
        }
    }
}

/// A running compensated mean of histograms (Prometheus's `avg` and
/// `avg_over_time`): a plain compensated sum divided at the end while the
/// sum stays finite, an incremental mean from the first overflow on.
#[derive(Clone, Debug)]
pub struct HistogramMean {
    acc: HistogramSum,
    count: f64,
    incremental: bool,
}

impl HistogramMean {
    pub fn new(first: &FloatHistogram) -> HistogramMean {
        HistogramMean {
            acc: HistogramSum::new(first),
            count: 1.0,
            incremental: false,
        }
    }

    pub fn add(&mut self, h: &FloatHistogram) -> Result<Reconciled, HistogramArithError> {
        self.count += 1.0;
        if !self.incremental {
            let mut trial = self.acc.clone();
            let reconciled = trial.add(h)?;
            if !trial.overflowed() {
                self.acc = trial;
                return Ok(reconciled);
            }
            self.incremental = true;
            self.acc.div(self.count - 1.0);
        }
        // mean = mean * (n-1)/n + h/n, compensation scaled alike.
        self.acc.mul((self.count - 1.0) / self.count);
        let mut inc = h.clone();
        inc.div(self.count);
        self.acc.add(&inc)
    }

    /// The mean.
    pub fn value(&self) -> FloatHistogram {
        let mut v = self.acc.value();
        if !self.incremental {
            v.div(self.count);
        }
        v
    }
}

/// The compensated sum (or, with `mean`, the mean) of `hs`, and whether
/// mismatched custom bounds were reconciled on the way. `None` for no
/// histograms.
pub fn sum_histograms<'a>(
    mut hs: impl Iterator<Item = &'a FloatHistogram>,
    mean: bool,
) -> Option<Result<(FloatHistogram, bool), HistogramArithError>> {
    let first = hs.next()?;
    let mut reconciled = false;
    if mean {
        let mut m = HistogramMean::new(first);
        for h in hs {
            match m.add(h) {
                Ok(r) => reconciled |= r.0,
                Err(e) => return Some(Err(e)),
            }
        }
        return Some(Ok((m.value(), reconciled)));
    }
    let mut s = HistogramSum::new(first);
    for h in hs {
        match s.add(h) {
            Ok(r) => reconciled |= r.0,
            Err(e) => return Some(Err(e)),
        }
    }
    Some(Ok((s.value(), reconciled)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(count: f64, sum: f64) -> FloatHistogram {
        FloatHistogram {
            count,
            sum,
            ..FloatHistogram::default()
        }
    }

    #[test]
    fn small_values_survive_large_ones_cancelling() {
        let hs = [h(1.0, 1.0), h(2.0, 1e100), h(3.0, 1.0), h(4.0, -1e100)];
        let sum = sum_histograms(hs.iter(), false)
            .expect("input")
            .expect("compatible");
        assert_eq!((sum.0.count, sum.0.sum), (10.0, 2.0));
        let mean = sum_histograms(hs.iter(), true)
            .expect("input")
            .expect("compatible");
        assert_eq!((mean.0.count, mean.0.sum), (2.5, 0.5));
    }

    #[test]
    fn mean_turns_incremental_instead_of_overflowing() {
        let hs = [h(f64::MAX, 4.0), h(f64::MAX, 2.0)];
        let mean = sum_histograms(hs.iter(), true)
            .expect("input")
            .expect("compatible");
        assert_eq!((mean.0.count, mean.0.sum), (f64::MAX, 3.0));
    }

    #[test]
    fn mixed_bucket_kinds_do_not_add() {
        let mut custom = h(1.0, 1.0);
        custom.schema = crate::model::histogram::CUSTOM_BUCKETS_SCHEMA;
        assert!(matches!(
            sum_histograms([h(1.0, 1.0), custom].iter(), false),
            Some(Err(HistogramArithError::MixedExponentialCustom))
        ));
    }
}
