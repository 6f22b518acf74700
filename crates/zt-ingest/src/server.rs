//! The public HTTP API: native source endpoints, the Segment-compatible tracking API and
//! the schema registry read endpoints. The request pipeline, for every route:
//!
//! 1. authenticate the write key (HTTP Basic `key:`, `Bearer key`, or Segment's body
//!    `writeKey`) and check it belongs to the source;
//! 2. enforce the request limits and the key's rate limit;
//! 3. split the body into items and normalise each on its own;
//! 4. publish accepted events (skipping ids already published inside the dedup window)
//!    and a dead letter for every rejected item, and wait for the broker's acknowledgement
//!    of all of them;
//! 5. answer 200 listing rejected items by index, or 503 when anything was not
//!    acknowledged (the client retries; ids acknowledged meanwhile are deduplicated).
//!
//! A request refused as a whole (bad key, limits, malformed body) is also kept as one
//! dead letter, with personal data removed ([`crate::redact`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde_json::{Value, json};
use tracing::Instrument;
use zt_kafka::TopicsConfig;
use zt_model::pii::PiiHasher;
use zt_model::{DeadLetter, Source};

use crate::auth::{KeyRing, RateLimiter};
use crate::config::{IngestConfig, Mapping};
use crate::dedup::DedupWindow;
use crate::error::{Reason, Rejection};
use crate::fields::{Ctx, TimeFormat};
use crate::items::{
    self, BODY_TOO_LARGE, CONTENT_JSON, CONTENT_NDJSON, Item, parse_error, split_native,
    split_segment,
};
use crate::metrics::IngestMetrics;
use crate::publish::Publisher;
use crate::redact::{redact, redact_ndjson};
use crate::registry;

/// Shared state of the service.
#[derive(Debug)]
pub struct AppState {
    pub(crate) cfg: IngestConfig,
    pub(crate) topics: TopicsConfig,
    pub(crate) keys: KeyRing,
    pub(crate) limiter: RateLimiter,
    pub(crate) dedup: DedupWindow,
    pub(crate) hasher: PiiHasher,
    pub(crate) mappings: HashMap<Source, (Mapping, TimeFormat)>,
    pub(crate) publisher: Publisher,
    pub(crate) metrics: IngestMetrics,
    pub(crate) broker_ready: AtomicBool,
    /// The dedup window was read back from the event topics (`dedup::restore`) and the
    /// suppression list was read to its end.
    pub(crate) startup_loaded: AtomicBool,
    /// Erased persons and identifiers (`zt erase`): their events are acknowledged and not
    /// published.
    pub(crate) suppressions: zt_kafka::suppress::Suppressions,
}

/// The public router.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.cfg.max_batch_bytes.saturating_mul(4).max(64 * 1024);
    let mut r = Router::new().route("/v1/sources/{source}/events", post(native));
    for kind in ["track", "identify", "page", "screen", "alias", "group"] {
        r = r.route(
            &format!("/v1/{kind}"),
            post(move |st: State<Arc<AppState>>, h: HeaderMap, b: Bytes| {
                segment_call(st, h, b, kind)
            }),
        );
    }
    // analytics.js (Segment's browser SDK) posts to one-letter paths, with the write key in
    // the body and a text/plain content type; CORS headers let it call from any page.
    r.route(
        "/v1/t",
        post(|st: State<Arc<AppState>>, h: HeaderMap, b: Bytes| segment_call(st, h, b, "track")),
    )
    .route(
        "/v1/i",
        post(|st: State<Arc<AppState>>, h: HeaderMap, b: Bytes| segment_call(st, h, b, "identify")),
    )
    .route(
        "/v1/p",
        post(|st: State<Arc<AppState>>, h: HeaderMap, b: Bytes| segment_call(st, h, b, "page")),
    )
    .route(
        "/v1/s",
        post(|st: State<Arc<AppState>>, h: HeaderMap, b: Bytes| segment_call(st, h, b, "screen")),
    )
    .route(
        "/v1/a",
        post(|st: State<Arc<AppState>>, h: HeaderMap, b: Bytes| segment_call(st, h, b, "alias")),
    )
    .route(
        "/v1/g",
        post(|st: State<Arc<AppState>>, h: HeaderMap, b: Bytes| segment_call(st, h, b, "group")),
    )
    .route("/v1/b", post(segment_batch))
    .route("/v1/batch", post(segment_batch))
    .route("/schemas/ids/{id}", get(registry::schema_by_id))
    .route("/subjects", get(subjects))
    .route("/subjects/{subject}/versions", get(subject_versions))
    .route(
        "/subjects/{subject}/versions/{version}",
        get(subject_version),
    )
    .layer(DefaultBodyLimit::max(limit))
    .layer(axum::middleware::from_fn(cors))
    .with_state(state)
}

/// CORS for browser SDKs: any origin may post events (write keys, not origins, authorise
/// them); a preflight `OPTIONS` is answered with 204 before routing.
async fn cors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut resp = if req.method() == axum::http::Method::OPTIONS {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    for (name, value) in [
        (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        (header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST, OPTIONS"),
        (
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            "Authorization, Content-Type, Content-Encoding",
        ),
        (header::ACCESS_CONTROL_MAX_AGE, "86400"),
    ] {
        h.insert(name, header::HeaderValue::from_static(value));
    }
    resp
}

async fn subjects(State(st): State<Arc<AppState>>) -> Response {
    registry::list_subjects(&st.topics).await
}

async fn subject_versions(State(st): State<Arc<AppState>>, Path(s): Path<String>) -> Response {
    registry::versions(&st.topics, &s).await
}

async fn subject_version(
    State(st): State<Arc<AppState>>,
    Path((s, v)): Path<(String, String)>,
) -> Response {
    registry::version(&st.topics, &s, &v).await
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The write key of a request: Basic auth user (Segment style `key:`) or a Bearer token.
fn header_key(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    if let Some(b64) = v.strip_prefix("Basic ") {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let key = text.split_once(':').map(|(k, _)| k).unwrap_or(&text);
        return (!key.is_empty()).then(|| key.to_owned());
    }
    v.strip_prefix("Bearer ")
        .map(|k| k.trim().to_owned())
        .filter(|k| !k.is_empty())
}

/// What a request carries besides its body: when it arrived, the key it presented (kept
/// only to remove it from dead letters), and what a replay of its dead letters needs to
/// know about it: whether a native body was NDJSON, the call type of a single Segment
/// call.
#[derive(Debug)]
struct Meta {
    received_at: i64,
    key: Option<String>,
    ndjson: bool,
    call: Option<&'static str>,
}

impl Meta {
    /// The media type of a dead letter of this request: of the whole body, or of one item.
    fn content_type(&self, whole: bool) -> String {
        match self.call {
            // A single call: the item is the body, and the endpoint names its type.
            Some(kind) => items::call_content_type(kind),
            None if whole && self.ndjson => CONTENT_NDJSON.into(),
            None => CONTENT_JSON.into(),
        }
    }
}

/// The body, gunzipped when `Content-Encoding: gzip` (RudderStack's SDKs compress every
/// batch). The inflated size is capped at 8 MiB; a body that does not inflate is kept as
/// it is and then refused as malformed JSON.
fn decompress(headers: &HeaderMap, body: Bytes) -> Bytes {
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    if !gzip {
        return body;
    }
    use std::io::Read;
    let mut out = Vec::new();
    let mut dec = flate2::read::GzDecoder::new(&body[..]).take(8 * 1024 * 1024);
    match dec.read_to_end(&mut out) {
        Ok(_) => Bytes::from(out),
        Err(_) => body,
    }
}

/// A rejected item in the response.
fn item_json(index: usize, r: &Rejection) -> Value {
    json!({ "index": index, "reason": r.reason.as_str(), "field": r.field, "message": r.message })
}

fn error_response(status: StatusCode, reason: &str, message: &str) -> Response {
    let mut resp = (
        status,
        axum::Json(json!({ "success": false, "error": { "reason": reason, "message": message } })),
    )
        .into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
    }
    resp
}

fn unavailable() -> Response {
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "broker_unavailable",
        "the broker did not acknowledge; nothing was accepted, retry later",
    )
}

impl AppState {
    /// The dead letter of `raw`: the whole body (`whole`) or one item of it.
    fn dead_letter(
        &self,
        source: &str,
        r: &Rejection,
        raw: &[u8],
        meta: &Meta,
        whole: bool,
    ) -> DeadLetter {
        let renames = source
            .parse::<Source>()
            .ok()
            .and_then(|s| self.mappings.get(&s))
            .map(|(m, _)| &m.renames);
        let empty = Default::default();
        let kept = &raw[..raw.len().min(self.cfg.max_batch_bytes)];
        let renames = renames.unwrap_or(&empty);
        let original = if whole && meta.ndjson {
            redact_ndjson(kept, &self.hasher, renames, meta.key.as_deref())
        } else {
            redact(kept, &self.hasher, renames, meta.key.as_deref())
        };
        items::dead_letter(
            source,
            r,
            original,
            meta.content_type(whole),
            meta.received_at,
            now_ms(),
        )
    }

    /// Refuses a whole request: keeps it as one dead letter, then answers `status`.
    async fn refuse(
        &self,
        route: &str,
        status: StatusCode,
        source: &str,
        rejection: Rejection,
        body: &[u8],
        meta: &Meta,
    ) -> Response {
        let dl = self.dead_letter(source, &rejection, body, meta, true);
        let sent = match self.publisher.dead_letter_record(&dl) {
            Ok(rec) => self
                .publisher
                .send_all(&[rec], "dlq")
                .await
                .into_iter()
                .all(|r| r.is_ok()),
            Err(_) => false,
        };
        self.metrics
            .rejected
            .with_label_values(&[source, rejection.reason.as_str()])
            .inc();
        let resp = if sent {
            error_response(status, rejection.reason.as_str(), &rejection.message)
        } else {
            self.metrics
                .errors
                .with_label_values(&["dlq_publish"])
                .inc();
            unavailable()
        };
        self.count(route, resp.status());
        resp
    }

    /// 503 at once while the broker is known to be unreachable (the readiness probe
    /// re-checks every few seconds and replaces a broken producer), instead of making the
    /// client wait for a publish timeout; also while the dedup window is being read back
    /// at start (a retry then would not be recognised).
    fn broker_gate(&self, route: &str) -> Option<Response> {
        if self.broker_ready.load(Ordering::Relaxed) && self.startup_loaded.load(Ordering::Relaxed)
        {
            return None;
        }
        let resp = unavailable();
        self.count(route, resp.status());
        Some(resp)
    }

    fn count(&self, route: &str, status: StatusCode) {
        self.metrics
            .requests
            .with_label_values(&[route, status.as_str()])
            .inc();
    }

    fn ctx_for(&self, source: Source) -> Ctx<'_> {
        items::ctx_for(&self.mappings, &self.hasher, source)
    }

    /// Authenticates `key` for `source`; `Err` is the refusal to send.
    fn authenticate(
        &self,
        key: Option<&str>,
        source: Source,
    ) -> Result<String, (StatusCode, Rejection)> {
        let Some(key) = key else {
            return Err((
                StatusCode::UNAUTHORIZED,
                Rejection::whole(
                    Reason::BadKey,
                    "a write key is required (HTTP Basic user, Bearer token or writeKey)",
                ),
            ));
        };
        match self.keys.lookup(key) {
            None => Err((
                StatusCode::UNAUTHORIZED,
                Rejection::whole(Reason::BadKey, "unknown write key"),
            )),
            Some(owner) if owner.source != source => Err((
                StatusCode::FORBIDDEN,
                Rejection::whole(
                    Reason::WrongSourceKey,
                    format!("this write key publishes for another source, not {source}"),
                ),
            )),
            Some(owner) => Ok(owner.id),
        }
    }

    /// Takes `n` events from the key's rate limit; `Err` is the 429 to answer.
    async fn rate_limit(
        &self,
        route: &str,
        source: Source,
        key_id: &str,
        n: usize,
        body: &[u8],
        meta: &Meta,
    ) -> Result<(), Response> {
        let sc = self.cfg.sources.get(source.as_str());
        let (rate, burst) = sc
            .map(|s| (s.rate_limit_per_sec, s.rate_limit_burst))
            .unwrap_or((0, 0));
        let Err(wait) = self
            .limiter
            .take(key_id, n.min(u32::MAX as usize) as u32, rate, burst)
        else {
            return Ok(());
        };
        let rej = Rejection::whole(
            Reason::RateLimited,
            format!("rate limit of {rate} events/s exceeded; retry after {wait} s"),
        );
        let mut resp = self
            .refuse(
                route,
                StatusCode::TOO_MANY_REQUESTS,
                source.as_str(),
                rej,
                body,
                meta,
            )
            .await;
        if resp.status() == StatusCode::TOO_MANY_REQUESTS
            && let Ok(v) = header::HeaderValue::from_str(&wait.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        Err(resp)
    }

    /// Normalises, deduplicates and enqueues the items, and makes the dead letters of the
    /// rejected ones; [`AppState::answer`] waits for the acknowledgements and answers.
    /// What it returns holds nothing of the request body, so a handler frees the body and
    /// what was read from it (for a Segment batch, some 400 KB) before the wait: with
    /// 64 requests waiting, their memory would otherwise be 25 MB that each new request's
    /// allocations reach cold. (`linger.ms` and the broker make the wait most of a
    /// request's time.)
    async fn publish<'s>(
        &'s self,
        source: Source,
        mut items: Vec<Item<'_>>,
        segment_kind: Option<&str>,
        meta: &Meta,
    ) -> Published<'s> {
        let ctx = self.ctx_for(source);
        let mut rejected: Vec<(usize, Rejection)> = Vec::new();
        // Each item is normalised, checked against the erasures and the ids earlier in the
        // request, encoded (with its partitioning key) onto the end of one buffer, and its
        // event dropped, in one go (while it is still in cache). Then the whole request is
        // checked against the dedup window under one lock, the fresh records enqueued from
        // the buffer, and the deliveries awaited. (Checking the window item by item took
        // its lock once per item from both workers, and one cache miss after another.)
        let mut normalised = 0usize;
        let mut suppressed = 0usize;
        let mut duplicates = 0usize;
        let mut encode_failed = false;
        let mut buf: Vec<u8> = Vec::with_capacity(items.len() * 512);
        let mut partition_keys = String::with_capacity(items.len() * 16);
        let mut encoded: Vec<Encoded<'_>> = Vec::with_capacity(items.len());
        let mut in_request: std::collections::HashSet<
            crate::dedup::Key,
            zt_runtime::digest::BuildDigestHasher,
        > = std::collections::HashSet::with_capacity_and_hasher(items.len(), Default::default());
        // One event, written over by each item in turn (a tracking call keeps its
        // strings' buffers: `normalize_into`).
        let mut ev = crate::normalize::segment::empty_event();
        for (i, item) in items.iter_mut().enumerate() {
            let value = std::mem::replace(&mut item.value, Ok(items::Parsed::Tree(Value::Null)));
            match items::normalize_item_into(
                &self.cfg,
                &ctx,
                source,
                value,
                item.raw,
                segment_kind,
                meta.received_at,
                &mut ev,
            ) {
                Ok(()) => {}
                Err(rej) => {
                    rejected.push((i, rej));
                    continue;
                }
            };
            normalised += 1;
            // Erased persons and identifiers: acknowledged, not published, counted.
            if self.suppressions.suppresses_event(&ev) {
                suppressed += 1;
                continue;
            }
            // Deduplicate within the request (against the window below).
            let key = self.dedup.key(source.as_str(), &ev.event_id);
            if !in_request.insert(key) {
                duplicates += 1;
                continue;
            }
            let start = buf.len();
            match self.publisher.encode_event(&ev, &mut buf) {
                Ok((topic, partition_key)) => {
                    let key_start = partition_keys.len();
                    partition_keys.push_str(partition_key);
                    encoded.push(Encoded {
                        key,
                        topic,
                        value: start..buf.len(),
                        partition_key: key_start..partition_keys.len(),
                    });
                }
                Err(e) => {
                    // A bug, not bad input: what was encoded before is still published
                    // (and its ids remembered), then the request is answered 500.
                    tracing::error!(error = %e, "cannot encode a normalised event");
                    self.metrics.errors.with_label_values(&["encode"]).inc();
                    encode_failed = true;
                    break;
                }
            }
        }
        let keys: Vec<crate::dedup::Key> = encoded.iter().map(|e| e.key).collect();
        let seen = self
            .dedup
            .contains_each_at(&keys, std::time::Instant::now());
        let mut sending = self.publisher.begin("events").at(meta.received_at);
        let mut fresh_keys: Vec<crate::dedup::Key> = Vec::with_capacity(encoded.len());
        for (e, seen) in encoded.iter().zip(seen) {
            if seen {
                duplicates += 1;
                continue;
            }
            sending
                .send(
                    &e.topic,
                    &partition_keys[e.partition_key.clone()],
                    &buf[e.value.clone()],
                )
                .await;
            fresh_keys.push(e.key);
        }
        let mut dlq_records = Vec::with_capacity(rejected.len());
        for (i, rej) in &rejected {
            let dl = self.dead_letter(source.as_str(), rej, items[*i].raw, meta, false);
            if let Ok(r) = self.publisher.dead_letter_record(&dl) {
                dlq_records.push(r);
            }
        }
        Published {
            source,
            sending,
            fresh_keys,
            dlq_records,
            rejected,
            normalised,
            suppressed,
            duplicates,
            encode_failed,
        }
    }

    /// Waits for the acknowledgements of what [`AppState::publish`] enqueued (and sends
    /// the dead letters), remembers the acknowledged ids, and answers the request.
    async fn answer(&self, route: &str, p: Published<'_>) -> Response {
        let (source, fresh_keys, rejected) = (p.source, p.fresh_keys, p.rejected);
        let (normalised, suppressed, duplicates) = (p.normalised, p.suppressed, p.duplicates);
        let (ev_results, dlq_results) = tokio::join!(
            p.sending.finish(),
            self.publisher.send_all(&p.dlq_records, "dlq"),
        );
        let mut first_error: Option<String> = None;
        for r in &dlq_results {
            if let Err(e) = r {
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
        let mut acknowledged = Vec::with_capacity(fresh_keys.len());
        for (key, r) in fresh_keys.into_iter().zip(&ev_results) {
            match r {
                Ok(()) => acknowledged.push(key),
                Err(e) => {
                    first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
        self.dedup.insert_all(acknowledged);
        if p.encode_failed {
            self.count(route, StatusCode::INTERNAL_SERVER_ERROR);
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal encoding error",
            );
        }
        let all_ok = first_error.is_none();
        if let Some(error) = &first_error {
            tracing::warn!(%source, %error, "publish not acknowledged; answering 503");
            self.publisher.recover(crate::RECOVERY_INTERVAL);
        }
        if !all_ok {
            self.broker_ready.store(false, Ordering::Relaxed);
            self.metrics.errors.with_label_values(&["publish"]).inc();
            let resp = unavailable();
            self.count(route, resp.status());
            return resp;
        }

        let src = source.as_str();
        self.metrics
            .accepted
            .with_label_values(&[src])
            .inc_by((normalised - suppressed) as u64);
        self.metrics
            .deduplicated
            .with_label_values(&[src])
            .inc_by(duplicates as u64);
        self.metrics
            .suppressed
            .with_label_values(&[src])
            .inc_by(suppressed as u64);
        for (_, r) in &rejected {
            self.metrics
                .rejected
                .with_label_values(&[src, r.reason.as_str()])
                .inc();
        }
        let body = json!({
            "success": true,
            "accepted": normalised,
            "duplicates": duplicates,
            "suppressed": suppressed,
            "rejected": rejected.iter().map(|(i, r)| item_json(*i, r)).collect::<Vec<_>>(),
        });
        self.count(route, StatusCode::OK);
        (StatusCode::OK, axum::Json(body)).into_response()
    }
}

/// What [`AppState::publish`] enqueued and counted of a request, for
/// [`AppState::answer`]: nothing of it borrows the request body.
struct Published<'s> {
    source: Source,
    sending: crate::publish::Sending<'s>,
    /// The dedup keys of the records enqueued, in order.
    fresh_keys: Vec<crate::dedup::Key>,
    dlq_records: Vec<crate::publish::Outgoing>,
    rejected: Vec<(usize, Rejection)>,
    normalised: usize,
    suppressed: usize,
    duplicates: usize,
    encode_failed: bool,
}

/// A record of a request, encoded and waiting for the dedup check
/// ([`AppState::publish`]): its dedup key, topic, and where its value and partitioning key
/// are in the request's buffers.
struct Encoded<'p> {
    key: crate::dedup::Key,
    topic: std::borrow::Cow<'p, str>,
    value: std::ops::Range<usize>,
    partition_key: std::ops::Range<usize>,
}

async fn native(
    State(st): State<Arc<AppState>>,
    Path(source_name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let shown: String = source_name.chars().take(32).collect();
    let span = tracing::info_span!("ingest_request", route = "/v1/sources/{source}/events", source = %shown, bytes = body.len());
    native_inner(st, source_name, headers, body)
        .instrument(span)
        .await
}

async fn native_inner(
    st: Arc<AppState>,
    source_name: String,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    const ROUTE: &str = "/v1/sources/{source}/events";
    let body = decompress(&headers, body);
    let ndjson = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(items::is_ndjson);
    let meta = Meta {
        received_at: now_ms(),
        key: header_key(&headers),
        ndjson,
        call: None,
    };
    let meta = &meta;
    st.metrics.in_flight.inc();
    let _guard = InFlight(&st.metrics);
    let Ok(source) = source_name.parse::<Source>() else {
        return st
            .refuse(
                ROUTE,
                StatusCode::NOT_FOUND,
                "unknown",
                Rejection::whole(
                    Reason::UnknownSource,
                    "no such source; expected crm, erp, logistics, tracking, service or marketing",
                ),
                &body,
                meta,
            )
            .await;
    };
    st.metrics
        .bytes
        .with_label_values(&[source.as_str()])
        .inc_by(body.len() as u64);
    let key_id = match st.authenticate(meta.key.as_deref(), source) {
        Ok(id) => id,
        Err((status, rej)) => {
            return st
                .refuse(ROUTE, status, source.as_str(), rej, &body, meta)
                .await;
        }
    };
    if let Some(resp) = st.broker_gate(ROUTE) {
        return resp;
    }
    if body.len() > st.cfg.max_batch_bytes {
        let rej = Rejection::whole(
            Reason::OversizeBatch,
            format!("{BODY_TOO_LARGE} {} bytes", st.cfg.max_batch_bytes),
        );
        return st
            .refuse(
                ROUTE,
                StatusCode::PAYLOAD_TOO_LARGE,
                source.as_str(),
                rej,
                &body,
                meta,
            )
            .await;
    }
    let items = match split_native(&body, ndjson) {
        Ok(items) => items,
        Err(rej) => {
            return st
                .refuse(
                    ROUTE,
                    StatusCode::BAD_REQUEST,
                    source.as_str(),
                    rej,
                    &body,
                    meta,
                )
                .await;
        }
    };
    if items.len() > st.cfg.max_batch_events {
        let rej = Rejection::whole(
            Reason::OversizeBatch,
            format!("request has more than {} events", st.cfg.max_batch_events),
        );
        return st
            .refuse(
                ROUTE,
                StatusCode::PAYLOAD_TOO_LARGE,
                source.as_str(),
                rej,
                &body,
                meta,
            )
            .await;
    }
    if let Err(resp) = st
        .rate_limit(ROUTE, source, &key_id, items.len(), &body, meta)
        .await
    {
        return resp;
    }
    let published = st.publish(source, items, None, meta).await;
    // Nothing read from the body is needed while the acknowledgements are awaited.
    drop(body);
    st.answer(ROUTE, published).await
}

struct InFlight<'a>(&'a IngestMetrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

async fn segment_call(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
    kind: &'static str,
) -> Response {
    segment(st, headers, body, Some(kind)).await
}

async fn segment_batch(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    segment(st, headers, body, None).await
}

async fn segment(
    st: Arc<AppState>,
    headers: HeaderMap,
    body: Bytes,
    kind: Option<&'static str>,
) -> Response {
    let span = tracing::info_span!(
        "ingest_request",
        route = kind.unwrap_or("batch"),
        source = "tracking",
        bytes = body.len()
    );
    segment_inner(st, headers, body, kind)
        .instrument(span)
        .await
}

async fn segment_inner(
    st: Arc<AppState>,
    headers: HeaderMap,
    body: Bytes,
    kind: Option<&'static str>,
) -> Response {
    let route = match kind {
        Some("track") => "/v1/track",
        Some("identify") => "/v1/identify",
        Some("page") => "/v1/page",
        Some("screen") => "/v1/screen",
        Some("alias") => "/v1/alias",
        Some("group") => "/v1/group",
        _ => "/v1/batch",
    };
    let body = decompress(&headers, body);
    st.metrics.in_flight.inc();
    let _guard = InFlight(&st.metrics);
    let source = Source::Tracking;
    let src = source.as_str();
    st.metrics
        .bytes
        .with_label_values(&[src])
        .inc_by(body.len() as u64);
    // The body read lazily where the scanner can (no value tree of the whole body: that
    // was about a quarter of a tracking request's time), else parsed into a tree, which
    // also words any error.
    let max = st.cfg.max_batch_events;
    let (read, body_key) = match items::split_segment_lazy(&body, kind.is_some(), max) {
        Some(mut lazy) => {
            let key = lazy.key.take();
            (Ok(lazy), key)
        }
        None => {
            let parsed: Result<Value, Rejection> =
                serde_json::from_slice(&body).map_err(|e| parse_error(&e));
            let key = parsed
                .as_ref()
                .ok()
                .and_then(|v| v.get("writeKey"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            (Err(parsed), key)
        }
    };
    let meta = Meta {
        received_at: now_ms(),
        key: header_key(&headers).or(body_key),
        ndjson: false,
        call: kind,
    };
    let meta = &meta;
    let key_id = match st.authenticate(meta.key.as_deref(), source) {
        Ok(id) => id,
        Err((status, rej)) => return st.refuse(route, status, src, rej, &body, meta).await,
    };
    if let Some(resp) = st.broker_gate(route) {
        return resp;
    }
    // Segment answers 400 for payloads over its limits and for JSON errors.
    let limit = if kind.is_some() {
        st.cfg.max_event_bytes
    } else {
        st.cfg.max_batch_bytes
    };
    if body.len() > limit {
        let reason = if kind.is_some() {
            Reason::OversizeEvent
        } else {
            Reason::OversizeBatch
        };
        let rej = Rejection::whole(reason, format!("{BODY_TOO_LARGE} {limit} bytes"));
        return st
            .refuse(route, StatusCode::BAD_REQUEST, src, rej, &body, meta)
            .await;
    }
    // What is read from the body is moved into this block, and freed at its end, before
    // the acknowledgements are awaited ([`AppState::publish`]).
    let published = {
        let reading = read;
        let mut owned: Vec<items::OwnedItem>;
        // `Ok`: the calls read lazily; `Err`: the body's value tree (or why it has none).
        let items: Vec<Item<'_>> = match reading {
            // Segment accepts a batch and rejects the events past its limit one by one.
            Ok(ref lazy) => lazy.items().collect(),
            Err(parsed) => {
                let value = match parsed {
                    Ok(v) => v,
                    Err(rej) => {
                        return st
                            .refuse(route, StatusCode::BAD_REQUEST, src, rej, &body, meta)
                            .await;
                    }
                };
                // Items with their own bytes (re-serialised after the batch-level merge).
                owned = match split_segment(&body, value, kind.is_some(), max) {
                    Ok(owned) => owned,
                    Err(rej) => {
                        return st
                            .refuse(route, StatusCode::BAD_REQUEST, src, rej, &body, meta)
                            .await;
                    }
                };
                owned
                    .iter_mut()
                    .map(|(raw, v)| Item {
                        raw: raw.as_slice(),
                        value: std::mem::replace(v, Ok(Value::Null)).map(items::Parsed::Tree),
                    })
                    .collect()
            }
        };
        if let Err(resp) = st
            .rate_limit(route, source, &key_id, items.len().min(max), &body, meta)
            .await
        {
            return resp;
        }
        st.publish(source, items, kind, meta).await
    };
    drop(body);
    st.answer(route, published).await
}
