//! The blog contract, generated from `proto/blog.proto` by plt-build: the trait
//! [`BlogServiceClient`], its gRPC and HTTP adapters and clients, the access rule of each
//! method ([`BLOG_SERVICE_METHODS`]) and what the runtime serves ([`BlogServiceServe`]).
//! Other services call blog through this crate only: `factory.client::<dyn BlogServiceClient>()`.

include!(concat!(env!("OUT_DIR"), "/plt_contract.rs"));

/// The events blog publishes (CloudEvents through its outbox, committed with the change;
/// topic = type, key = the post id, so one post's events stay in order).
pub mod events {
    use serde::{Deserialize, Serialize};

    /// A post became public (first time, or again after being unpublished).
    pub const POST_PUBLISHED: &str = "plt.blog.post.published.v1";
    /// A post's title, body, tags or slug changed.
    pub const POST_UPDATED: &str = "plt.blog.post.updated.v1";
    /// A published post was taken back to private.
    pub const POST_UNPUBLISHED: &str = "plt.blog.post.unpublished.v1";
    /// A post was deleted.
    pub const POST_DELETED: &str = "plt.blog.post.deleted.v1";
    /// Every type above.
    pub const ALL: &[&str] = &[POST_PUBLISHED, POST_UPDATED, POST_UNPUBLISHED, POST_DELETED];

    /// The data of every post event.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct PostEvent {
        pub post_id: String,
        pub author_id: String,
        pub slug: String,
        pub title: String,
        /// The post's status after the change (`deleted` for a deletion).
        pub status: String,
        /// Who made the change.
        pub by: String,
        /// RFC 3339.
        pub at: String,
    }
}
