//! Strata: durable, horizontally scalable, multi-tenant long-term storage for
//! Prometheus. See `DESIGN.md` in the project's shared docs and the README.

pub mod app;
pub mod chunk;
pub mod config;
pub mod distributor;
pub mod ingester;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod promql;
pub mod proto;
pub mod querier;
pub mod ring;
pub mod server;
pub mod service;
pub mod store;
pub mod tenant;
