//! Provider simulator: OpenAI- and Anthropic-compatible HTTP server with scripted latency,
//! errors, rate limits, outages and prices.
//!
//! One server hosts many simulated providers; provider `P` answers at `http://HOST:PORT/P/v1/…`
//! (`chat/completions` and `models` for OpenAI, `messages` and `models` for Anthropic). What each
//! provider does is set by a [`Scenario`]. Completions are deterministic: the text is a function
//! of the model id, the prompt and the scenario's seed, and streamed (`stream: true`), JSON-mode,
//! tool-call and `n`-choice answers are built from that same text (`docs/simulator.md`).
//! Each provider keeps a prompt cache (OpenAI's automatic prefix caching, Anthropic's
//! `cache_control` breakpoints) and reports cached tokens in its usage as the real API does.
//! `GET /_sim/stats` answers every provider's counters and its bill (tokens by kind and dollars
//! at the scenario's prices) as JSON (for tests that drive the simulator as a separate process).
//!
//! A provider with a `batch` section also serves its batch API (OpenAI `files` and `batches`,
//! Anthropic `messages/batches`), whose batches finish on a simulated clock; one with `flex`
//! serves OpenAI's `service_tier: "flex"` from a capacity of its own.

mod anthropic;
mod anthropic_batch;
mod batch;
mod bill;
mod cache;
mod limit_headers;
mod limiter;
mod openai;
mod openai_batch;
mod reply;
mod scenario;
mod schema;
mod server;
mod sse;
mod text;

pub use scenario::{
    Chaos, Scenario, SimBatch, SimCache, SimFlex, SimKind, SimPrice, SimProvider, Window,
};

use server::SimState;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Errors of the simulator: bad scenario files, or a port it cannot bind.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The scenario file is not valid TOML for a [`Scenario`].
    #[error("{file}: {source}")]
    Toml {
        /// The scenario's file name.
        file: String,
        /// What the TOML parser said.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// The scenario parses but makes no sense (duplicate names, probabilities above 1, …).
    #[error("{file}: {reason}")]
    Invalid {
        /// The scenario's file name.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// The listening socket could not be opened or served.
    #[error("simulator on {addr}: {source}")]
    Io {
        /// The address asked for.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Counters of one simulated provider's completion requests (model lists are not counted), of
/// its batches and flex tier, and its bill.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct ProviderStats {
    /// Completion requests received.
    pub requests: u64,
    /// Answered with a completion.
    pub ok: u64,
    /// Answered 429 (token buckets, concurrency, rate-limited windows).
    pub rate_limited: u64,
    /// Answered with any other error status (401, 400, 404, injected errors, outages) or a
    /// malformed or huge 200 (`chaos`).
    pub errors: u64,
    /// Left hanging (`chaos.hang`); the client usually gives up before any answer.
    pub hung: u64,
    /// Batches created (a batch whose input failed validation counts too).
    pub batches_created: u64,
    /// Batches whose cancel took effect (asked before they ended).
    pub batches_cancelled: u64,
    /// Batch lines billed: the lines that succeeded, counted once when their batch ended
    /// (completed, cancelled or expired).
    pub batch_lines_billed: u64,
    /// Input tokens of the billed batch lines.
    pub batch_input_tokens: u64,
    /// Output tokens of the billed batch lines.
    pub batch_output_tokens: u64,
    /// Flex requests answered with a completion (also counted in `ok`).
    pub flex_requests: u64,
    /// Flex requests refused with 429 "Resource Unavailable" for want of capacity (also counted
    /// in `rate_limited`; not billed).
    pub flex_rejected: u64,
    /// Requests billed: completions answered 2xx (`ok`) plus billed batch lines. The token
    /// and dollar fields below sum over these; errors, 429s and unfinished lines cost nothing.
    pub billed_requests: u64,
    /// Billed prompt tokens neither read from nor written to the prompt cache (OpenAI:
    /// `prompt_tokens - cached_tokens`; Anthropic: `input_tokens`).
    pub input_tokens: u64,
    /// Billed prompt tokens read from the prompt cache (OpenAI
    /// `prompt_tokens_details.cached_tokens`, Anthropic `cache_read_input_tokens`).
    pub cached_tokens: u64,
    /// Billed prompt tokens written to the prompt cache, 5-minute and 1-hour (Anthropic
    /// `cache_creation_input_tokens`; always 0 for the OpenAI kind).
    pub cache_write_tokens: u64,
    /// Of `cache_write_tokens`, those written with a 1-hour lifetime.
    pub cache_write_1h_tokens: u64,
    /// Billed output tokens, every choice counted.
    pub output_tokens: u64,
    /// What the provider charged, in dollars: each billed request at its model's `prices`
    /// (uncached input, cache reads and writes, output), times the flex multiplier or less the
    /// batch discount; models without prices are free.
    pub bill_usd: schemas::Usd,
}

/// A running simulator. Dropping it leaves the server running until the runtime stops; call
/// [`SimHandle::shutdown`] to stop it.
pub struct SimHandle {
    addr: SocketAddr,
    state: Arc<SimState>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), std::io::Error>>,
}

impl SimHandle {
    /// The address the server listens on (the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API base URL of `provider`: `http://ADDR/<provider>/v1`.
    pub fn base_url(&self, provider: &str) -> String {
        format!("http://{}/{provider}/v1", self.addr)
    }

    /// The counters of `provider` so far (zeros for an unknown name).
    pub fn stats(&self, provider: &str) -> ProviderStats {
        self.state
            .providers
            .get(provider)
            .map(|p| p.stats())
            .unwrap_or_default()
    }

    /// Stops accepting connections, lets requests in progress finish, and waits for the server.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        if let Ok(Err(e)) = self.task.await {
            tracing::warn!(error = %e, "simulator server ended with an error");
        }
    }
}

/// Checks `scenario`, binds `addr` (port 0 picks a free port) and serves in a tokio task.
pub async fn start(scenario: Scenario, addr: SocketAddr) -> Result<SimHandle, SimError> {
    scenario.check().map_err(|reason| SimError::Invalid {
        file: "<scenario>".into(),
        reason,
    })?;
    let io = |source| SimError::Io { addr, source };
    let listener = listen(addr).map_err(io)?;
    let bound = listener.local_addr().map_err(io)?;
    let state = Arc::new(SimState::new(scenario));
    let app = server::router(Arc::clone(&state));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    Ok(SimHandle {
        addr: bound,
        state,
        stop,
        task,
    })
}

/// Serves `scenario` on `addr` until ctrl-c, logging each provider's base URL; for
/// `offpeak sim`.
pub async fn serve_forever(scenario: Scenario, addr: SocketAddr) -> Result<(), SimError> {
    let names: Vec<String> = scenario.providers.iter().map(|p| p.name.clone()).collect();
    let handle = start(scenario, addr).await?;
    for n in &names {
        tracing::info!(provider = %n, base_url = %handle.base_url(n), "simulating");
    }
    let waited = tokio::signal::ctrl_c().await;
    handle.shutdown().await;
    waited.map_err(|source| SimError::Io { addr, source })
}

/// A copy of `catalog` whose providers' `base_url`s point at the simulator behind `handle`
/// (key settings unchanged).
pub fn rewrite_catalog(catalog: &schemas::Catalog, handle: &SimHandle) -> schemas::Catalog {
    served_at(catalog, &format!("http://{}", handle.addr))
}

/// `catalog` with every provider pointed at a simulator serving at `base` (`http://host:port`,
/// e.g. `offpeak sim` started on the catalog): base URLs become `<base>/<provider>/v1`.
pub fn served_at(catalog: &schemas::Catalog, base: &str) -> schemas::Catalog {
    let base = base.trim_end_matches('/');
    let mut out = catalog.clone();
    for p in &mut out.providers {
        p.base_url = format!("{base}/{}/v1", p.name);
    }
    out
}

/// Binds `addr` with a deep accept queue: a client opening thousands of connections at once (a
/// worker starting with thousands of jobs in flight) would overflow the usual 1024 and wait out
/// SYN retries of a second or more. The kernel caps it at `net.core.somaxconn`.
fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(16_384)
}
