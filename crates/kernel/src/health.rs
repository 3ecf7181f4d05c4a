//! K4 health: liveness (`/healthz`, the process answers) and readiness (`/readyz`, every
//! registered check passes within its timeout and the service is not draining).

use async_trait::async_trait;
use axum::{Json, http::StatusCode, response::IntoResponse, response::Response};
use serde_json::json;
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

/// One dependency the service needs in order to serve (database, cache, bus, registry…).
#[async_trait]
pub trait HealthCheck: Send + Sync {
    /// A short stable name, shown when the check fails (`database`).
    fn name(&self) -> &str;
    /// `Err` with a short reason when the dependency cannot be used. The reason is shown to
    /// whoever calls `/readyz`, so it must hold no secret.
    async fn check(&self) -> Result<(), String>;
}

/// The readiness state of one service.
#[derive(Clone)]
pub struct Readiness {
    checks: Arc<Vec<Arc<dyn HealthCheck>>>,
    timeout: Duration,
    draining: Arc<AtomicBool>,
}

/// The outcome of running every check.
#[derive(Debug)]
pub struct Report {
    pub ready: bool,
    pub draining: bool,
    pub results: Vec<(String, Result<(), String>)>,
}

impl Readiness {
    pub fn new(checks: Vec<Arc<dyn HealthCheck>>, timeout: Duration) -> Self {
        Self {
            checks: Arc::new(checks),
            timeout,
            draining: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Marks the service as shutting down: readiness fails from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub async fn report(&self) -> Report {
        let runs = self.checks.iter().map(|c| {
            let c = c.clone();
            let timeout = self.timeout;
            async move {
                let result = match tokio::time::timeout(timeout, c.check()).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("no answer within {timeout:?}")),
                };
                (c.name().to_owned(), result)
            }
        });
        let results = futures_util::future::join_all(runs).await;
        let draining = self.draining.load(Ordering::SeqCst);
        let ready = !draining && results.iter().all(|(_, r)| r.is_ok());
        Report {
            ready,
            draining,
            results,
        }
    }

    /// The `/readyz` response: 200 when ready, else 503 naming what failed.
    pub async fn response(&self) -> Response {
        let report = self.report().await;
        let mut checks = serde_json::Map::new();
        let mut failing = Vec::new();
        for (name, result) in &report.results {
            match result {
                Ok(()) => {
                    checks.insert(name.clone(), json!({"status": "ok"}));
                }
                Err(reason) => {
                    failing.push(name.clone());
                    checks.insert(name.clone(), json!({"status": "failing", "reason": reason}));
                }
            }
        }
        if report.draining {
            failing.push("shutdown".to_owned());
        }
        let status = if report.ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let body = json!({
            "status": if report.ready { "ready" } else { "unavailable" },
            "failing": failing,
            "checks": checks,
        });
        (status, Json(body)).into_response()
    }
}

/// The `/healthz` response.
pub fn liveness() -> Response {
    Json(json!({"status": "ok"})).into_response()
}
