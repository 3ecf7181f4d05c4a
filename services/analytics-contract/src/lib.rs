//! The analytics contract, generated from `proto/analytics.proto` by plt-build: the trait
//! [`AnalyticsServiceClient`] (daily time series and totals of the platform's counted
//! events), its gRPC and HTTP adapters and clients, the access rule of each method
//! ([`ANALYTICS_SERVICE_METHODS`]: permission `analytics.stats.read`) and what the runtime
//! serves ([`AnalyticsServiceServe`]). Other services call analytics through this crate only:
//! `factory.client::<dyn AnalyticsServiceClient>()`.

include!(concat!(env!("OUT_DIR"), "/plt_contract.rs"));
