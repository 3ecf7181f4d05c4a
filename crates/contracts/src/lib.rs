//! plt-contracts: the wire contracts between plt services — protobuf code generated from
//! `proto/plt/<service>/v1`, one Rust trait per core service with its domain types, one error
//! type mapped to gRPC and HTTP alike, the gRPC and HTTP adapters (server and client) for
//! each trait, and (feature `testsuite`) the contract suites every implementation must pass.

pub mod access;
pub mod audit;
pub mod auth;
pub mod authz;
pub mod context;
pub mod docs;
pub mod error;
pub mod events;
pub mod guarded;
pub mod http_api;
pub mod identity;
#[doc(hidden)]
pub mod rt;
pub mod serve;
pub mod service_identity;
pub mod wire;

#[cfg(feature = "testsuite")]
pub mod testsuite;

pub use context::RequestContext;
pub use error::{Error, ErrorCode, FieldViolation, Result};

/// Generated protobuf messages and tonic services.
pub mod pb {
    #![allow(clippy::all, missing_docs, unreachable_pub)]
    pub mod identity {
        pub mod v1 {
            tonic::include_proto!("plt.identity.v1");
        }
    }
    pub mod auth {
        pub mod v1 {
            tonic::include_proto!("plt.auth.v1");
        }
    }
    pub mod authz {
        pub mod v1 {
            tonic::include_proto!("plt.authz.v1");
        }
    }
    pub mod audit {
        pub mod v1 {
            tonic::include_proto!("plt.audit.v1");
        }
    }
}

/// The encoded `FileDescriptorSet` of every plt proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/plt_descriptor.bin"));
