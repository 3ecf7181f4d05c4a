//! plt-kernel: the infrastructure every plt service is built on — layered configuration (K1),
//! structured logging with request ids (K2), lifecycle and graceful shutdown (K3), health
//! (K4), Prometheus metrics (K5), the one-port gRPC + HTTP host, and the mail notifier.
//! It holds no business logic.

pub mod affinity;
pub mod binary;
pub mod config;
pub mod health;
pub mod host;
pub mod lifecycle;
pub mod metrics;
pub mod net;
pub mod notify;
pub mod oversize;
pub mod report;
pub mod secret;
pub mod telemetry;
/// Test support (feature `testing`: dev-dependencies only, never in a production build).
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;
pub mod trace;

pub use config::{ConfigError, KernelConfig, Loaded};
pub use health::{HealthCheck, Readiness};
pub use host::{BoundHost, FrontFuture, FrontHandler, ServiceHost, worker_index};
pub use secret::Secret;

/// The header that carries a request id between clients, the gateway and services.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
