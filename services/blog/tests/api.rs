//! The blog contract, end to end: the service started by the runtime (its real start-up
//! path) on SQLite and on PostgreSQL (when PLT_TEST_POSTGRES_URL is set), called over gRPC
//! and over HTTP/JSON through the generated clients, with its access rules enforced and
//! object-level permissions decided per post (authz's Check, here authz's fake).

use blog_contract::{BlogServiceClient, BlogServiceGrpcClient, BlogServiceHttpClient, pb};
use blog_service::Blog;
use plt_contracts::{ErrorCode, RequestContext};
use plt_kernel::Secret;
use plt_runtime::testing::{Backend, TestService};
use std::sync::Arc;
use uuid::Uuid;

fn as_user(svc: &TestService, user: Uuid) -> RequestContext {
    RequestContext {
        authorization: Some(Secret::new(format!("Bearer {}", svc.user_token(user)))),
        ..Default::default()
    }
}

fn code<T: std::fmt::Debug>(r: plt_contracts::Result<T>) -> ErrorCode {
    r.expect_err("expected an error").code
}

fn new_post(title: &str) -> pb::CreatePostRequest {
    pb::CreatePostRequest {
        title: title.into(),
        body: "# Hello\n\nMarkdown *body*.".into(),
        tags: vec!["rust".into(), "news".into()],
        slug: String::new(),
    }
}

/// Every method that names a post, as `who` on post `id`: the error codes (or Ok).
async fn every_method(
    c: &dyn BlogServiceClient,
    who: &RequestContext,
    id: &str,
) -> Vec<(&'static str, Option<ErrorCode>)> {
    let other = Uuid::new_v4().to_string();
    let e = |r: plt_contracts::Result<()>| r.err().map(|e| e.code);
    vec![
        (
            "GetPost",
            e(c.get_post(who, pb::GetPostRequest { id: id.into() })
                .await
                .map(drop)),
        ),
        (
            "UpdatePost",
            e(c.update_post(
                who,
                pb::UpdatePostRequest {
                    id: id.into(),
                    title: "taken over".into(),
                    ..Default::default()
                },
            )
            .await
            .map(drop)),
        ),
        (
            "PublishPost",
            e(
                c.publish_post(who, pb::PublishPostRequest { id: id.into() })
                    .await
                    .map(drop),
            ),
        ),
        (
            "UnpublishPost",
            e(
                c.unpublish_post(who, pb::UnpublishPostRequest { id: id.into() })
                    .await
                    .map(drop),
            ),
        ),
        (
            "DeletePost",
            e(c.delete_post(who, pb::DeletePostRequest { id: id.into() })
                .await
                .map(drop)),
        ),
        (
            "AddEditor",
            e(c.add_editor(
                who,
                pb::EditorRequest {
                    id: id.into(),
                    user_id: other.clone(),
                },
            )
            .await
            .map(drop)),
        ),
        (
            "RemoveEditor",
            e(c.remove_editor(
                who,
                pb::EditorRequest {
                    id: id.into(),
                    user_id: other.clone(),
                },
            )
            .await
            .map(drop)),
        ),
        (
            "ListEditors",
            e(
                c.list_editors(who, pb::ListEditorsRequest { id: id.into() })
                    .await
                    .map(drop),
            ),
        ),
        (
            "ListAttachments",
            e(
                c.list_attachments(who, pb::ListAttachmentsRequest { id: id.into() })
                    .await
                    .map(drop),
            ),
        ),
        (
            "ListComments",
            e(c.list_comments(
                who,
                pb::ListCommentsRequest {
                    post_id: id.into(),
                    ..Default::default()
                },
            )
            .await
            .map(drop)),
        ),
    ]
}

/// What every implementation reached through `client` must do.
async fn contract_suite(svc: &TestService, client: Arc<dyn BlogServiceClient>) {
    let c = client.as_ref();
    let (ada, bob, carol) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let anon = RequestContext::new();
    // Writing needs a sign-in and blog.posts.write.
    assert_eq!(
        code(c.create_post(&anon, new_post("x")).await),
        ErrorCode::Unauthenticated
    );
    assert_eq!(
        code(c.create_post(&as_user(svc, ada), new_post("x")).await),
        ErrorCode::PermissionDenied
    );
    for u in [ada, bob, carol] {
        svc.authz.grant(u, "blog.posts.write");
    }
    let (a, b) = (as_user(svc, ada), as_user(svc, bob));
    let err = c.create_post(&a, new_post("  ")).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert_eq!(err.violations[0].field, "title", "{err:?}");
    let err = c
        .create_post(
            &a,
            pb::CreatePostRequest {
                tags: vec!["Bad Tag".into()],
                ..new_post("t")
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.violations[0].field, "tags[0]", "{err:?}");
    let draft = c.create_post(&a, new_post("Hello, World")).await.unwrap();
    assert_eq!(draft.author_id, ada.to_string());
    assert_eq!(draft.status, "draft");
    assert!(draft.slug.starts_with("hello-world-"), "{}", draft.slug);
    assert_eq!(draft.tags, vec!["news", "rust"]);
    let dup = c
        .create_post(
            &a,
            pb::CreatePostRequest {
                slug: draft.slug.clone(),
                ..new_post("again")
            },
        )
        .await
        .unwrap_err();
    assert_eq!(dup.code, ErrorCode::AlreadyExists);

    // A draft does not exist for anyone but its author: every method is 404 for Bob.
    for (method, got) in every_method(c, &b, &draft.id).await {
        assert_eq!(
            got,
            Some(ErrorCode::NotFound),
            "Bob, {method} on Ada's draft"
        );
    }
    assert_eq!(
        code(
            c.get_post(
                &anon,
                pb::GetPostRequest {
                    id: draft.id.clone()
                }
            )
            .await
        ),
        ErrorCode::NotFound
    );
    assert_eq!(
        c.get_post(
            &a,
            pb::GetPostRequest {
                id: draft.id.clone()
            }
        )
        .await
        .unwrap(),
        draft
    );
    assert!(
        c.list_posts(&anon, Default::default())
            .await
            .unwrap()
            .posts
            .iter()
            .all(|p| p.id != draft.id)
    );

    // Published: public (and cached); Bob may read it but change nothing (403).
    let published = c
        .publish_post(
            &a,
            pb::PublishPostRequest {
                id: draft.id.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(published.status, "published");
    assert!(!published.published_at.is_empty());
    let read = c
        .get_post(
            &anon,
            pb::GetPostRequest {
                id: draft.id.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(read, published);
    let by_slug = c
        .get_post_by_slug(
            &anon,
            pb::GetPostBySlugRequest {
                slug: draft.slug.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(by_slug, published);
    let listed = c
        .list_posts(
            &anon,
            pb::ListPostsRequest {
                tag: "rust".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(listed.posts.iter().any(|p| p.id == draft.id));
    let listed = c
        .list_posts(
            &anon,
            pb::ListPostsRequest {
                tag: "other".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(listed.posts.iter().all(|p| p.id != draft.id));
    for (method, got) in every_method(c, &b, &draft.id).await {
        let want = match method {
            "GetPost" | "ListAttachments" | "ListComments" => None,
            _ => Some(ErrorCode::PermissionDenied),
        };
        assert_eq!(got, want, "Bob, {method} on Ada's published post");
    }
    assert_eq!(
        c.get_post(
            &anon,
            pb::GetPostRequest {
                id: draft.id.clone()
            }
        )
        .await
        .unwrap()
        .title,
        "Hello, World"
    );

    // Ada makes Bob an editor: he may edit and publish, not delete or share.
    let editors = c
        .add_editor(
            &a,
            pb::EditorRequest {
                id: draft.id.clone(),
                user_id: bob.to_string(),
            },
        )
        .await
        .unwrap();
    let roles: Vec<(String, String)> = editors
        .editors
        .iter()
        .map(|e| (e.user_id.clone(), e.role.clone()))
        .collect();
    assert_eq!(
        roles,
        vec![
            (ada.to_string(), "owner".into()),
            (bob.to_string(), "editor".into())
        ]
    );
    let edited = c
        .update_post(
            &b,
            pb::UpdatePostRequest {
                id: draft.id.clone(),
                title: "Edited by Bob".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(edited.title, "Edited by Bob");
    // The public copy changed at once (the cache entry was dropped).
    assert_eq!(
        c.get_post(
            &anon,
            pb::GetPostRequest {
                id: draft.id.clone()
            }
        )
        .await
        .unwrap()
        .title,
        "Edited by Bob"
    );
    assert_eq!(
        c.get_post_by_slug(
            &anon,
            pb::GetPostBySlugRequest {
                slug: draft.slug.clone()
            }
        )
        .await
        .unwrap()
        .title,
        "Edited by Bob"
    );
    assert_eq!(
        code(
            c.delete_post(
                &b,
                pb::DeletePostRequest {
                    id: draft.id.clone()
                }
            )
            .await
        ),
        ErrorCode::PermissionDenied
    );
    assert_eq!(
        code(
            c.add_editor(
                &b,
                pb::EditorRequest {
                    id: draft.id.clone(),
                    user_id: carol.to_string()
                }
            )
            .await
        ),
        ErrorCode::PermissionDenied
    );
    // Unpublished again by the editor: gone from the public, still there for both of them.
    c.unpublish_post(
        &b,
        pb::UnpublishPostRequest {
            id: draft.id.clone(),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        code(
            c.get_post(
                &anon,
                pb::GetPostRequest {
                    id: draft.id.clone()
                }
            )
            .await
        ),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(
            c.get_post_by_slug(
                &anon,
                pb::GetPostBySlugRequest {
                    slug: draft.slug.clone()
                }
            )
            .await
        ),
        ErrorCode::NotFound
    );
    assert_eq!(
        c.get_post(
            &b,
            pb::GetPostRequest {
                id: draft.id.clone()
            }
        )
        .await
        .unwrap()
        .status,
        "unpublished"
    );
    c.publish_post(
        &b,
        pb::PublishPostRequest {
            id: draft.id.clone(),
        },
    )
    .await
    .unwrap();

    // Comments on a published post by any holder of blog.comments.write.
    let cc = as_user(svc, carol);
    assert_eq!(
        code(
            c.create_comment(
                &cc,
                pb::CreateCommentRequest {
                    post_id: draft.id.clone(),
                    body: "nice".into()
                }
            )
            .await
        ),
        ErrorCode::PermissionDenied
    );
    svc.authz.grant(carol, "blog.comments.write");
    let comment = c
        .create_comment(
            &cc,
            pb::CreateCommentRequest {
                post_id: draft.id.clone(),
                body: " nice ".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(comment.body, "nice");
    let comments = c
        .list_comments(
            &anon,
            pb::ListCommentsRequest {
                post_id: draft.id.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(comments.comments, vec![comment]);

    // Bob's editorship ends: 403 again on the published post.
    c.remove_editor(
        &a,
        pb::EditorRequest {
            id: draft.id.clone(),
            user_id: bob.to_string(),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        code(
            c.update_post(
                &b,
                pb::UpdatePostRequest {
                    id: draft.id.clone(),
                    title: "again".into(),
                    ..Default::default()
                }
            )
            .await
        ),
        ErrorCode::PermissionDenied
    );
    // A moderator (blog.posts.manage) may do anything to it.
    let moderator = Uuid::new_v4();
    svc.authz.grant(moderator, "blog.posts.manage");
    let m = as_user(svc, moderator);
    c.update_post(
        &m,
        pb::UpdatePostRequest {
            id: draft.id.clone(),
            tags: vec![],
            set_tags: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // Ada's own list holds it; deleting it ends it for everyone.
    let mine = c.list_my_posts(&a, Default::default()).await.unwrap();
    assert!(
        mine.posts
            .iter()
            .any(|p| p.id == draft.id && p.tags.is_empty())
    );
    c.delete_post(
        &a,
        pb::DeletePostRequest {
            id: draft.id.clone(),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        code(
            c.get_post(
                &anon,
                pb::GetPostRequest {
                    id: draft.id.clone()
                }
            )
            .await
        ),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(
            c.get_post(
                &a,
                pb::GetPostRequest {
                    id: draft.id.clone()
                }
            )
            .await
        ),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(
            c.get_post(&a, pb::GetPostRequest { id: "nope".into() })
                .await
        ),
        ErrorCode::InvalidArgument
    );
}

async fn both_protocols(backend: Backend) {
    let Some(svc) = TestService::start::<Blog>(backend, &[]).await else {
        return;
    };
    // Its permissions (with the relations that imply them on one post) were declared to
    // authz at start, by the service itself.
    let registered = svc.registered_permissions().await;
    for p in [
        "blog.posts.write",
        "blog.posts.edit",
        "blog.posts.manage",
        "blog.comments.write",
    ] {
        assert_eq!(registered.get(p).map(String::as_str), Some("blog"), "{p}");
    }
    let base = svc.url("");
    let grpc = BlogServiceGrpcClient::connect_lazy(&base).unwrap();
    contract_suite(&svc, Arc::new(grpc)).await;
    let http = BlogServiceHttpClient::new(plt_kernel::tls::http_client(), &base);
    contract_suite(&svc, Arc::new(http)).await;
    svc.stop().await;
}

#[tokio::test]
async fn contract_on_sqlite() {
    both_protocols(Backend::Sqlite).await;
}

#[tokio::test]
async fn contract_on_postgres() {
    both_protocols(Backend::Postgres).await;
}

/// Attachments: the bytes in the blob store (here local files; `S3` below), type and size
/// limits, and the post's rules for reading them.
async fn attachments(svc: &TestService) {
    let http = plt_kernel::tls::http_client();
    let (ada, bob) = (Uuid::new_v4(), Uuid::new_v4());
    svc.authz.grant(ada, "blog.posts.write");
    let post: serde_json::Value = http
        .post(svc.url("/v1/blog/posts"))
        .bearer_auth(svc.user_token(ada))
        .json(&serde_json::json!({"title": "With a picture"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = post["id"].as_str().unwrap().to_owned();
    let png: Vec<u8> = [&b"\x89PNG\r\n\x1a\n"[..], &[7u8; 1000]].concat();
    let url = svc.url(&format!("/v1/blog/posts/{id}/attachments/cover.png"));
    // Anonymous: 401; Bob (may not even read the draft): 404; a wrong type: 400.
    let r = http
        .put(&url)
        .header("content-type", "image/png")
        .body(png.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .put(&url)
        .bearer_auth(svc.user_token(bob))
        .header("content-type", "image/png")
        .body(png.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = http
        .put(&url)
        .bearer_auth(svc.user_token(ada))
        .header("content-type", "application/x-sh")
        .body("echo")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let problem: serde_json::Value = r.json().await.unwrap();
    assert!(problem.to_string().contains("content-type"), "{problem}");
    let too_big = vec![0u8; 64 * 1024 + 1];
    let r = http
        .put(&url)
        .bearer_auth(svc.user_token(ada))
        .header("content-type", "image/png")
        .body(too_big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let r = http
        .put(&url)
        .bearer_auth(svc.user_token(ada))
        .header("content-type", "image/png")
        .body(png.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    // The draft's attachment: Ada reads it, nobody else.
    let r = http
        .get(&url)
        .bearer_auth(svc.user_token(ada))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(r.bytes().await.unwrap().as_ref(), png.as_slice());
    assert_eq!(http.get(&url).send().await.unwrap().status(), 404);
    // Published: anyone.
    let r = http
        .post(svc.url(&format!("/v1/blog/posts/{id}/publish")))
        .bearer_auth(svc.user_token(ada))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), png.as_slice());
    let list: serde_json::Value = http
        .get(svc.url(&format!("/v1/blog/posts/{id}/attachments")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["attachments"][0]["name"], "cover.png");
    assert_eq!(list["attachments"][0]["size"], png.len());
}

#[tokio::test]
async fn attachments_on_local_files() {
    let Some(svc) = TestService::start::<Blog>(
        Backend::Sqlite,
        &[("PLT_BLOG__ATTACHMENTS__MAX_BYTES", "65536")],
    )
    .await
    else {
        return;
    };
    attachments(&svc).await;
    svc.stop().await;
}

/// The same through the S3 API of a real S3-compatible server (`.ci/run` starts moto).
#[tokio::test]
async fn attachments_on_s3() {
    let Ok(endpoint) = std::env::var("PLT_TEST_S3_URL") else {
        eprintln!("SKIPPED attachments_on_s3: PLT_TEST_S3_URL is not set");
        return;
    };
    let bucket = format!("blog-{}", &Uuid::new_v4().simple().to_string()[..12]);
    let vars = [
        ("PLT_BLOG__ATTACHMENTS__MAX_BYTES", "65536"),
        ("PLT_BLOB__BACKEND", "s3"),
        ("PLT_BLOB__S3__ENDPOINT", endpoint.as_str()),
        ("PLT_BLOB__S3__BUCKET", bucket.as_str()),
        ("PLT_BLOB__S3__ACCESS_KEY_ID", "test"),
        ("PLT_BLOB__S3__SECRET_ACCESS_KEY", "test-secret"),
    ];
    let mut cfg = plt_blob::BlobConfig {
        backend: plt_blob::Backend::S3,
        ..Default::default()
    };
    cfg.s3.endpoint = endpoint.clone();
    cfg.s3.bucket = bucket.clone();
    cfg.s3.access_key_id = "test".into();
    cfg.s3.secret_access_key = Secret::new("test-secret".into());
    plt_blob::s3::S3Store::new(&cfg)
        .unwrap()
        .create_bucket()
        .await
        .unwrap();
    let Some(svc) = TestService::start::<Blog>(Backend::Sqlite, &vars).await else {
        return;
    };
    attachments(&svc).await;
    // The bytes really are in the bucket, under the post's prefix.
    let store = plt_blob::connect(&cfg).unwrap();
    let page = store.list("blog/posts/", None, 10).await.unwrap();
    assert_eq!(page.entries.len(), 1, "{page:?}");
    assert!(page.entries[0].key.ends_with("/cover.png"));
    svc.stop().await;
}

#[tokio::test]
async fn http_errors_name_the_field_and_openapi_describes_the_routes() {
    let Some(svc) = TestService::start::<Blog>(Backend::Sqlite, &[]).await else {
        return;
    };
    let http = plt_kernel::tls::http_client();
    let ada = Uuid::new_v4();
    svc.authz.grant(ada, "blog.posts.write");
    let resp = http
        .post(svc.url("/v1/blog/posts"))
        .bearer_auth(svc.user_token(ada))
        .json(&serde_json::json!({"title": "t", "colour": "red"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let problem: serde_json::Value = resp.json().await.unwrap();
    assert!(problem.to_string().contains("colour"), "{problem}");
    let resp = http.get(svc.url("/v1/blog/my/posts")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = http.get(svc.url("/v1/blog/posts")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "published posts are public");
    let doc: serde_json::Value = http
        .get(svc.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/v1/blog/posts"]["post"].is_object(), "{doc}");
    assert_eq!(
        doc["paths"]["/v1/blog/posts"]["post"]["x-plt-access"],
        "permission blog.posts.write"
    );
    svc.stop().await;
}
