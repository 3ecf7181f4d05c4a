//! plt-testkit: helpers for tests and fault suites, kept out of production builds (a
//! dev-dependency of the crates that use it, and a dependency of the fault-suite tool).
//!
//! [`FaultProxy`]: a TCP proxy in front of a real backend (PostgreSQL, Redis, etcd, another
//! service) that a test switches between passing, refusing and silently dropping traffic —
//! the ways a dependency vanishes in production.

pub mod fault_proxy;

pub use fault_proxy::{FaultProxy, Mode};
