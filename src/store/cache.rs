//! In-process caches of the store, sized in bytes, with hit and miss
//! counters: chunk records (immutable, so cached until evicted) and index
//! query results of buckets old enough that ingesters no longer add rows
//! (as a rule: a flush delayed by a long store outage still adds some, so
//! those entries also expire after a time to live).

use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use quick_cache::Weighter;
use quick_cache::sync::Cache;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub cache: &'static str,
}

/// `strata_store_cache_{hits,misses}_total{cache}`.
#[derive(Clone, Default)]
pub struct CacheMetrics {
    hits: Family<CacheLabels, Counter>,
    misses: Family<CacheLabels, Counter>,
}

impl CacheMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "strata_store_cache_hits",
            "Lookups answered by a store cache.",
            self.hits.clone(),
        );
        registry.register(
            "strata_store_cache_misses",
            "Lookups a store cache could not answer.",
            self.misses.clone(),
        );
    }
}

/// Something that knows its size in bytes.
pub trait Sized {
    fn bytes(&self) -> u64;
}

impl Sized for Vec<u8> {
    fn bytes(&self) -> u64 {
        self.len() as u64 + 24
    }
}

#[derive(Clone)]
struct ByBytes;

impl<K, V: Sized> Weighter<K, (Instant, Arc<V>)> for ByBytes {
    fn weight(&self, _key: &K, val: &(Instant, Arc<V>)) -> u64 {
        val.1.bytes().max(1)
    }
}

/// A cache holding at most about `capacity` bytes of values, each for at
/// most its time to live.
pub struct ByteCache<K, V: Sized> {
    name: &'static str,
    /// Values with the time they were inserted.
    inner: Option<Cache<K, (Instant, Arc<V>), ByBytes>>,
    ttl: Option<Duration>,
    metrics: CacheMetrics,
}

impl<K: Eq + Hash + Clone, V: Sized> ByteCache<K, V> {
    /// A cache of `capacity` bytes; 0 disables it.
    pub fn new(name: &'static str, capacity: u64, metrics: CacheMetrics) -> ByteCache<K, V> {
        let inner = (capacity > 0).then(|| {
            // An estimate of entries, for the cache's internal sizing.
            let items = (capacity / 4096).clamp(16, 1 << 20) as usize;
            Cache::with_weighter(items, capacity, ByBytes)
        });
        ByteCache {
            name,
            inner,
            ttl: None,
            metrics,
        }
    }

    /// Values older than `ttl` are misses (and dropped).
    pub fn with_ttl(mut self, ttl: Duration) -> ByteCache<K, V> {
        self.ttl = Some(ttl);
        self
    }

    pub fn get(&self, key: &K) -> Option<Arc<V>> {
        let inner = self.inner.as_ref()?;
        let labels = CacheLabels { cache: self.name };
        match inner.get(key) {
            Some((at, v)) if self.ttl.is_none_or(|ttl| at.elapsed() <= ttl) => {
                self.metrics.hits.get_or_create(&labels).inc();
                Some(v)
            }
            expired => {
                if expired.is_some() {
                    inner.remove(key);
                }
                self.metrics.misses.get_or_create(&labels).inc();
                None
            }
        }
    }

    pub fn insert(&self, key: K, value: Arc<V>) {
        if let Some(inner) = &self.inner {
            inner.insert(key, (Instant::now(), value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_by_bytes_and_counts() {
        let metrics = CacheMetrics::default();
        let cache: ByteCache<u32, Vec<u8>> = ByteCache::new("chunks", 10_000, metrics.clone());
        for i in 0..100u32 {
            cache.insert(i, Arc::new(vec![0u8; 1000]));
        }
        let held = (0..100u32).filter(|i| cache.get(i).is_some()).count();
        assert!(
            held > 0 && held <= 10,
            "held {held} values of 1 KB in 10 KB"
        );
        let labels = CacheLabels { cache: "chunks" };
        assert_eq!(
            metrics.hits.get_or_create(&labels).get() + metrics.misses.get_or_create(&labels).get(),
            100
        );
        let off: ByteCache<u32, Vec<u8>> = ByteCache::new("off", 0, CacheMetrics::default());
        off.insert(1, Arc::new(vec![1]));
        assert!(off.get(&1).is_none());
    }

    #[test]
    fn values_expire_after_their_time_to_live() {
        let metrics = CacheMetrics::default();
        let cache: ByteCache<u32, Vec<u8>> =
            ByteCache::new("index", 10_000, metrics.clone()).with_ttl(Duration::ZERO);
        cache.insert(1, Arc::new(vec![1]));
        std::thread::sleep(Duration::from_millis(2));
        assert!(cache.get(&1).is_none(), "expired");
        let lasting: ByteCache<u32, Vec<u8>> =
            ByteCache::new("index", 10_000, metrics).with_ttl(Duration::from_secs(3600));
        lasting.insert(1, Arc::new(vec![1]));
        assert_eq!(lasting.get(&1).as_deref(), Some(&vec![1]));
    }
}
