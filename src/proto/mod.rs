//! Generated protobuf types (prost) for the files in `proto/`:
//! remote-write 1.0 and remote read (`prometheus`), remote-write 2.0
//! (`io.prometheus.write.v2`); and [`histogram`], the conversions between
//! remote write's native histograms and the model's.
//!
//! Lints are relaxed for the generated modules only.

pub mod histogram;

/// Remote-write 1.0 and remote-read messages.
#[allow(clippy::all, missing_docs)]
pub mod prometheus {
    include!(concat!(env!("OUT_DIR"), "/prometheus.rs"));
}

/// Remote-write 2.0 messages.
#[allow(clippy::all, missing_docs)]
pub mod write_v2 {
    include!(concat!(env!("OUT_DIR"), "/io.prometheus.write.v2.rs"));
}

/// Our own gRPC APIs (package `strata.*`; nested so that generated
/// cross-package paths resolve).
#[allow(clippy::all, missing_docs)]
pub mod strata {
    /// The ingester's gRPC API.
    pub mod ingester {
        include!(concat!(env!("OUT_DIR"), "/strata.ingester.rs"));
    }
}

pub use strata::ingester;
