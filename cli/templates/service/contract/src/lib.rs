//! The __name__ contract, generated from `proto/__name__.proto` by plt-build: the trait
//! [`__Name__ServiceClient`], its gRPC and HTTP adapters and clients, the access rule of each
//! method ([`__NAME___SERVICE_METHODS`]) and what the runtime serves ([`__Name__ServiceServe`]).
//! Other services call __name__ through this crate only: `factory.client::<dyn __Name__ServiceClient>()`.

include!(concat!(env!("OUT_DIR"), "/plt_contract.rs"));
