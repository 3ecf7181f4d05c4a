//! Fail fast while the database is gone, recover by itself when it returns.
//!
//! A [`Gated`] pool is a sqlx pool behind a [`Gate`]: the gate opens (the database is
//! "down") on the first failure that says the database cannot be reached — a refused or reset
//! connection, a pool that timed out, a server shutting down — or when the gate's own probe
//! (a dedicated connection pinged every `probe_interval`) gets no answer within
//! `probe_timeout`, which is how a silent database (packets dropped) is noticed without
//! waiting out the pool's acquire timeout. While the gate is open, every query fails at once
//! with an error [`is_unavailable`] recognises (services answer 503 `unavailable`), queries
//! already waiting are cancelled the same way, readiness fails, and the probe keeps trying;
//! its first success closes the gate. Nothing is retried here: a write either committed
//! (and was answered) or failed.
//!
//! `&Gated` is a sqlx [`Executor`] and has `begin`, so stores use it like a pool; statements
//! inside a transaction run on its connection, gated only at `begin`.

use futures_util::{
    StreamExt,
    future::BoxFuture,
    stream::{self, BoxStream},
};
use sqlx::{
    ConnectOptions, Connection, Database, Describe, Either, Error, Execute, Executor, Pool, SqlStr,
    Transaction,
};
use std::{
    future::Future,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::sync::watch;

/// The message of the error a gated query fails with while the database is down.
const DOWN: &str = "database unavailable";

/// Whether `e` means the database cannot be reached now (as opposed to a bad query or a
/// constraint): connection refused or reset, timeouts, a pool closed or exhausted, TLS or
/// protocol failures, and the server's own "connection" and "shutting down" SQLSTATEs.
pub fn is_unavailable(e: &Error) -> bool {
    match e {
        Error::Io(_)
        | Error::Tls(_)
        | Error::Protocol(_)
        | Error::PoolTimedOut
        | Error::PoolClosed
        | Error::WorkerCrashed => true,
        Error::Database(db) => db.code().is_some_and(|c| {
            // 08: connection exception; 57P01-57P03: admin/crash shutdown, cannot connect
            // now; 53300: too many connections.
            c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

/// Whether `e` is the gate's own refusal (the database was already known to be down, and the
/// gate reported that once): callers log such errors quietly instead of once per request.
pub fn is_gated(e: &Error) -> bool {
    matches!(e, Error::Io(io) if io.kind() == std::io::ErrorKind::NotConnected && io.to_string().starts_with(DOWN))
}

fn down_error(reason: &str) -> Error {
    Error::Io(std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        format!("{DOWN} ({reason}); failing fast until it answers again"),
    ))
}

/// How the gate watches the database.
#[derive(Debug, Clone, Copy)]
pub struct GateConfig {
    /// How often the probe pings the database (and, while it is down, tries to reconnect).
    pub probe_interval: Duration,
    /// A ping or connection attempt that takes longer counts as the database being down.
    pub probe_timeout: Duration,
}

/// The database's availability, shared by a pool's users.
#[derive(Debug)]
pub struct Gate {
    down: watch::Sender<bool>,
    reason: Mutex<(String, Option<Instant>)>,
    closed: AtomicBool,
    cfg: GateConfig,
}

impl Gate {
    fn new(cfg: GateConfig) -> Arc<Self> {
        Arc::new(Self {
            down: watch::channel(false).0,
            reason: Mutex::new((String::new(), None)),
            closed: AtomicBool::new(false),
            cfg,
        })
    }

    /// Whether the database is known to be down now.
    pub fn is_down(&self) -> bool {
        *self.down.borrow()
    }

    /// Why it is down and for how long, when it is.
    pub fn down_for(&self) -> Option<(String, Duration)> {
        let r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        match (self.is_down(), &r.1) {
            (true, Some(since)) => Some((r.0.clone(), since.elapsed())),
            _ => None,
        }
    }

    fn admit(&self) -> Result<(), Error> {
        if self.is_down() {
            let reason = self
                .reason
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .0
                .clone();
            return Err(down_error(&reason));
        }
        Ok(())
    }

    /// Marks the database down (once per outage: logs, cancels waiting queries).
    fn trip(&self, reason: String) {
        let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if self.down.send_if_modified(|d| !std::mem::replace(d, true)) {
            tracing::warn!(
                reason,
                "database unavailable: failing fast until it answers again"
            );
            *r = (reason, Some(Instant::now()));
        }
    }

    fn recover(&self) {
        let r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if self.down.send_if_modified(|d| std::mem::replace(d, false)) {
            let after = r.1.map(|s| s.elapsed()).unwrap_or_default();
            tracing::info!(?after, "database answering again");
        }
    }

    fn observe<T>(&self, r: &Result<T, Error>) {
        if let Err(e) = r
            && is_unavailable(e)
            && !is_gated(e)
        {
            self.trip(e.to_string());
        }
    }

    /// Runs `op` unless the database is down; cancels it if the database goes down while it
    /// waits; trips the gate if it fails for want of a database.
    async fn run<T>(&self, op: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        self.admit()?;
        let mut down = self.down.subscribe();
        let r = tokio::select! {
            r = op => r,
            _ = down.wait_for(|d| *d) => Err(down_error("went away while this query waited")),
        };
        self.observe(&r);
        r
    }

    /// [`Gate::run`] for each item of a stream.
    fn run_stream<'e, T: Send + 'e>(
        self: Arc<Self>,
        inner: BoxStream<'e, Result<T, Error>>,
    ) -> BoxStream<'e, Result<T, Error>> {
        if let Err(e) = self.admit() {
            return stream::once(async move { Err(e) }).boxed();
        }
        stream::unfold(Some((inner, self)), |state| async move {
            let (mut inner, gate) = state?;
            let item = gate.run(async { inner.next().await.transpose() }).await;
            match item {
                Ok(Some(v)) => Some((Ok(v), Some((inner, gate)))),
                Ok(None) => None,
                // The stream ends after its error.
                Err(e) => Some((Err(e), None)),
            }
        })
        .boxed()
    }
}

/// A pool behind a [`Gate`].
#[derive(Debug)]
pub struct Gated<DB: Database> {
    pool: Pool<DB>,
    gate: Arc<Gate>,
}

impl<DB: Database> Clone for Gated<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            gate: self.gate.clone(),
        }
    }
}

impl<DB: Database> std::ops::Deref for Gated<DB> {
    type Target = Pool<DB>;

    /// The pool itself, ungated (closing, sizes, migrations).
    fn deref(&self) -> &Pool<DB> {
        &self.pool
    }
}

impl<DB: Database> Gated<DB> {
    /// Puts `pool` behind a new gate. With `probe`, a task pings the database on a
    /// connection of its own every `probe_interval` for as long as the pool is open.
    pub fn new(pool: Pool<DB>, cfg: GateConfig, probe: bool) -> Self {
        let gated = Self {
            pool,
            gate: Gate::new(cfg),
        };
        if probe {
            tokio::spawn(probe_loop(
                gated.pool.connect_options(),
                Arc::downgrade(&gated.gate),
            ));
        }
        gated
    }

    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    /// Closes the pool and stops the probe.
    pub async fn close(&self) {
        self.gate.closed.store(true, Ordering::SeqCst);
        self.pool.close().await;
    }

    /// Starts a transaction, unless the database is down.
    pub async fn begin(&self) -> Result<Transaction<'static, DB>, Error> {
        self.gate.run(self.pool.begin()).await
    }
}

/// Pings on a dedicated connection; marks the gate down when a ping or reconnection fails
/// or takes longer than `probe_timeout`, and up on the first success after that. Ends when
/// the pool is closed or dropped.
async fn probe_loop<O>(opts: Arc<O>, gate: Weak<Gate>)
where
    O: ConnectOptions,
    O::Connection: Sized,
{
    let Some(GateConfig {
        probe_interval,
        probe_timeout,
    }) = gate.upgrade().map(|g| g.cfg)
    else {
        return;
    };
    let mut conn: Option<O::Connection> = None;
    let mut tick = tokio::time::interval(probe_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(gate) = gate.upgrade().filter(|g| !g.closed.load(Ordering::SeqCst)) else {
            break;
        };
        let attempt = async {
            match conn.as_mut() {
                Some(c) => c.ping().await,
                None => {
                    let mut c = opts.connect().await?;
                    c.ping().await?;
                    conn = Some(c);
                    Ok(())
                }
            }
        };
        match tokio::time::timeout(probe_timeout, attempt).await {
            Ok(Ok(())) => gate.recover(),
            Ok(Err(e)) => {
                // A ping asks nothing of the data: any failure is about reaching the server.
                conn = None;
                gate.trip(format!("probe: {e}"));
            }
            Err(_) => {
                conn = None;
                gate.trip(format!("probe: no answer within {probe_timeout:?}"));
            }
        }
    }
    if let Some(c) = conn {
        let _ = tokio::time::timeout(probe_timeout, c.close()).await;
    }
}

impl<'p, DB: Database> Executor<'p> for &'p Gated<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    type Database = DB;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<DB::QueryResult, DB::Row>, Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, DB>,
    {
        let gate = self.gate.clone();
        gate.run_stream((&self.pool).fetch_many(query))
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<DB::Row>, Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, DB>,
    {
        let gate = self.gate.clone();
        let op = (&self.pool).fetch_optional(query);
        Box::pin(async move { gate.run(op).await })
    }

    fn prepare_with<'e>(
        self,
        sql: SqlStr,
        parameters: &'e [DB::TypeInfo],
    ) -> BoxFuture<'e, Result<DB::Statement, Error>>
    where
        'p: 'e,
    {
        let gate = self.gate.clone();
        let op = (&self.pool).prepare_with(sql, parameters);
        Box::pin(async move { gate.run(op).await })
    }

    fn describe<'e>(self, sql: SqlStr) -> BoxFuture<'e, Result<Describe<DB>, Error>>
    where
        'p: 'e,
    {
        let gate = self.gate.clone();
        let op = (&self.pool).describe(sql);
        Box::pin(async move { gate.run(op).await })
    }
}
