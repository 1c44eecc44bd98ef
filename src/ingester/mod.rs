//! The ingester: a stateful ring member that will hold recent samples.
//!
//! Its lifecycle in the ring: JOINING while it prepares, ACTIVE when ready,
//! LEAVING while it drains on shutdown, then gone from the ring.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub mod client;
pub mod wal;

use crate::metrics::Metrics;
use crate::ring::client::RingClient;
use crate::ring::desc::InstanceState;
use crate::ring::lifecycler::{Lifecycler, LifecyclerConfig};
use crate::service::{Service, ServiceError};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngesterConfig {
    pub lifecycler: LifecyclerConfig,
}

/// The addresses other processes reach this ingester at.
pub struct Advertised {
    pub grpc_addr: String,
    pub http_addr: String,
}

pub struct Ingester {
    config: IngesterConfig,
    lifecycler: Lifecycler,
}

impl Ingester {
    pub fn new(
        config: IngesterConfig,
        advertised: Advertised,
        ring: Arc<RingClient>,
        forget_unhealthy_after: std::time::Duration,
        metrics: &Metrics,
    ) -> Ingester {
        let lifecycler = Lifecycler::new(
            &config.lifecycler,
            advertised.grpc_addr,
            advertised.http_addr,
            ring,
            forget_unhealthy_after,
            metrics,
        );
        Ingester { config, lifecycler }
    }
}

#[async_trait]
impl Service for Ingester {
    fn name(&self) -> &'static str {
        "ingester"
    }

    async fn start(&self) -> Result<(), ServiceError> {
        self.lifecycler
            .join(self.config.lifecycler.num_tokens)
            .await?;
        self.lifecycler.change_state(InstanceState::Active).await?;
        Ok(())
    }

    async fn stop(&self) -> Result<(), ServiceError> {
        if let Err(err) = self.lifecycler.begin_leaving().await {
            tracing::warn!(error = %err, "could not mark the ingester LEAVING; leaving anyway");
        }
        self.lifecycler.leave().await?;
        Ok(())
    }

    fn ready(&self) -> Result<(), String> {
        match self.lifecycler.state() {
            InstanceState::Active => Ok(()),
            state => Err(format!("ingester is {state} in the ring")),
        }
    }
}
