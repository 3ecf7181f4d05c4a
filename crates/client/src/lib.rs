//! plt-client: how a service calls another. A [`Pool`] keeps the healthy instances of a
//! service current from a registry watch and sends each call to one of them — power of two
//! choices over in-flight calls, skipping instances whose circuit breaker is open — within
//! the caller's deadline, retrying only methods marked idempotent, with exponential back-off,
//! jitter and a retry budget. [`ClientFactory`] builds the contract clients
//! (`Arc<dyn IdentityServiceClient>`, …) on top, over gRPC or HTTP as configured.

mod balanced;
mod breaker;
mod budget;
mod credentials;
mod factory;
mod pool;
/// Test support (feature `testing`: dev-dependencies only, never in a production build).
#[cfg(feature = "testing")]
pub mod testing;

pub use balanced::{BalancedAudit, BalancedAuth, BalancedAuthz, BalancedIdentity};
pub use breaker::{Breaker, BreakerState};
pub use budget::RetryBudget;
pub use credentials::{
    IssuedCredentials, ServiceIdentityConfig, check_shared_config, development_secret,
    is_development_secret,
};
pub use factory::{ClientConfig, ClientFactory, ClientsConfig, Contract, Protocol};
pub use pool::{Policy, Pool};
