//! The notes contract, generated from `proto/notes.proto` by plt-build: the trait
//! [`NotesServiceClient`], its gRPC and HTTP adapters and clients, the access rule of each
//! method ([`NOTES_SERVICE_METHODS`]) and what the runtime serves ([`NotesServiceServe`]).
//! Other services call notes through this crate only: `factory.client::<dyn NotesServiceClient>()`.

include!(concat!(env!("OUT_DIR"), "/plt_contract.rs"));
