//! The HTTP side: routes `/<provider>/v1/…` to the provider's state and runs every request
//! through the same gauntlet a real provider applies — key, request validation, model,
//! outage and rate-limited windows, concurrency, token buckets, injected errors, latency — before
//! the dialect module (OpenAI or Anthropic) writes the answer in its API's shape.

use crate::batch::{LineResult, Store};
use crate::bill::{self, Tally};
use crate::cache::{PromptCache, PromptShape, PromptTokens};
use crate::limiter::{retry_after_secs, InFlight, Limits, Snapshot};
use crate::reply::{self, Answer, Reply};
use crate::scenario::{Scenario, SimKind, SimProvider};
use crate::text::{self, fnv1a, SplitMix};
use crate::{anthropic, anthropic_batch, limit_headers, openai, openai_batch, sse, ProviderStats};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A request the dialect module has read and checked.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub model: String,
    /// The text of every message (and of the Anthropic `system` prompt), in order.
    pub texts: Vec<String>,
    /// `max_tokens` or `max_completion_tokens`, else the default.
    pub max_tokens: u64,
    /// What the answer must be: text, JSON or a tool call.
    pub reply: Reply,
    /// Answers asked for (OpenAI's `n`; always 1 for Anthropic).
    pub n: u64,
    /// `stream: true`: the answer is sent as server-sent events.
    pub stream: bool,
    /// OpenAI's `stream_options.include_usage`: a last chunk carries the usage.
    pub include_usage: bool,
    /// OpenAI's `service_tier: "flex"`.
    pub flex: bool,
    /// What the prompt cache keys on beyond the texts (roles, tools, Anthropic breakpoints).
    pub shape: PromptShape,
}

/// Why a request is not answered with a completion.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// Missing or wrong API key.
    Unauthorized,
    /// Malformed request; the message says what is wrong.
    BadRequest(String),
    /// The model id is not served by this provider.
    ModelNotFound(String),
    /// A rate limit refused the request; retry after this many whole seconds.
    RateLimited { retry_after_s: u64, what: String },
    /// A scripted error status (injected error or outage).
    Status(u16),
    /// No such route.
    NotFound(String),
    /// A 200 whose body is not JSON (scenario `chaos.malformed`).
    Malformed,
    /// A 200 with a body of this many bytes (scenario `chaos.huge`).
    Huge(u64),
    /// The flex tier has no capacity now (OpenAI's 429 "Resource Unavailable", not billed).
    FlexUnavailable,
}

/// What the server knows about one provider while running.
pub(crate) struct ProviderState {
    pub spec: SimProvider,
    errors: Vec<(u16, f64)>,
    limits: Mutex<Limits>,
    in_flight: Arc<InFlight>,
    rng: Mutex<SplitMix>,
    /// The flex tier's own limits, apart from the realtime ones.
    flex_limits: Mutex<Limits>,
    flex_in_flight: Arc<InFlight>,
    /// Batches and files (batch API).
    batches: Mutex<Store>,
    /// Cached prompt prefixes (realtime and batch lines alike).
    cache: Mutex<PromptCache>,
    /// The realtime answers billed (batch lines are billed in `batches`).
    bill: Mutex<Tally>,
    /// The server's start, for batch times.
    start: Instant,
    seed: u64,
    requests: AtomicU64,
    ok: AtomicU64,
    rate_limited: AtomicU64,
    failed: AtomicU64,
    hung: AtomicU64,
    flex_ok: AtomicU64,
    flex_rejected: AtomicU64,
}

impl ProviderState {
    /// A snapshot of the counters (batches that ended by now are settled first, so their
    /// lines are billed).
    pub(crate) fn stats(&self) -> ProviderStats {
        let (created, cancelled, batch) = self.with_batches(|s| (s.created, s.cancelled, s.billed));
        let bill = lock(&self.bill).plus(batch);
        ProviderStats {
            requests: self.requests.load(Ordering::SeqCst),
            ok: self.ok.load(Ordering::SeqCst),
            rate_limited: self.rate_limited.load(Ordering::SeqCst),
            errors: self.failed.load(Ordering::SeqCst),
            hung: self.hung.load(Ordering::SeqCst),
            batches_created: created,
            batches_cancelled: cancelled,
            batch_lines_billed: batch.requests,
            batch_input_tokens: batch.prompt_tokens(),
            batch_output_tokens: batch.output_tokens,
            flex_requests: self.flex_ok.load(Ordering::SeqCst),
            flex_rejected: self.flex_rejected.load(Ordering::SeqCst),
            billed_requests: bill.requests,
            input_tokens: bill.input_tokens,
            cached_tokens: bill.cached_tokens,
            cache_write_tokens: bill.cache_write_5m_tokens + bill.cache_write_1h_tokens,
            cache_write_1h_tokens: bill.cache_write_1h_tokens,
            output_tokens: bill.output_tokens,
            bill_usd: bill.usd,
        }
    }

    /// How `req`'s prompt tokens split between this provider's prompt cache and plain input
    /// now; stores the prefixes the request caches, readable by others `ready_in` seconds from
    /// now (once this request's prompt is processed).
    pub(crate) fn cached(&self, req: &Parsed, ready_in: f64) -> PromptTokens {
        let now = self.now_s();
        let mut c = lock(&self.cache);
        let cfg = &self.spec.cache;
        match self.spec.kind {
            SimKind::Openai => c.automatic(cfg, &req.texts, &req.shape, now, ready_in),
            SimKind::Anthropic => c.explicit(cfg, &req.texts, &req.shape, now, ready_in),
        }
    }

    /// The charge for an answer to `req` at its model's prices, times `factor`.
    fn charge(
        &self,
        req: &Parsed,
        prompt: &PromptTokens,
        output_tokens: u64,
        factor: f64,
    ) -> schemas::Usd {
        let price = self.spec.prices.get(&req.model);
        bill::cost(price, self.spec.kind, prompt, output_tokens, factor)
    }

    /// Seconds since the server started.
    pub(crate) fn now_s(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// The scenario's seed.
    pub(crate) fn seed(&self) -> u64 {
        self.seed
    }

    /// Runs `f` on this provider's batch store after settling the batches that have ended.
    pub(crate) fn with_batches<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        let mut store = self.batches.lock().unwrap_or_else(PoisonError::into_inner);
        let kind = self.spec.kind;
        store.settle(self.now_s(), |b, files, age| {
            if kind == SimKind::Openai {
                openai_batch::write_files(b, files, age);
            }
        });
        f(&mut store)
    }

    /// Bills a realtime answer to `req` (answered 2xx).
    fn bill(&self, req: &Parsed, prompt: &PromptTokens, output_tokens: u64, factor: f64) {
        let usd = self.charge(req, prompt, output_tokens, factor);
        lock(&self.bill).add(prompt, output_tokens, usd);
    }

    /// A uniform number in [0, 1) from this provider's seeded generator.
    fn uniform(&self) -> f64 {
        let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The whole server's state.
pub(crate) struct SimState {
    start: Instant,
    seed: u64,
    next_id: AtomicU64,
    pub providers: HashMap<String, Arc<ProviderState>>,
}

impl SimState {
    pub(crate) fn new(scenario: Scenario) -> SimState {
        let now = Instant::now();
        let seed = scenario.seed.unwrap_or(0);
        let providers = scenario
            .providers
            .into_iter()
            .map(|spec| {
                let state = ProviderState {
                    errors: spec.error_table(),
                    limits: Mutex::new(Limits::new(spec.rpm, spec.tpm, now)),
                    in_flight: Arc::new(InFlight::default()),
                    rng: Mutex::new(SplitMix::new(seed ^ fnv1a(&[spec.name.as_bytes()]))),
                    flex_limits: Mutex::new(Limits::new(
                        spec.flex.as_ref().and_then(|f| f.rpm),
                        None,
                        now,
                    )),
                    flex_in_flight: Arc::new(InFlight::default()),
                    batches: Mutex::new(Store::default()),
                    cache: Mutex::new(PromptCache::default()),
                    bill: Mutex::new(Tally::default()),
                    start: now,
                    seed,
                    requests: AtomicU64::new(0),
                    ok: AtomicU64::new(0),
                    rate_limited: AtomicU64::new(0),
                    failed: AtomicU64::new(0),
                    hung: AtomicU64::new(0),
                    flex_ok: AtomicU64::new(0),
                    flex_rejected: AtomicU64::new(0),
                    spec,
                };
                (state.spec.name.clone(), Arc::new(state))
            })
            .collect();
        SimState {
            start: now,
            seed,
            next_id: AtomicU64::new(1),
            providers,
        }
    }

    /// A fresh id suffix, unique within this server.
    pub(crate) fn new_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::SeqCst);
        text::hex_id(&mut SplitMix::new(
            self.seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        ))
    }
}

/// The router for every provider of `state`.
pub(crate) fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/{provider}/v1/chat/completions", post(openai_chat))
        .route("/{provider}/v1/messages", post(anthropic_messages))
        .route("/{provider}/v1/models", get(models))
        .route("/_sim/stats", get(all_stats))
        .merge(openai_batch::routes())
        .merge(anthropic_batch::routes())
        .fallback(|| async { openai::failure(&Refusal::NotFound("Invalid URL".into())) })
        .layer(DefaultBodyLimit::max(32 * 1024 * 1024))
        .with_state(state)
}

async fn all_stats(State(st): State<Arc<SimState>>) -> Json<HashMap<String, crate::ProviderStats>> {
    Json(
        st.providers
            .iter()
            .map(|(name, p)| (name.clone(), p.stats()))
            .collect(),
    )
}

async fn openai_chat(
    State(st): State<Arc<SimState>>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    complete(&st, &provider, SimKind::Openai, &headers, &body).await
}

async fn anthropic_messages(
    State(st): State<Arc<SimState>>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    complete(&st, &provider, SimKind::Anthropic, &headers, &body).await
}

async fn models(
    State(st): State<Arc<SimState>>,
    Path(provider): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(p) = st.providers.get(&provider) else {
        return openai::failure(&Refusal::NotFound(format!("no provider {provider:?}")));
    };
    let kind = p.spec.kind;
    let result = if authorized(kind, &p.spec, &headers) {
        Ok(match kind {
            SimKind::Openai => openai::models(&p.spec),
            SimKind::Anthropic => anthropic::models(&p.spec),
        })
    } else {
        Err(Refusal::Unauthorized)
    };
    finish(&st, kind, result)
}

/// Serves one completion request and counts its outcome in the provider's stats.
async fn complete(
    st: &SimState,
    provider: &str,
    kind: SimKind,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let p = match st.providers.get(provider) {
        Some(p) if p.spec.kind == kind => p,
        _ => {
            let f = Refusal::NotFound(format!(
                "no {kind:?} provider {provider:?} in this simulator"
            ));
            return finish(st, kind, Err(f));
        }
    };
    p.requests.fetch_add(1, Ordering::SeqCst);
    let mut limits = None;
    let result = serve(st, p, kind, headers, body, &mut limits).await;
    if let Err(Refusal::FlexUnavailable) = &result {
        p.flex_rejected.fetch_add(1, Ordering::SeqCst);
    }
    match &result {
        Ok(_) => &p.ok,
        Err(Refusal::FlexUnavailable) => &p.rate_limited,
        Err(Refusal::RateLimited { .. }) => &p.rate_limited,
        Err(_) => &p.failed,
    }
    .fetch_add(1, Ordering::SeqCst);
    let mut resp = finish(st, kind, result);
    if let Some((snap, at)) = limits {
        limit_headers::insert(resp.headers_mut(), kind, &snap, at);
    }
    resp
}

/// The buckets of `limits` now, with the wall clock they were read at.
fn snapshot_of(limits: &mut Limits, now: Instant) -> (Snapshot, DateTime<Utc>) {
    (limits.snapshot(now), Utc::now())
}

pub(crate) fn authorized(kind: SimKind, spec: &SimProvider, headers: &HeaderMap) -> bool {
    let Some(key) = &spec.api_key else {
        return true;
    };
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Anthropic takes `x-api-key`, and recent official clients send the key as a bearer token.
    let x_api_key = match kind {
        SimKind::Openai => None,
        SimKind::Anthropic => headers.get("x-api-key").and_then(|v| v.to_str().ok()),
    };
    [bearer, x_api_key]
        .into_iter()
        .flatten()
        .any(|g| g.trim() == key)
}

/// Serves one completion request. Once the request reaches the rate limits, `limits` is set to
/// the buckets it met (right after its admission or refusal), for the answer's headers.
async fn serve(
    st: &SimState,
    p: &ProviderState,
    kind: SimKind,
    headers: &HeaderMap,
    body: &[u8],
    limits: &mut Option<(Snapshot, DateTime<Utc>)>,
) -> Result<Response, Refusal> {
    if !authorized(kind, &p.spec, headers) {
        return Err(Refusal::Unauthorized);
    }
    let req = match kind {
        SimKind::Openai => openai::parse(body)?,
        SimKind::Anthropic => anthropic::parse(headers, body)?,
    };
    if !p.spec.models.contains(&req.model) {
        return Err(Refusal::ModelNotFound(req.model));
    }
    let flex = if req.flex {
        let f = p
            .spec
            .flex
            .as_ref()
            .filter(|f| f.models.is_empty() || f.models.contains(&req.model));
        Some(f.ok_or_else(|| {
            Refusal::BadRequest(format!(
                "Invalid value for 'service_tier': flex is not available for model '{}'.",
                req.model
            ))
        })?)
    } else {
        None
    };
    let t = st.start.elapsed().as_secs_f64();
    if p.spec.outages.iter().any(|w| w.contains(t)) {
        return Err(Refusal::Status(503));
    }
    // Flex answers report the flex tier's own buckets.
    let buckets = if flex.is_some() {
        &p.flex_limits
    } else {
        &p.limits
    };
    if let Some(w) = p.spec.rate_limited.iter().find(|w| w.contains(t)) {
        *limits = Some(snapshot_of(
            &mut buckets.lock().unwrap_or_else(PoisonError::into_inner),
            Instant::now(),
        ));
        let left = Duration::from_secs_f64((w.to_s - t).max(0.0));
        return Err(Refusal::RateLimited {
            retry_after_s: retry_after_secs(left),
            what: "requests per min (RPM)".into(),
        });
    }
    let prompt_tokens = text::prompt_tokens(&req.texts);
    // Flex has its own capacity: the realtime limits neither admit nor count it.
    // Admission and the headers' snapshot under one lock: concurrent callers each see the
    // account as their own request left it.
    let slot = {
        let mut b = buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let admitted = if let Some(f) = flex {
            match InFlight::acquire(&p.flex_in_flight, Some(f.concurrency)) {
                Some(slot) if b.admit(0, now).is_ok() => Ok(slot),
                _ => Err(Refusal::FlexUnavailable),
            }
        } else {
            match InFlight::acquire(&p.in_flight, p.spec.concurrency) {
                None => Err(Refusal::RateLimited {
                    retry_after_s: 1,
                    what: "concurrent requests".into(),
                }),
                Some(slot) => b
                    .admit(prompt_tokens + req.max_tokens * req.n, now)
                    .map(|()| slot)
                    .map_err(|(wait, what)| Refusal::RateLimited {
                        retry_after_s: retry_after_secs(wait),
                        what: what.into(),
                    }),
            }
        };
        *limits = Some(snapshot_of(&mut b, now));
        admitted?
    };
    let mut roll = p.uniform();
    for (status, prob) in &p.errors {
        if roll < *prob {
            return Err(Refusal::Status(*status));
        }
        roll -= prob;
    }
    let chaos = &p.spec.chaos;
    if roll < chaos.hang {
        p.hung.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs_f64(chaos.hang_s)).await;
        return Err(Refusal::Status(504));
    }
    roll -= chaos.hang;
    if roll < chaos.malformed {
        return Err(Refusal::Malformed);
    }
    roll -= chaos.malformed;
    if roll < chaos.huge {
        return Err(Refusal::Huge(chaos.huge_bytes));
    }
    let answers: Vec<Answer> = (0..req.n)
        .map(|i| reply::answer(&req, st.seed, i))
        .collect();
    if req.flex {
        p.flex_ok.fetch_add(1, Ordering::SeqCst);
    }
    let jitter = p.spec.jitter * (2.0 * p.uniform() - 1.0);
    let base_ms = flex.and_then(|f| f.latency_ms).unwrap_or(p.spec.latency_ms);
    let first_ms = base_ms * (1.0 + jitter);
    // The prompt is processed by the first token: others read its prefixes from then on.
    let prompt = p.cached(&req, first_ms / 1000.0);
    let per_token_ms = p.spec.per_output_token_ms;
    let tokens: u64 = answers.iter().map(|a| a.output_tokens).sum();
    let factor = flex.map_or(1.0, |f| f.multiplier);
    if req.stream {
        // The base latency is the time to the first event; the tokens then arrive paced.
        sleep_ms(first_ms).await;
        let id = st.new_id();
        let frames = match kind {
            SimKind::Openai => openai::stream(&id, &req, &answers, &prompt),
            SimKind::Anthropic => anthropic::stream(&id, &req, &answers, &prompt),
        };
        let per_token = Duration::from_secs_f64(per_token_ms.max(0.0) / 1000.0);
        p.bill(&req, &prompt, tokens, factor);
        return Ok(sse::response(frames, per_token, slot));
    }
    sleep_ms(first_ms + per_token_ms * tokens as f64).await;
    let id = st.new_id();
    // Billed once answered, like `ok`: a client gone during the latency pays nothing.
    p.bill(&req, &prompt, tokens, factor);
    Ok(match kind {
        SimKind::Openai => openai::success(&id, &req, &answers, &prompt),
        SimKind::Anthropic => anthropic::success(&id, &req, &answers, &prompt),
    })
}

/// What the realtime endpoint would answer `body` (one batch line's request), without its
/// latency, rate limits or injected errors: a completion with its usage and its charge at the
/// batch price, or the error status and body (a malformed request, a model not served). The
/// line meets the provider's prompt cache as a realtime request would.
pub(crate) fn line_result(st: &SimState, p: &ProviderState, body: &Value) -> LineResult {
    let kind = p.spec.kind;
    let bytes = body.to_string().into_bytes();
    let parsed = match kind {
        SimKind::Openai => openai::parse(&bytes),
        SimKind::Anthropic => {
            let mut h = HeaderMap::new();
            h.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
            anthropic::parse(&h, &bytes)
        }
    };
    let req = match parsed.and_then(|r| {
        if p.spec.models.contains(&r.model) {
            Ok(r)
        } else {
            Err(Refusal::ModelNotFound(r.model))
        }
    }) {
        Ok(r) => r,
        Err(f) => {
            let (status, body) = match kind {
                SimKind::Openai => openai::error_body(&f),
                SimKind::Anthropic => anthropic::error_body(&f),
            };
            return LineResult::Err { status, body };
        }
    };
    let answers: Vec<Answer> = (0..req.n)
        .map(|i| reply::answer(&req, st.seed, i))
        .collect();
    let prompt = p.cached(&req, 0.0);
    let id = st.new_id();
    let body = match kind {
        SimKind::Openai => openai::completion(&id, &req, &answers, &prompt),
        SimKind::Anthropic => anthropic::message(&id, &req, &answers, &prompt),
    };
    let output_tokens = answers.iter().map(|a| a.output_tokens).sum();
    let discount = p.spec.batch.as_ref().map_or(0.0, |b| b.discount);
    LineResult::Ok {
        body,
        prompt,
        output_tokens,
        cost: p.charge(&req, &prompt, output_tokens, 1.0 - discount),
    }
}

/// The provider `provider` of `kind` if it offers a batch API, the caller holds its key and
/// no batch outage is on; else the refusal to answer.
pub(crate) fn batch_provider(
    st: &SimState,
    provider: &str,
    kind: SimKind,
    headers: &HeaderMap,
) -> Result<Arc<ProviderState>, Refusal> {
    let p = match st.providers.get(provider) {
        Some(p) if p.spec.kind == kind => p,
        _ => return Err(Refusal::NotFound("Invalid URL".into())),
    };
    if !authorized(kind, &p.spec, headers) {
        return Err(Refusal::Unauthorized);
    }
    let Some(b) = &p.spec.batch else {
        return Err(Refusal::NotFound("Invalid URL".into()));
    };
    let t = st.start.elapsed().as_secs_f64();
    if b.outages.iter().any(|w| w.contains(t)) {
        return Err(Refusal::Status(503));
    }
    Ok(Arc::clone(p))
}

/// Locks `m`, carrying on past a panic of another holder (the data are counters).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn sleep_ms(ms: f64) {
    if ms > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(ms / 1000.0)).await;
    }
}

/// Adds the headers every answer carries: the request id and, on 429, `Retry-After`.
pub(crate) fn finish(st: &SimState, kind: SimKind, result: Result<Response, Refusal>) -> Response {
    let (mut resp, retry) = match result {
        Ok(r) => (r, None),
        Err(f) => {
            let retry = match &f {
                Refusal::RateLimited { retry_after_s, .. } => Some(*retry_after_s),
                Refusal::Status(429) | Refusal::FlexUnavailable => Some(1),
                _ => None,
            };
            let r = match (&f, kind) {
                (Refusal::Malformed, _) => malformed(),
                (Refusal::Huge(n), _) => huge(*n),
                (_, SimKind::Openai) => openai::failure(&f),
                (_, SimKind::Anthropic) => anthropic::failure(&f),
            };
            (r, retry)
        }
    };
    let h = resp.headers_mut();
    if let Some(secs) = retry {
        h.insert("retry-after", HeaderValue::from(secs));
    }
    if let Ok(v) = HeaderValue::from_str(&format!("req_{}", st.new_id())) {
        h.insert(
            match kind {
                SimKind::Openai => "x-request-id",
                SimKind::Anthropic => "request-id",
            },
            v,
        );
    }
    resp
}

/// A JSON response with the given status.
pub(crate) fn json(status: u16, body: serde_json::Value) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, Json(body)).into_response()
}

/// A 200 whose JSON body stops half-way, as from a proxy that cut the connection.
fn malformed() -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        r#"{"id":"chatcmpl-broken","object":"chat.completion","choices":[{"index":0,"message":{"role":"assist"#,
    )
        .into_response()
}

/// A 200 of `bytes` bytes (the start of a JSON object, then padding), streamed in 64 KiB
/// chunks without a `Content-Length`, so nothing but reading it tells how big it is.
fn huge(bytes: u64) -> Response {
    const CHUNK: usize = 64 * 1024;
    let head = Bytes::from_static(br#"{"choices":[{"message":{"role":"assistant","content":""#);
    let pad = Bytes::from(vec![b'x'; CHUNK]);
    let mut left = bytes.saturating_sub(head.len() as u64);
    let mut chunks = vec![head];
    let stream = futures::stream::iter(std::iter::from_fn(move || {
        if let Some(h) = chunks.pop() {
            return Some(h);
        }
        if left == 0 {
            return None;
        }
        let n = left.min(CHUNK as u64) as usize;
        left -= n as u64;
        Some(pad.slice(..n))
    }))
    .map(Ok::<_, std::convert::Infallible>);
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}
