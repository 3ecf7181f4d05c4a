//! plt-idempotency: idempotency keys for the mutating methods of plt services.
//!
//! A client that may repeat a mutating call (a timeout, a retry after a dropped connection)
//! sends a key of its choosing with it — HTTP header `Idempotency-Key`, gRPC metadata
//! `idempotency-key`, read into [`plt_contracts::RequestContext::idempotency_key`]. Every
//! request with that key, from the same caller to the same method, then has **one effect and
//! one answer**: the first runs, the others (concurrent or later) get its stored answer.
//!
//! ```ignore
//! let idem = Idempotency::new(db, "billing");
//! let scope = Idempotency::scope(ctx, "CreateSubscription");
//! idem.run(&scope, ctx.idempotency_key.as_deref(), &fingerprint(&req.encode_to_vec()), |claim| async move {
//!     // … the effect; with `claim`, write its answer in the effect's own transaction:
//!     // store.create(&sub, claim.as_ref().map(|c| c.completion(&answer)).transpose()?.as_ref())
//!     Ok(answer)
//! }).await
//! ```
//!
//! # Rules
//!
//! - **Keys** are 1 to 255 visible ASCII characters (`!` to `~`); anything else is
//!   `invalid_argument` on field `idempotency_key`. Without a key the effect simply runs.
//! - **Scope**: a key belongs to a caller and a method ([`Idempotency::scope`]: the admitted
//!   user or service, and the method's name); the same key from another user is another key.
//! - **Same key, other request**: each request carries a fingerprint (SHA-256 of its encoded
//!   message, [`fingerprint`]). A key seen with another fingerprint is refused with
//!   `invalid_argument` (HTTP 400, gRPC `INVALID_ARGUMENT`) on field `idempotency_key`:
//!   `was used with a different request`.
//! - **Concurrent repeats**: the first request inserts a `pending` row (primary key
//!   scope + key) and runs the effect; the others poll the row with a growing back-off
//!   (10 ms to 200 ms) for at most [`IdempotencyConfig::wait`] (10 s) and then answer with
//!   the stored answer — or `already_exists` (HTTP 409): `a request with this idempotency key
//!   is still in progress`.
//! - **Stored answers**: a success, and an error the request itself caused
//!   (`invalid_argument`, `not_found`, `already_exists`, `failed_precondition`,
//!   `permission_denied`, `payload_too_large`), are stored and replayed for 24 h
//!   ([`IdempotencyConfig::ttl`]; [`Idempotency::prune`] deletes older rows, and an older row
//!   counts as absent). A transient error (`unavailable`, `internal`, `deadline_exceeded`,
//!   …) is not stored: the row is removed and a retry with the key runs the effect again.
//!
//! # Exactly once, also across a crash
//!
//! The effect gets a [`Claim`]. An effect that writes its answer **in its own transaction**
//! ([`Claim::completion`] then [`Completion::write`] with `&mut *tx`) commits the answer
//! with the effect: either both are there or neither is, and nothing can run the effect
//! twice. The write checks the claim's token, so a claim taken over (below) makes the late
//! transaction fail and roll back.
//!
//! An effect that does not, has its answer stored right after it returns; a process that
//! dies in between leaves a `pending` row. That row, and the row of a request whose handler
//! was dropped, is taken over by the next request with the key once its lease
//! ([`IdempotencyConfig::lease`], 60 s) has passed: the effect then runs again — the crash
//! window that writing the answer in the effect's transaction closes. A request whose
//! handler is dropped (the client went away) before the effect finished removes its pending
//! row at once when the answer was not committed with the effect.

use chrono::{DateTime, SubsecRound, Utc};
use plt_contracts::{Error, ErrorCode, FieldViolation, RequestContext};
use plt_db::Db;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};
use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::sync::OnceCell;

/// The platform table, in the service's schema (PostgreSQL) or file (SQLite).
pub const TABLE: &str = "plt_idempotency";

/// The longest key.
pub const MAX_KEY_LEN: usize = 255;

/// The field errors about the key name.
pub const FIELD: &str = "idempotency_key";

const CREATE_PG: &str = "CREATE TABLE IF NOT EXISTS plt_idempotency (
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    state       TEXT NOT NULL,
    token       TEXT NOT NULL,
    response    TEXT,
    lease_until TIMESTAMPTZ NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (scope, key)
)";
const CREATE_SQLITE: &str = "CREATE TABLE IF NOT EXISTS plt_idempotency (
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    state       TEXT NOT NULL,
    token       TEXT NOT NULL,
    response    TEXT,
    lease_until TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (scope, key)
)";
const INDEX: &str =
    "CREATE INDEX IF NOT EXISTS plt_idempotency_created ON plt_idempotency (created_at)";
const LOCK_PG: &str =
    "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.plt_idempotency'))";

const INSERT: &str = "INSERT INTO plt_idempotency \
     (scope, key, fingerprint, state, token, response, lease_until, created_at) \
     VALUES ($1, $2, $3, 'pending', $4, NULL, $5, $6) ON CONFLICT (scope, key) DO NOTHING";
const SELECT: &str = "SELECT fingerprint, state, token, response, lease_until, created_at \
     FROM plt_idempotency WHERE scope = $1 AND key = $2";
const TAKE_OVER: &str = "UPDATE plt_idempotency SET token = $4, lease_until = $5 \
     WHERE scope = $1 AND key = $2 AND token = $3 AND state = 'pending'";
const DELETE_STALE: &str =
    "DELETE FROM plt_idempotency WHERE scope = $1 AND key = $2 AND created_at < $3";
const FINISH: &str = "UPDATE plt_idempotency SET state = 'done', response = $4 \
     WHERE scope = $1 AND key = $2 AND token = $3 AND state = 'pending'";
const RELEASE: &str = "DELETE FROM plt_idempotency \
     WHERE scope = $1 AND key = $2 AND token = $3 AND state = 'pending'";
const PRUNE: &str = "DELETE FROM plt_idempotency WHERE created_at < $1";

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn chrono_d(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// How long keys live and waits last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdempotencyConfig {
    /// How long a repeat waits for the first request's answer before answering 409.
    pub wait: Duration,
    /// How long a pending row belongs to the request that inserted it; after that the next
    /// request with the key takes it over (its owner died or hangs).
    pub lease: Duration,
    /// How long an answer is kept and replayed.
    pub ttl: Duration,
}

impl Default for IdempotencyConfig {
    /// Wait 10 s, lease 60 s, keep 24 h.
    fn default() -> Self {
        Self {
            wait: Duration::from_secs(10),
            lease: Duration::from_secs(60),
            ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// The SHA-256 of a request's encoded form, hex: what tells two requests apart under one key.
pub fn fingerprint(encoded: &[u8]) -> String {
    let digest = Sha256::digest(encoded);
    let mut s = String::with_capacity(64);
    for b in digest.iter() {
        s.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        s.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
    }
    s
}

/// Checks a key: 1 to 255 visible ASCII characters.
pub fn check_key(key: &str) -> Result<(), Error> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid(
            FIELD,
            format!("must be 1 to {MAX_KEY_LEN} visible ASCII characters"),
        ));
    }
    Ok(())
}

/// An answer as stored: the success, or the error.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Stored<T> {
    Ok(T),
    Err {
        code: String,
        message: String,
        violations: Vec<(String, String)>,
    },
}

fn stored_error(e: &Error) -> Stored<()> {
    Stored::Err {
        code: e.code.info().slug.to_owned(),
        message: e.message.clone(),
        violations: e
            .violations
            .iter()
            .map(|v| (v.field.clone(), v.reason.clone()))
            .collect(),
    }
}

/// Whether an error is the request's own doing (stored and replayed) rather than a passing
/// failure (not stored: a retry runs again).
pub fn is_final(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::InvalidArgument
            | ErrorCode::NotFound
            | ErrorCode::AlreadyExists
            | ErrorCode::FailedPrecondition
            | ErrorCode::PermissionDenied
            | ErrorCode::PayloadTooLarge
    )
}

fn decode<T: DeserializeOwned>(text: &str) -> Result<T, Error> {
    match serde_json::from_str::<Stored<T>>(text) {
        Ok(Stored::Ok(v)) => Ok(v),
        Ok(Stored::Err {
            code,
            message,
            violations,
        }) => Err(Error {
            code: ErrorCode::from_slug(&code).unwrap_or(ErrorCode::Internal),
            message,
            violations: violations
                .into_iter()
                .map(|(field, reason)| FieldViolation { field, reason })
                .collect(),
        }),
        Err(e) => Err(Error::internal("a stored idempotent answer", &e)),
    }
}

fn db_error(e: sqlx::Error) -> Error {
    if plt_db::is_unavailable(&e) {
        Error::dependency_unavailable("the database", "idempotency keys", &e)
    } else {
        Error::internal("idempotency keys", &e)
    }
}

/// A connection inside the caller's transaction that can write an idempotent answer:
/// `sqlx::PgConnection` and `sqlx::SqliteConnection` (`&mut *tx`).
#[async_trait::async_trait]
pub trait IdempotencyConn: Send {
    /// Marks the claim's row done with `response`; `false` when the claim is no longer
    /// this request's (taken over).
    async fn finish(&mut self, c: &Completion) -> Result<bool, sqlx::Error>;
}

#[async_trait::async_trait]
impl IdempotencyConn for sqlx::PgConnection {
    async fn finish(&mut self, c: &Completion) -> Result<bool, sqlx::Error> {
        let r = sqlx::query(FINISH)
            .bind(&*c.claim.inner.scope)
            .bind(&*c.claim.inner.key)
            .bind(&*c.claim.inner.token)
            .bind(&c.response)
            .execute(self)
            .await?;
        Ok(r.rows_affected() == 1)
    }
}

#[async_trait::async_trait]
impl IdempotencyConn for sqlx::SqliteConnection {
    async fn finish(&mut self, c: &Completion) -> Result<bool, sqlx::Error> {
        let r = sqlx::query(FINISH)
            .bind(&*c.claim.inner.scope)
            .bind(&*c.claim.inner.key)
            .bind(&*c.claim.inner.token)
            .bind(&c.response)
            .execute(self)
            .await?;
        Ok(r.rows_affected() == 1)
    }
}

struct ClaimInner {
    scope: Box<str>,
    key: Box<str>,
    token: Box<str>,
    /// The answer was committed with the effect.
    written: AtomicBool,
}

/// This request's hold on its key while its effect runs. Cheap to clone.
#[derive(Clone)]
pub struct Claim {
    inner: Arc<ClaimInner>,
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim")
            .field("scope", &self.inner.scope)
            .field("key", &self.inner.key)
            .finish_non_exhaustive()
    }
}

impl Claim {
    /// The answer `response` ready to be written in the effect's transaction.
    pub fn completion<T: Serialize>(&self, response: &T) -> Result<Completion, Error> {
        let response = serde_json::to_string(&Stored::Ok(response))
            .map_err(|e| Error::internal("an idempotent answer", &e))?;
        Ok(Completion {
            claim: self.clone(),
            response,
        })
    }
}

/// An answer to write in the effect's own transaction ([`Completion::write`]).
#[derive(Debug, Clone)]
pub struct Completion {
    claim: Claim,
    response: String,
}

impl Completion {
    /// Writes the answer through `conn` (`&mut *tx`, the effect's transaction). An error
    /// when the claim was taken over meanwhile: roll the transaction back.
    pub async fn write<C: IdempotencyConn + ?Sized>(&self, conn: &mut C) -> Result<(), Error> {
        if conn.finish(self).await.map_err(db_error)? {
            self.claim.inner.written.store(true, Ordering::SeqCst);
            Ok(())
        } else {
            Err(in_progress())
        }
    }
}

fn in_progress() -> Error {
    Error::already_exists("a request with this idempotency key is still in progress")
        .with_violation(FIELD, "a request with this key is still in progress")
}

/// Removes a pending row whose request was dropped before it settled.
struct Pending {
    db: Db,
    claim: Claim,
    settled: bool,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.settled || self.claim.inner.written.load(Ordering::SeqCst) {
            return;
        }
        let db = self.db.clone();
        let claim = self.claim.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = release(&db, &claim).await;
            });
        }
    }
}

async fn release(db: &Db, claim: &Claim) -> Result<(), sqlx::Error> {
    let c = &claim.inner;
    match db {
        Db::Postgres(p) => {
            sqlx::query(RELEASE)
                .bind(&*c.scope)
                .bind(&*c.key)
                .bind(&*c.token)
                .execute(p)
                .await?;
        }
        Db::Sqlite(p) => {
            sqlx::query(RELEASE)
                .bind(&*c.scope)
                .bind(&*c.key)
                .bind(&*c.token)
                .execute(p)
                .await?;
        }
    }
    Ok(())
}

type Row = (
    String,
    String,
    String,
    Option<String>,
    DateTime<Utc>,
    DateTime<Utc>,
);

/// A service's idempotency keys, on its database. Cheap to clone.
#[derive(Clone)]
pub struct Idempotency {
    db: Db,
    service: Arc<str>,
    cfg: IdempotencyConfig,
    installed: Arc<OnceCell<()>>,
}

impl std::fmt::Debug for Idempotency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotency")
            .field("service", &self.service)
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

macro_rules! on_db {
    ($db:expr, $p:ident => $body:expr) => {
        match $db {
            Db::Postgres($p) => $body,
            Db::Sqlite($p) => $body,
        }
    };
}

impl Idempotency {
    /// Keys of service `service` on `db`, with the default [`IdempotencyConfig`].
    pub fn new(db: &Db, service: &str) -> Self {
        Self {
            db: db.clone(),
            service: service.into(),
            cfg: IdempotencyConfig::default(),
            installed: Arc::default(),
        }
    }

    /// These keys with `cfg`.
    pub fn with_config(mut self, cfg: IdempotencyConfig) -> Self {
        self.cfg = cfg;
        self
    }

    /// The settings.
    pub fn config(&self) -> &IdempotencyConfig {
        &self.cfg
    }

    /// The scope of a key: the caller the runtime admitted (user or service; `anonymous`
    /// otherwise) and the method.
    pub fn scope(ctx: &RequestContext, method: &str) -> String {
        let who = match &ctx.principal {
            Some(plt_contracts::access::Principal::User(id)) => format!("user:{id}"),
            Some(plt_contracts::access::Principal::Service(id)) => format!("service:{id}"),
            None => "anonymous".to_owned(),
        };
        format!("{who}/{method}")
    }

    /// Creates the table when it is missing (idempotent; safe for instances starting
    /// together). [`Idempotency::run`] does it first.
    pub async fn install(&self) -> Result<(), sqlx::Error> {
        self.installed
            .get_or_try_init(|| async {
                match &self.db {
                    Db::Postgres(p) => {
                        let mut tx = p.begin().await?;
                        sqlx::query(LOCK_PG).execute(&mut *tx).await?;
                        sqlx::query(CREATE_PG).execute(&mut *tx).await?;
                        sqlx::query(INDEX).execute(&mut *tx).await?;
                        tx.commit().await?;
                    }
                    Db::Sqlite(p) => {
                        sqlx::query(CREATE_SQLITE).execute(p).await?;
                        sqlx::query(INDEX).execute(p).await?;
                    }
                }
                Ok::<(), sqlx::Error>(())
            })
            .await?;
        Ok(())
    }

    /// Deletes answers older than the configured ttl; the number removed.
    pub async fn prune(&self) -> Result<u64, sqlx::Error> {
        self.install().await?;
        let before = now() - chrono_d(self.cfg.ttl);
        Ok(on_db!(&self.db, p => sqlx::query(PRUNE).bind(before).execute(p).await?.rows_affected()))
    }

    async fn try_insert(
        &self,
        scope: &str,
        key: &str,
        fp: &str,
        token: &str,
    ) -> Result<bool, sqlx::Error> {
        let now = now();
        let lease = now + chrono_d(self.cfg.lease);
        Ok(on_db!(&self.db, p => sqlx::query(INSERT)
            .bind(scope)
            .bind(key)
            .bind(fp)
            .bind(token)
            .bind(lease)
            .bind(now)
            .execute(p)
            .await?
            .rows_affected() == 1))
    }

    async fn load(&self, scope: &str, key: &str) -> Result<Option<Row>, sqlx::Error> {
        on_db!(&self.db, p => sqlx::query_as::<_, Row>(SELECT).bind(scope).bind(key).fetch_optional(p).await)
    }

    async fn delete_stale(&self, scope: &str, key: &str) -> Result<(), sqlx::Error> {
        let before = now() - chrono_d(self.cfg.ttl);
        on_db!(&self.db, p => sqlx::query(DELETE_STALE).bind(scope).bind(key).bind(before).execute(p).await.map(drop))?;
        Ok(())
    }

    async fn take_over(
        &self,
        scope: &str,
        key: &str,
        old: &str,
        new: &str,
    ) -> Result<bool, sqlx::Error> {
        let lease = now() + chrono_d(self.cfg.lease);
        Ok(on_db!(&self.db, p => sqlx::query(TAKE_OVER)
            .bind(scope)
            .bind(key)
            .bind(old)
            .bind(new)
            .bind(lease)
            .execute(p)
            .await?
            .rows_affected() == 1))
    }

    /// Runs `effect` once for `key` in `scope` (see the crate's rules): the first request
    /// runs it, repeats get its answer. `fingerprint`: [`fingerprint`] of the request. Without
    /// a key, `effect` runs with no claim.
    pub async fn run<T, F, Fut>(
        &self,
        scope: &str,
        key: Option<&str>,
        fingerprint: &str,
        effect: F,
    ) -> Result<T, Error>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(Option<Claim>) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let Some(key) = key else {
            return effect(None).await;
        };
        check_key(key)?;
        self.install().await.map_err(db_error)?;
        let token = uuid::Uuid::new_v4().to_string();
        let started = Instant::now();
        let mut backoff = Duration::from_millis(10);
        loop {
            if self
                .try_insert(scope, key, fingerprint, &token)
                .await
                .map_err(db_error)?
            {
                break;
            }
            let Some((fp, state, held_by, response, lease_until, created_at)) =
                self.load(scope, key).await.map_err(db_error)?
            else {
                // Released or pruned meanwhile: try again at once.
                continue;
            };
            let now = now();
            if created_at < now - chrono_d(self.cfg.ttl) {
                self.delete_stale(scope, key).await.map_err(db_error)?;
                continue;
            }
            if fp != fingerprint {
                return Err(Error::invalid(FIELD, "was used with a different request"));
            }
            if state == "done" {
                return decode(response.as_deref().unwrap_or("null"));
            }
            if lease_until <= now {
                if self
                    .take_over(scope, key, &held_by, &token)
                    .await
                    .map_err(db_error)?
                {
                    tracing::warn!(
                        service = %self.service,
                        scope,
                        "idempotency: took over a pending request whose lease ended"
                    );
                    break;
                }
                continue;
            }
            if started.elapsed() >= self.cfg.wait {
                return Err(in_progress());
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
        let claim = Claim {
            inner: Arc::new(ClaimInner {
                scope: scope.into(),
                key: key.into(),
                token: token.as_str().into(),
                written: AtomicBool::new(false),
            }),
        };
        let mut pending = Pending {
            db: self.db.clone(),
            claim: claim.clone(),
            settled: false,
        };
        let result = effect(Some(claim.clone())).await;
        if claim.inner.written.load(Ordering::SeqCst) {
            pending.settled = true;
            return result;
        }
        let stored = match &result {
            Ok(v) => Some(
                serde_json::to_string(&Stored::Ok(v))
                    .map_err(|e| Error::internal("an idempotent answer", &e))?,
            ),
            Err(e) if is_final(e.code) => Some(
                serde_json::to_string(&stored_error(e))
                    .map_err(|e| Error::internal("an idempotent answer", &e))?,
            ),
            Err(_) => None,
        };
        let write = match stored {
            Some(text) => {
                let c = Completion {
                    claim: claim.clone(),
                    response: text,
                };
                on_db!(&self.db, p => {
                    let mut tx = p.begin().await.map_err(db_error)?;
                    c.write(&mut *tx).await?;
                    tx.commit().await.map_err(db_error)
                })
            }
            None => release(&self.db, &claim).await.map_err(db_error),
        };
        pending.settled = true;
        if let Err(e) = write {
            tracing::error!(
                service = %self.service,
                scope,
                error = %e,
                "idempotency: the answer was not stored; a repeat may run the effect again"
            );
        }
        result
    }
}
