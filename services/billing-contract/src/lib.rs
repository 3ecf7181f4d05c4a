//! The billing contract, generated from `proto/billing.proto` by plt-build: the trait
//! [`BillingServiceClient`], its gRPC and HTTP adapters and clients, the access rule of each
//! method ([`BILLING_SERVICE_METHODS`]) and what the runtime serves ([`BillingServiceServe`]).
//! Other services call billing through this crate only: `factory.client::<dyn BillingServiceClient>()`.

include!(concat!(env!("OUT_DIR"), "/plt_contract.rs"));

/// The events billing publishes (CloudEvents through its outbox, JSON data): their types
/// and data. Keyed by subscription id, so one subscription's events stay in order.
pub mod events {
    use serde::{Deserialize, Serialize};

    /// A subscription was created, moved to another plan, canceled (at its period's end),
    /// or ended.
    pub const SUBSCRIPTION_CHANGED: &str = "plt.billing.subscription.changed.v1";
    /// The invoice of a subscription's ended period was issued.
    pub const INVOICE_ISSUED: &str = "plt.billing.invoice.issued.v1";

    /// Data of [`SUBSCRIPTION_CHANGED`].
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct SubscriptionChanged {
        /// `created`, `plan_changed`, `canceled` or `ended`.
        pub change: String,
        /// The subscription as it now is.
        pub subscription: crate::pb::Subscription,
        /// The plan before a `plan_changed`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub previous_plan_id: Option<String>,
    }

    /// Data of [`INVOICE_ISSUED`].
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct InvoiceIssued {
        pub invoice: crate::pb::Invoice,
    }
}
