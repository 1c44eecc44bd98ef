//! The distributor: stateless. It decodes remote-write requests, validates
//! them against the tenant's limits, de-duplicates HA pairs, rate-limits,
//! then hashes every series (tenant + labels) onto the ingester ring and
//! pushes it to its replication set in parallel, succeeding once a quorum of
//! each series' replicas acknowledged (see [`crate::ring::batch`]).
//!
//! It keeps no state but the ring view, the rate limiters and the HA cache.

pub mod decode;
pub mod ha;
pub mod histogram;
pub mod validate;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::{Deserialize, Serialize};

use crate::ingester::client::{ClientPool, PushRequest, RejectReason};
use crate::limits::{DiscardReason, DiscardedSamples, Overrides, TokenBucket};
use crate::metrics::Metrics;
use crate::model::{fingerprint_pairs, shard_token};
use crate::proto::prometheus::{MetricMetadata, TimeSeries};
use crate::ring::client::RingClient;
use crate::ring::desc::now_ms;
use crate::ring::read::{Operation, ReplicationSet, RingError};
use crate::ring::token::fnv1_32;
use crate::ring::{RingConfig, batch};
use crate::tenant::TenantId;

pub use decode::{DecodeError, Protocol, WriteBatch};
use ha::{HaDecision, HaTracker, HaTrackerConfig};
use validate::{Refusal, validate_labels, validate_samples};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistributorConfig {
    /// Largest remote-write request accepted, in bytes after decompression.
    pub max_recv_msg_size: usize,
    /// How long a push to the ingesters may take before it counts as failed.
    #[serde(with = "humantime_serde")]
    pub remote_timeout: Duration,
    /// At most this many refusals are listed in a 400 answer.
    pub max_errors_in_response: usize,
    pub ha_tracker: HaTrackerConfig,
}

impl Default for DistributorConfig {
    fn default() -> Self {
        DistributorConfig {
            max_recv_msg_size: 10 << 20,
            remote_timeout: Duration::from_secs(5),
            max_errors_in_response: 10,
            ha_tracker: HaTrackerConfig::default(),
        }
    }
}

/// What became of a push that was not refused as a whole.
#[derive(Debug, Default)]
pub struct PushOutcome {
    pub samples_written: u64,
    pub histograms_written: u64,
    pub exemplars_written: u64,
    /// Series or samples refused; the rest was stored.
    pub refusals: Vec<Refusal>,
    /// The request came from a non-elected HA replica and was dropped.
    pub dropped_by_ha: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(
        "ingestion rate limit ({rate} samples/s, burst {burst}) exceeded for tenant {tenant} while pushing {samples} samples; raise limits.ingestion_rate"
    )]
    RateLimited {
        tenant: String,
        rate: f64,
        burst: u64,
        samples: u64,
        retry_after: Duration,
    },
    #[error(
        "request of {samples} samples is larger than the ingestion burst size {burst} of tenant {tenant}; send smaller requests or raise limits.ingestion_burst_size"
    )]
    LargerThanBurst {
        tenant: String,
        samples: u64,
        burst: u64,
    },
    #[error("no ingesters to write to: {0}")]
    Ring(#[from] RingError),
    #[error("writing to ingesters failed (no quorum): {0}")]
    Ingesters(String),
    #[error("HA tracker: {0}")]
    HaTracker(#[from] crate::ring::kv::KvError),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct TenantLabel {
    tenant: String,
}

struct DistributorMetrics {
    received_samples: Family<TenantLabel, Counter>,
    received_requests: Family<TenantLabel, Counter>,
    ingester_push_failures: Counter,
}

pub struct Distributor {
    config: DistributorConfig,
    replication_factor: usize,
    zone_aware: bool,
    ring: Arc<RingClient>,
    overrides: Arc<Overrides>,
    clients: Arc<ClientPool>,
    discarded: DiscardedSamples,
    limiters: Mutex<HashMap<String, TokenBucket>>,
    ha: Option<HaTracker>,
    metrics: DistributorMetrics,
}

impl Distributor {
    pub fn new(
        config: DistributorConfig,
        ring_config: &RingConfig,
        ring: Arc<RingClient>,
        overrides: Arc<Overrides>,
        clients: Arc<ClientPool>,
        discarded: DiscardedSamples,
        metrics: &Metrics,
    ) -> Distributor {
        let ha = config
            .ha_tracker
            .enabled
            .then(|| HaTracker::new(ring.kv().clone(), config.ha_tracker.clone()));
        let own = DistributorMetrics {
            received_samples: Family::default(),
            received_requests: Family::default(),
            ingester_push_failures: Counter::default(),
        };
        metrics.with_registry(|registry| {
            registry.register(
                "strata_distributor_received_samples",
                "Samples received (before validation), per tenant.",
                own.received_samples.clone(),
            );
            registry.register(
                "strata_distributor_received_requests",
                "Remote-write requests received, per tenant.",
                own.received_requests.clone(),
            );
            registry.register(
                "strata_distributor_ingester_push_failures",
                "Pushes to a single ingester that failed.",
                own.ingester_push_failures.clone(),
            );
        });
        Distributor {
            config,
            replication_factor: ring_config.replication_factor,
            zone_aware: ring_config.zone_awareness_enabled,
            ring,
            overrides,
            clients,
            discarded,
            limiters: Mutex::new(HashMap::new()),
            ha,
            metrics: own,
        }
    }

    pub fn config(&self) -> &DistributorConfig {
        &self.config
    }

    pub fn discarded(&self) -> &DiscardedSamples {
        &self.discarded
    }

    /// Counts a request refused before it was decoded (bad body).
    pub fn count_undecodable(&self, tenant: &TenantId) {
        self.metrics
            .received_requests
            .get_or_create(&TenantLabel {
                tenant: tenant.to_string(),
            })
            .inc();
        self.discarded
            .add(tenant.as_str(), DiscardReason::InvalidSample, 1);
    }

    /// Validates, shards and replicates one decoded request.
    pub async fn push(
        &self,
        tenant: &TenantId,
        batch: WriteBatch,
    ) -> Result<PushOutcome, PushError> {
        let limits = self.overrides.get(tenant.as_str());
        let tenant_label = TenantLabel {
            tenant: tenant.to_string(),
        };
        let received: u64 = batch
            .timeseries
            .iter()
            .map(|s| (s.samples.len() + s.histograms.len()) as u64)
            .sum();
        self.metrics
            .received_requests
            .get_or_create(&tenant_label)
            .inc();
        self.metrics
            .received_samples
            .get_or_create(&tenant_label)
            .inc_by(received);
        let WriteBatch {
            mut timeseries,
            metadata,
            ..
        } = batch;

        // HA pairs: decided on the first series, as Cortex does.
        if let (Some(ha), true) = (&self.ha, limits.accept_ha_samples) {
            let pair = timeseries.first().and_then(|first| {
                let get = |name: &str| {
                    first
                        .labels
                        .iter()
                        .find(|l| l.name == name)
                        .map(|l| l.value.clone())
                };
                Some((
                    get(&limits.ha_cluster_label)?,
                    get(&limits.ha_replica_label)?,
                ))
            });
            if let Some((cluster, replica)) = pair {
                if ha
                    .check(tenant.as_str(), &cluster, &replica, now_ms())
                    .await?
                    == HaDecision::Drop
                {
                    self.discarded
                        .add(tenant.as_str(), DiscardReason::HaReplicaDropped, received);
                    return Ok(PushOutcome {
                        dropped_by_ha: true,
                        ..PushOutcome::default()
                    });
                }
                for series in &mut timeseries {
                    series.labels.retain(|l| l.name != limits.ha_replica_label);
                }
            }
        }

        // Validation: refuse bad series and samples, keep the rest.
        let now = now_ms();
        let mut refusals = Vec::new();
        let mut valid: Vec<TimeSeries> = Vec::with_capacity(timeseries.len());
        for mut series in timeseries {
            if let Err(refusal) = validate_labels(&mut series, &limits) {
                refusals.push(refusal);
                continue;
            }
            if series.samples.is_empty()
                && series.histograms.is_empty()
                && !series.exemplars.is_empty()
            {
                // Remote write 2.0: "at least one element in samples or in
                // histograms MUST be provided"; an exemplar needs a sample.
                refusals.push(Refusal {
                    reason: DiscardReason::ExemplarWithoutSamples,
                    samples: 0,
                    message: format!(
                        "series {}: {} exemplar(s) without a sample or histogram; a series must carry at least one",
                        validate::describe(&series.labels),
                        series.exemplars.len()
                    ),
                });
                continue;
            }
            refusals.extend(validate_samples(&mut series, &limits, now));
            refusals.extend(histogram::validate_histograms(&mut series, &limits));
            if !series.samples.is_empty() || !series.histograms.is_empty() {
                valid.push(series);
            }
        }
        let mut metadata: Vec<MetricMetadata> = metadata
            .into_iter()
            .filter(|m| !m.metric_family_name.is_empty())
            .collect();
        metadata.dedup();

        // Rate limit on what would be stored; a histogram counts as a sample.
        let floats: u64 = valid.iter().map(|s| s.samples.len() as u64).sum();
        let histograms: u64 = valid.iter().map(|s| s.histograms.len() as u64).sum();
        let exemplars: u64 = valid.iter().map(|s| s.exemplars.len() as u64).sum();
        let samples = floats + histograms;
        if samples > 0 {
            let mut limiters = self.limiters.lock();
            let bucket = limiters.entry(tenant.to_string()).or_insert_with(|| {
                TokenBucket::new(
                    limits.ingestion_rate,
                    limits.ingestion_burst_size,
                    Instant::now(),
                )
            });
            bucket.set_limits(limits.ingestion_rate, limits.ingestion_burst_size);
            match bucket.try_take(samples, Instant::now()) {
                Ok(()) => {}
                Err(wait) => {
                    drop(limiters);
                    self.discarded
                        .add(tenant.as_str(), DiscardReason::RateLimited, samples);
                    return Err(match wait {
                        Some(retry_after) => PushError::RateLimited {
                            tenant: tenant.to_string(),
                            rate: limits.ingestion_rate,
                            burst: limits.ingestion_burst_size,
                            samples,
                            retry_after,
                        },
                        None => PushError::LargerThanBurst {
                            tenant: tenant.to_string(),
                            samples,
                            burst: limits.ingestion_burst_size,
                        },
                    });
                }
            }
        }

        // Our own refusals are counted here; the ingesters count theirs.
        for refusal in &refusals {
            self.discarded
                .add(tenant.as_str(), refusal.reason, refusal.samples as u64);
        }
        let mut refused_by_ingesters = Rejections::default();
        if !valid.is_empty() || !metadata.is_empty() {
            let (ingester_refusals, rejected) = self.replicate(tenant, &valid, &metadata).await?;
            refused_by_ingesters = rejected;
            for (index, reason, count, message) in ingester_refusals {
                let samples = match reason {
                    DiscardReason::ExemplarOutOfOrder | DiscardReason::InvalidExemplar => 0,
                    _ => count.min(valid[index].samples.len() + valid[index].histograms.len()),
                };
                refusals.push(Refusal {
                    reason,
                    samples,
                    message,
                });
            }
        }
        Ok(PushOutcome {
            samples_written: floats.saturating_sub(refused_by_ingesters.floats),
            histograms_written: histograms.saturating_sub(refused_by_ingesters.histograms),
            exemplars_written: exemplars.saturating_sub(refused_by_ingesters.exemplars),
            refusals,
            dropped_by_ha: false,
        })
    }

    /// Pushes `series` and `metadata` to their replication sets; returns the
    /// ingesters' per-series refusals as (series index, reason, samples,
    /// message) and the most float and histogram samples any one ingester
    /// refused.
    #[allow(clippy::type_complexity)]
    async fn replicate(
        &self,
        tenant: &TenantId,
        series: &[TimeSeries],
        metadata: &[MetricMetadata],
    ) -> Result<(Vec<(usize, DiscardReason, usize, String)>, Rejections), PushError> {
        let view = self.ring.view();
        let now = now_ms();
        let rf = self.replication_factor;
        let mut set = ReplicationSet::with_capacity(rf);
        let mut sets: Vec<Vec<usize>> = Vec::with_capacity(series.len() + metadata.len());
        for s in series {
            let fp = fingerprint_pairs(
                tenant.as_str(),
                s.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())),
            );
            view.replication_set(
                shard_token(fp),
                Operation::Write,
                rf,
                self.zone_aware,
                now,
                &mut set,
            )?;
            sets.push(set.instances().iter().map(|i| *i as usize).collect());
        }
        for m in metadata {
            let key = fnv1_32(format!("{tenant}\u{0}{}", m.metric_family_name).as_bytes());
            view.replication_set(key, Operation::Write, rf, self.zone_aware, now, &mut set)?;
            sets.push(set.instances().iter().map(|i| *i as usize).collect());
        }
        let refusals: Arc<Mutex<HashMap<(usize, i32), (usize, String)>>> =
            Arc::new(Mutex::new(HashMap::new()));
        let most_rejected = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let most_rejected_histograms = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let most_rejected_exemplars = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let n_series = series.len();
        let timeout = self.config.remote_timeout;
        let result = batch::send(&sets, rf, |instance, items| {
            let addr = view.instance(instance).addr.clone();
            let client = self.clients.get(&addr);
            let mut request = PushRequest {
                tenant: tenant.to_string(),
                timeseries: Vec::new(),
                metadata: Vec::new(),
            };
            let mut index_map = Vec::new();
            for item in items {
                if item < n_series {
                    index_map.push(item);
                    request.timeseries.push(series[item].clone());
                } else {
                    request.metadata.push(metadata[item - n_series].clone());
                }
            }
            let refusals = refusals.clone();
            let most_rejected = most_rejected.clone();
            let most_rejected_histograms = most_rejected_histograms.clone();
            let most_rejected_exemplars = most_rejected_exemplars.clone();
            let failures = self.metrics.ingester_push_failures.clone();
            async move {
                let mut client = client.map_err(|e| e.to_string())?;
                let call = client.push(request);
                let response = match tokio::time::timeout(timeout, call).await {
                    Ok(Ok(response)) => response,
                    Ok(Err(status)) => {
                        failures.inc();
                        return Err(format!("ingester {addr}: {}", status.message()));
                    }
                    Err(_) => {
                        failures.inc();
                        return Err(format!("ingester {addr}: no answer within {timeout:?}"));
                    }
                };
                most_rejected.fetch_max(
                    response
                        .samples_rejected
                        .saturating_sub(response.histograms_rejected),
                    std::sync::atomic::Ordering::Relaxed,
                );
                most_rejected_histograms.fetch_max(
                    response.histograms_rejected,
                    std::sync::atomic::Ordering::Relaxed,
                );
                most_rejected_exemplars.fetch_max(
                    response.exemplars_rejected,
                    std::sync::atomic::Ordering::Relaxed,
                );
                let mut refusals = refusals.lock();
                for rejected in response.rejected {
                    let Some(original) = index_map.get(rejected.series_index as usize) else {
                        continue;
                    };
                    let entry = refusals
                        .entry((*original, rejected.reason))
                        .or_insert((0, rejected.message.clone()));
                    entry.0 = entry.0.max(rejected.samples as usize);
                }
                Ok(())
            }
        })
        .await;
        result.map_err(PushError::Ingesters)?;
        let collected = std::mem::take(&mut *refusals.lock());
        let mut out: Vec<_> = collected
            .into_iter()
            .map(|((index, reason), (samples, message))| {
                (index, reject_reason(reason), samples, message)
            })
            .collect();
        out.sort_by_key(|(index, _, _, _)| *index);
        Ok((
            out,
            Rejections {
                floats: most_rejected.load(std::sync::atomic::Ordering::Relaxed),
                histograms: most_rejected_histograms.load(std::sync::atomic::Ordering::Relaxed),
                exemplars: most_rejected_exemplars.load(std::sync::atomic::Ordering::Relaxed),
            },
        ))
    }
}

/// Samples the ingesters refused (the most any one replica refused).
#[derive(Debug, Default, Clone, Copy)]
struct Rejections {
    floats: u64,
    histograms: u64,
    exemplars: u64,
}

fn reject_reason(code: i32) -> DiscardReason {
    match RejectReason::try_from(code).unwrap_or(RejectReason::Unspecified) {
        RejectReason::OutOfOrder => DiscardReason::OutOfOrder,
        RejectReason::OutOfBounds => DiscardReason::OutOfBounds,
        RejectReason::DuplicateSample => DiscardReason::DuplicateSample,
        RejectReason::PerTenantSeriesLimit => DiscardReason::PerTenantSeriesLimit,
        RejectReason::PerMetricSeriesLimit => DiscardReason::PerMetricSeriesLimit,
        RejectReason::ExemplarOutOfOrder => DiscardReason::ExemplarOutOfOrder,
        RejectReason::ExemplarInvalid => DiscardReason::InvalidExemplar,
        RejectReason::Unspecified => DiscardReason::InvalidSample,
    }
}
