//! Contract test suites (feature `testsuite`): one suite per trait, run by each
//! implementation's tests — the service core directly, and gRPC and HTTP clients talking to
//! a served core — so that every implementation behaves the same.

pub mod audit;
pub mod auth;
pub mod authz;
pub mod fakes;
pub mod identity;
