//! The HTTP API: append events, read projections with read-your-writes
//! consistency, follow commits live, scrape metrics.
//!
//! Start it with [`serve`] on a bound listener and an [`ApiState`] built from
//! a running [`Host`](crate::Host):
//!
//! ```no_run
//! # async fn demo(host: &refract::Host) -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7878").await?;
//! refract::serve(listener, refract::ApiState::from_host(host), std::future::pending()).await
//! # }
//! ```

mod admin;
mod aggregate;
mod auth;
mod change_log;
mod consistency;
mod console;
mod cors;
mod dead_letters;
mod error;
mod events;
mod layers;
mod metrics;
mod openapi;
mod params;
mod ready;
mod rebuild;
mod routes;
mod server;
mod sources;
mod sse;
mod verify;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};

pub use auth::{Access, Scope, Token, Tokens, TokensError, token_hash};
pub use cors::Cors;
pub use error::ApiError;
pub use metrics::Metrics;
pub use params::{DEFAULT_TIMEOUT, MAX_TIMEOUT};
pub use routes::{BODY_LIMIT, router};
pub use server::HEADER_TIMEOUT;

use crate::projection::compiles::Compiles;
use crate::projection::host::{Host, ProjectionStatus};
use crate::projection::runner::{CommitNotice, StoreErrors};
use crate::projection::verify::Verifier;
use crate::source::{EventSource, EventStore};
use crate::store::ReadModelStore;

/// What the API handlers share: the stores, the commit notices and the metrics.
/// Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
    /// How long a client has to send a request body (see [`ApiState::with_body_timeout`]).
    body_timeout: Duration,
    /// How long a client has to send a request's headers (see [`ApiState::with_header_timeout`]).
    header_timeout: Duration,
    /// The tokens requests must carry (none: the API is open).
    tokens: Arc<Tokens>,
    /// The origins browser apps may call from.
    cors: Arc<Cors>,
    /// The table sync sources the host runs, for `GET /sources` and `/metrics`.
    sources: Option<Arc<sources::Sources>>,
}

struct Inner {
    source: Arc<dyn EventSource>,
    /// `None`: the source is read-only and appends are refused.
    events: Option<Arc<dyn EventStore>>,
    models: Arc<dyn ReadModelStore>,
    notices: broadcast::Sender<CommitNotice>,
    metrics: Metrics,
    /// Store errors the host's runners are retrying.
    store_errors: StoreErrors,
    /// Set when the server shuts down, so open change feeds end.
    closing: watch::Sender<bool>,
    /// The host's module compiles: under way, and their times.
    compiles: Compiles,
    /// The host's verifier; none when the API serves bare stores.
    verifier: Option<Verifier>,
}

impl ApiState {
    /// State over the host's stores and notices. Starts the metrics
    /// collector, so it must be called inside a Tokio runtime.
    pub fn from_host(host: &Host) -> Self {
        Self::build(
            host.source(),
            host.events(),
            host.models(),
            host.notices(),
            host.store_errors(),
            host.compiles(),
            Some(host.verifier()),
        )
    }

    /// State over explicit stores and a commit-notice sender.
    pub fn new(
        events: Arc<dyn EventStore>,
        models: Arc<dyn ReadModelStore>,
        notices: broadcast::Sender<CommitNotice>,
    ) -> Self {
        Self::build(events.clone(), Some(events), models, notices, StoreErrors::default(), Compiles::default(), None)
    }

    /// State over a read-only event source: reads, queries and consistency
    /// waits work; appends answer 405 naming the reason.
    pub fn read_only(
        source: Arc<dyn EventSource>,
        models: Arc<dyn ReadModelStore>,
        notices: broadcast::Sender<CommitNotice>,
    ) -> Self {
        Self::build(source, None, models, notices, StoreErrors::default(), Compiles::default(), None)
    }

    fn build(
        source: Arc<dyn EventSource>,
        events: Option<Arc<dyn EventStore>>,
        models: Arc<dyn ReadModelStore>,
        notices: broadcast::Sender<CommitNotice>,
        store_errors: StoreErrors,
        compiles: Compiles,
        verifier: Option<Verifier>,
    ) -> Self {
        let metrics = Metrics::follow(notices.subscribe());
        let closing = watch::channel(false).0;
        let inner =
            Arc::new(Inner { source, events, models, notices, metrics, store_errors, closing, compiles, verifier });
        Self {
            inner,
            body_timeout: layers::BODY_TIMEOUT,
            header_timeout: server::HEADER_TIMEOUT,
            tokens: Arc::default(),
            cors: Arc::default(),
            sources: None,
        }
    }

    /// Requires a token on every route but `/health` and `/openapi.json`,
    /// with the scope the route table names. No tokens (the default): the
    /// API is open.
    pub fn with_tokens(mut self, tokens: Tokens) -> Self {
        self.tokens = Arc::new(tokens);
        self
    }

    /// Lets browser apps on these origins call the API (CORS).
    pub fn with_cors(mut self, cors: Cors) -> Self {
        self.cors = Arc::new(cors);
        self
    }

    fn tokens(&self) -> Arc<Tokens> {
        self.tokens.clone()
    }

    fn cors(&self) -> Arc<Cors> {
        self.cors.clone()
    }

    /// How long a client has, from the end of its request headers, to send
    /// the whole body; after that it gets 408 and the connection is closed.
    /// The default, 30 s, lets the largest body ([`BODY_LIMIT`]) arrive at
    /// about 0.5 MiB/s.
    pub fn with_body_timeout(mut self, timeout: Duration) -> Self {
        self.body_timeout = timeout;
        self
    }

    /// How long a client has to send a request's headers, from their first
    /// byte; after that the connection is closed without an answer (there
    /// is no request to answer yet). The default is [`HEADER_TIMEOUT`].
    pub fn with_header_timeout(mut self, timeout: Duration) -> Self {
        self.header_timeout = timeout;
        self
    }

    fn compiles(&self) -> &Compiles {
        &self.inner.compiles
    }

    /// Shows the table sync sources `configured` (state kept in `log`) in
    /// `GET /sources` and `/metrics`.
    pub fn with_sources(mut self, log: Arc<dyn crate::SyncLog>, configured: Vec<crate::SourceConfig>) -> Self {
        self.sources = Some(Arc::new(sources::Sources::new(log, configured)));
        self
    }

    /// Every source's status; none when the host syncs no tables.
    async fn source_status(&self) -> Result<Vec<crate::SourceStatus>, ApiError> {
        match &self.sources {
            Some(s) => s.status().await,
            None => Ok(Vec::new()),
        }
    }

    fn body_timeout(&self) -> Duration {
        self.body_timeout
    }

    fn source(&self) -> &Arc<dyn EventSource> {
        &self.inner.source
    }

    /// The event store appends go to, or the error for a read-only source.
    fn appender(&self) -> Result<&Arc<dyn EventStore>, ApiError> {
        self.inner.events.as_ref().ok_or(ApiError::ReadOnlySource)
    }

    fn models(&self) -> &Arc<dyn ReadModelStore> {
        &self.inner.models
    }

    /// The host's verifier, or the error for an API that serves no host.
    fn verifier(&self) -> Result<&Verifier, ApiError> {
        self.inner.verifier.as_ref().ok_or_else(|| {
            ApiError::Conflict(
                "this API serves no host that runs projections: verify with `refract verify NAME`".into(),
            )
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<CommitNotice> {
        self.inner.notices.subscribe()
    }

    fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    fn closing(&self) -> watch::Receiver<bool> {
        self.inner.closing.subscribe()
    }

    fn store_errors(&self) -> &StoreErrors {
        &self.inner.store_errors
    }

    /// The registry's status, with the store errors being retried now.
    async fn status(&self) -> Result<Vec<ProjectionStatus>, ApiError> {
        let mut status = crate::projection::host::status(self.source().as_ref(), self.models().as_ref()).await?;
        let errors = self.store_errors().snapshot();
        for s in &mut status {
            let key = crate::store::ModelKey { projection: s.name.clone(), generation: s.generation };
            s.store_error = errors.get(&key).cloned();
        }
        Ok(status)
    }
}

/// Serves the API on `listener` until `shutdown` completes, then ends open
/// change feeds and waits for in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let closing = state.inner.closing.clone();
    let header_timeout = state.header_timeout;
    server::serve(listener, router(state), header_timeout, shutdown, move || {
        closing.send_replace(true);
    })
    .await
}
