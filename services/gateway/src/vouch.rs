//! What the gateway vouches for to the services behind it: every forwarded request carries
//! the gateway's service token for the target service (`x-plt-service-token`) and the client
//! address the gateway determined (`x-plt-client-ip`, after `gateway.trusted_proxies`).
//! A service that verifies the token can believe the address — clients cannot forge either,
//! since the gateway removes every `x-plt-*` header they send. Auth's sign-in throttling
//! counts per real client this way, not per gateway.
//!
//! Tokens come from the gateway's service credentials (issued by auth, cached there until
//! half their lifetime); here each is kept as a ready header value per service and asked
//! for again every [`REFRESH`], in the background, so a request never waits for one. Until
//! the first token for a service arrives its requests go without (and the service sees only
//! the gateway's own address).

use http::HeaderValue;
use plt_contracts::service_identity::ServiceCredentials;
use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

/// How often a cached header is renewed from the credentials (well within a token's life).
const REFRESH: Duration = Duration::from_secs(10);

struct Held {
    value: HeaderValue,
    fetched: Instant,
}

pub struct Vouch {
    credentials: Option<Arc<dyn ServiceCredentials>>,
    headers: RwLock<HashMap<String, Held>>,
    fetching: Mutex<HashSet<String>>,
}

impl Vouch {
    pub fn new(credentials: Option<Arc<dyn ServiceCredentials>>) -> Arc<Self> {
        Arc::new(Self {
            credentials,
            headers: RwLock::new(HashMap::new()),
            fetching: Mutex::new(HashSet::new()),
        })
    }

    /// The gateway's service token for `service` as a header value, if one is at hand;
    /// starts fetching a new one when it is missing or due.
    pub fn token(self: &Arc<Self>, service: &str) -> Option<HeaderValue> {
        let (value, due) = {
            let headers = self.headers.read().unwrap_or_else(|p| p.into_inner());
            match headers.get(service) {
                Some(h) => (Some(h.value.clone()), h.fetched.elapsed() >= REFRESH),
                None => (None, true),
            }
        };
        if due {
            self.fetch(service);
        }
        value
    }

    /// Fetches a token for `service` in the background (one fetch per service at a time).
    pub fn fetch(self: &Arc<Self>, service: &str) {
        let Some(creds) = self.credentials.clone() else {
            return;
        };
        if !self
            .fetching
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(service.to_owned())
        {
            return;
        }
        let me = self.clone();
        let service = service.to_owned();
        tokio::spawn(async move {
            match creds.token(&service).await {
                Ok(token) => match HeaderValue::from_str(token.expose()) {
                    Ok(mut value) => {
                        value.set_sensitive(true);
                        me.headers
                            .write()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(
                                service.clone(),
                                Held {
                                    value,
                                    fetched: Instant::now(),
                                },
                            );
                    }
                    Err(_) => tracing::warn!(%service, "service token is not a valid header value"),
                },
                // The credentials log why; the cached header (if any) stays until it is
                // replaced, and auth refuses it once expired.
                Err(e) => {
                    tracing::debug!(%service, error = %e, "no service token to vouch with yet")
                }
            }
            me.fetching
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&service);
        });
    }
}
