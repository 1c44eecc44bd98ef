//! The ingester's heads, one per tenant.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use super::{Head, HeadConfig};

/// Tenant -> [`Head`], created on a tenant's first push.
#[derive(Debug)]
pub struct Heads {
    config: HeadConfig,
    heads: RwLock<HashMap<String, Arc<Head>>>,
}

impl Heads {
    pub fn new(config: HeadConfig) -> Heads {
        Heads {
            config,
            heads: RwLock::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &HeadConfig {
        &self.config
    }

    /// The tenant's head, if it has one.
    pub fn get(&self, tenant: &str) -> Option<Arc<Head>> {
        self.heads.read().get(tenant).cloned()
    }

    /// The tenant's head, created empty if it has none.
    pub fn get_or_create(&self, tenant: &str) -> Arc<Head> {
        if let Some(head) = self.get(tenant) {
            return head;
        }
        let mut heads = self.heads.write();
        Arc::clone(
            heads
                .entry(tenant.to_string())
                .or_insert_with(|| Arc::new(Head::new(tenant, &self.config))),
        )
    }

    /// Drops the tenant's head (after its series are flushed and gone).
    pub fn remove(&self, tenant: &str) -> Option<Arc<Head>> {
        self.heads.write().remove(tenant)
    }

    /// Every tenant's head, sorted by tenant.
    pub fn all(&self) -> Vec<(String, Arc<Head>)> {
        let mut out: Vec<(String, Arc<Head>)> = self
            .heads
            .read()
            .iter()
            .map(|(t, h)| (t.clone(), Arc::clone(h)))
            .collect();
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out
    }
}
