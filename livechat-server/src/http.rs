//! The REST API and the probes. Every error is `{ "error": { "code", "message" } }`
//! with the status that fits the code.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use livechat_core::auth::{Identity, bearer_token};
use livechat_core::model::{ContactId, MsgType, Role, UserId, WorkspaceId};
use livechat_core::protocol::{HistoryRequest, SendMessage, SyncRequest, UnreadCountsRequest};
use livechat_core::sms::InboundSms;
use livechat_core::sms::twilio::signature_is_valid;
use livechat_core::store::{NewContact, NewWorkspace};
use livechat_core::{ChatError, ErrorCode, LiveChat, OriginPolicy, PeerAddr};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The livechat handle.
    pub chat: LiveChat,
    /// The store, for readiness.
    pub store: crate::Storage,
    /// Redis and the change feed, for readiness.
    pub cluster: crate::Cluster,
    /// The admin bearer token.
    pub admin_token: Arc<str>,
    /// The Twilio webhooks' settings, when the SMS channel is on.
    pub twilio: Option<TwilioWebhooks>,
    /// The plugins loaded at start, in order.
    pub plugins: Arc<[String]>,
    /// The Prometheus recorder `/metrics` renders.
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
}

/// What the Twilio webhooks need to check a request's signature.
#[derive(Clone)]
pub struct TwilioWebhooks {
    /// The account's auth token: the signing key.
    pub auth_token: Arc<str>,
    /// The public base URL Twilio calls (what it signs), without a trailing `/`.
    pub public_url: Arc<str>,
}

impl std::fmt::Debug for TwilioWebhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioWebhooks")
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// The routes; `max_body` bounds every request body.
pub fn router(state: AppState, max_body: usize) -> Router {
    Router::new()
        .route("/api/workspaces", post(create_workspace))
        .route("/api/workspaces/{id}/members", post(add_member))
        .route(
            "/api/workspaces/{id}/members/{user_id}",
            delete(remove_member),
        )
        .route(
            "/api/workspaces/{id}/contacts",
            post(create_contact).get(list_contacts),
        )
        .route(
            "/api/contacts/{id}/messages",
            post(send_message).get(list_messages),
        )
        .route("/api/workspaces/{id}/unread", get(unread))
        .route("/", get(inbox_page))
        .route("/assets/{file}", get(inbox_asset))
        .route("/webhooks/twilio/sms", post(twilio_sms))
        .route("/webhooks/twilio/status", post(twilio_status))
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such route") })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// The checks every request passes before anything else: the peer address is handed
/// to livechat (for per-address limits), socket.io requests from a browser origin that
/// is not allowed are refused before the websocket upgrade, and CORS answers with the
/// same allow-list (never `*`, never with credentials).
pub fn with_edge_checks(router: Router, origins: OriginPolicy) -> Router {
    let origins = Arc::new(origins);
    let cors_origins = origins.clone();
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, _| {
            cors_origins.allows(origin.to_str().ok())
        }))
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]);
    router
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            let origins = origins.clone();
            async move { check_origin(&origins, req, next).await }
        }))
        .layer(middleware::from_fn(log_refusals))
        .layer(cors)
        .layer(middleware::map_request(peer_addr))
}

/// One `info` line per refused HTTP request (a 4xx other than `404`, `429`): method,
/// path, status and client address. Never the query string or headers, which may
/// carry a token. A client over a rate budget is not logged line by line (`debug`).
async fn log_refusals(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let client = req.extensions().get::<PeerAddr>().map(|p| p.0.ip());
    let res = next.run(req).await;
    let status = res.status();
    if status == StatusCode::TOO_MANY_REQUESTS {
        tracing::debug!(%method, path, status = status.as_u16(), ?client, "HTTP request refused");
    } else if status.is_client_error() && status != StatusCode::NOT_FOUND {
        tracing::info!(%method, path, status = status.as_u16(), ?client, "HTTP request refused");
    }
    res
}

async fn peer_addr(mut req: Request) -> Request {
    if let Some(ConnectInfo(addr)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied() {
        req.extensions_mut().insert(PeerAddr(addr));
    }
    req
}

async fn check_origin(origins: &OriginPolicy, req: Request, next: Next) -> Response {
    if req.uri().path().starts_with("/socket.io") {
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok());
        if !origins.allows(origin) {
            let peer = req.extensions().get::<PeerAddr>().map(|p| p.0);
            tracing::warn!(
                ?peer,
                ?origin,
                "socket.io request refused: origin not allowed"
            );
            livechat_core::metrics::connection_refused("origin");
            return ApiError::new(ErrorCode::Forbidden, "origin not allowed").into_response();
        }
    }
    next.run(req).await
}

/// HTTP requests answered with an error, by code (`livechat_http_errors_total`).
pub const HTTP_ERRORS: &str = "livechat_http_errors_total";

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
}

impl ApiError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<ChatError> for ApiError {
    fn from(e: ChatError) -> Self {
        if let ChatError::Store(cause) = &e {
            tracing::error!(error = %cause, source = ?std::error::Error::source(cause), "request failed in storage");
        }
        Self {
            code: e.code(),
            message: e.client_message(),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        let code = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ErrorCode::PayloadTooLarge
        } else {
            ErrorCode::InvalidPayload
        };
        Self::new(code, e.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        Self::new(ErrorCode::InvalidPayload, e.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        Self::new(ErrorCode::InvalidPayload, e.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        metrics::counter!(HTTP_ERRORS, "code" => self.code.as_str()).increment(1);
        (
            status,
            Json(json!({ "error": { "code": self.code, "message": self.message } })),
        )
            .into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The caller proved to hold the admin token.
struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let token = bearer_token(&parts.headers).ok_or_else(unauthorized)?;
        // Constant time, so the comparison does not leak how much of a guess was right.
        if bool::from(token.as_bytes().ct_eq(state.admin_token.as_bytes())) {
            Ok(Admin)
        } else {
            Err(unauthorized())
        }
    }
}

/// The caller, authenticated by a member JWT.
struct Member(Identity);

impl FromRequestParts<AppState> for Member {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let token = bearer_token(&parts.headers).ok_or_else(unauthorized)?;
        match state.chat.authenticate(token).await {
            Ok(identity) => Ok(Member(identity)),
            Err(e) => {
                tracing::debug!(reason = %e, "bearer token refused");
                Err(unauthorized())
            }
        }
    }
}

/// Either the admin token or a member JWT.
enum AdminOrMember {
    Admin,
    Member(Identity),
}

impl FromRequestParts<AppState> for AdminOrMember {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        if Admin::from_request_parts(parts, state).await.is_ok() {
            return Ok(Self::Admin);
        }
        Member::from_request_parts(parts, state)
            .await
            .map(|Member(m)| Self::Member(m))
    }
}

fn unauthorized() -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, "a valid bearer token is required")
}

#[derive(Deserialize)]
struct NamePhone {
    name: String,
    #[serde(default)]
    phone: Option<String>,
}

fn check_name(name: &str) -> ApiResult<()> {
    if name.trim().is_empty() || name.len() > 200 {
        return Err(ApiError::new(
            ErrorCode::InvalidPayload,
            "name must be 1 to 200 bytes",
        ));
    }
    Ok(())
}

async fn create_workspace(
    State(s): State<AppState>,
    _: Admin,
    body: Result<Json<NamePhone>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(body) = body?;
    check_name(&body.name)?;
    let ws = s
        .chat
        .create_workspace(NewWorkspace {
            id: WorkspaceId::new_v4(),
            name: body.name,
            phone: body.phone,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(ws)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddMember {
    user_id: String,
    role: Role,
}

async fn add_member(
    State(s): State<AppState>,
    _: Admin,
    path: Result<Path<WorkspaceId>, PathRejection>,
    body: Result<Json<AddMember>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Path(ws) = path?;
    let Json(body) = body?;
    if body.user_id.is_empty() || body.user_id.len() > 200 {
        return Err(ApiError::new(
            ErrorCode::InvalidPayload,
            "userId must be 1 to 200 bytes",
        ));
    }
    s.chat
        .add_member(ws, UserId(body.user_id.clone()), body.role)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "workspace_id": ws, "user_id": body.user_id, "role": body.role })),
    ))
}

async fn remove_member(
    State(s): State<AppState>,
    _: Admin,
    path: Result<Path<(WorkspaceId, String)>, PathRejection>,
) -> ApiResult<StatusCode> {
    let Path((ws, user)) = path?;
    if s.chat.remove_member(ws, &UserId(user)).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(ErrorCode::NotFound, "member not found"))
    }
}

async fn create_contact(
    State(s): State<AppState>,
    caller: AdminOrMember,
    path: Result<Path<WorkspaceId>, PathRejection>,
    body: Result<Json<NamePhone>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Path(ws) = path?;
    if let AdminOrMember::Member(who) = &caller {
        s.chat.authorize(who, ws).await?;
    }
    let Json(body) = body?;
    check_name(&body.name)?;
    let contact = s
        .chat
        .create_contact(NewContact {
            id: ContactId::new_v4(),
            workspace_id: ws,
            name: body.name,
            phone: body.phone,
        })
        .await
        .map_err(|e| match e {
            ChatError::Store(livechat_core::error::StoreError::NotFound(_)) => {
                ApiError::new(ErrorCode::NotFound, "workspace not found")
            }
            other => other.into(),
        })?;
    Ok((StatusCode::CREATED, Json(contact)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PostMessage {
    body: String,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    msg_type: Option<MsgType>,
}

async fn send_message(
    State(s): State<AppState>,
    Member(who): Member,
    path: Result<Path<ContactId>, PathRejection>,
    body: Result<Json<PostMessage>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Path(contact_id) = path?;
    let Json(body) = body?;
    let message = s
        .chat
        .send_message(
            &who,
            SendMessage {
                contact_id,
                body: body.body,
                client_id: body.client_id,
                msg_type: body.msg_type,
                direction: None,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(message)))
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    before: Option<i64>,
    #[serde(default)]
    after: Option<i64>,
    #[serde(default)]
    limit: Option<u32>,
}

async fn list_messages(
    State(s): State<AppState>,
    Member(who): Member,
    path: Result<Path<ContactId>, PathRejection>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<impl IntoResponse> {
    let Path(contact_id) = path?;
    let Query(q) = query?;
    let page = match (q.before, q.after) {
        (Some(_), Some(_)) => {
            return Err(ApiError::new(
                ErrorCode::InvalidPayload,
                "give `before` or `after`, not both",
            ));
        }
        (_, Some(after)) => {
            s.chat
                .sync(
                    &who,
                    SyncRequest {
                        workspace_id: None,
                        contact_id: Some(contact_id),
                        after,
                        limit: q.limit,
                    },
                )
                .await?
        }
        (before, None) => {
            s.chat
                .history(
                    &who,
                    HistoryRequest {
                        contact_id,
                        before,
                        limit: q.limit,
                    },
                )
                .await?
        }
    };
    Ok(Json(page))
}

async fn unread(
    State(s): State<AppState>,
    Member(who): Member,
    path: Result<Path<WorkspaceId>, PathRejection>,
) -> ApiResult<impl IntoResponse> {
    let Path(workspace_id) = path?;
    let counts = s
        .chat
        .unread_counts(&who, UnreadCountsRequest { workspace_id })
        .await?;
    Ok(Json(counts))
}

/// A Twilio webhook's form parameters, once its signature is checked against the
/// configured public URL (behind a proxy, the URL this server sees is not the one
/// Twilio signed).
fn twilio_params(
    s: &AppState,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Vec<(String, String)>> {
    let Some(twilio) = &s.twilio else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "the SMS channel is not configured",
        ));
    };
    let params: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
    let url = match uri.query() {
        Some(query) => format!("{}{}?{query}", twilio.public_url, uri.path()),
        None => format!("{}{}", twilio.public_url, uri.path()),
    };
    let signature = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok());
    if !signature_is_valid(&twilio.auth_token, &url, &params, signature) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "the X-Twilio-Signature does not match",
        ));
    }
    Ok(params)
}

fn param<'a>(params: &'a [(String, String)], name: &'static str) -> ApiResult<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidPayload, format!("`{name}` is missing")))
}

/// An empty TwiML answer: Twilio sends no reply SMS of its own.
fn twiml_ok() -> Response {
    (
        [(header::CONTENT_TYPE, "text/xml")],
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>",
    )
        .into_response()
}

async fn twilio_sms(
    State(s): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let params = twilio_params(&s, &uri, &headers, &body)?;
    let media = params
        .iter()
        .find(|(k, _)| k == "NumMedia")
        .and_then(|(_, v)| v.parse::<u32>().ok())
        .unwrap_or(0);
    let text = params
        .iter()
        .find(|(k, _)| k == "Body")
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    // A picture without words is still a message the agents must see.
    let body = match (text.trim().is_empty(), media) {
        (true, n) if n > 0 => format!("({n} attachment(s) sent by MMS)"),
        _ => text.to_owned(),
    };
    let sms = InboundSms::new(
        param(&params, "MessageSid")?,
        param(&params, "From")?,
        param(&params, "To")?,
        body,
    );
    s.chat.receive_sms(sms).await?;
    Ok(twiml_ok())
}

async fn twilio_status(
    State(s): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let params = twilio_params(&s, &uri, &headers, &body)?;
    let sid = param(&params, "MessageSid")?;
    let status = param(&params, "MessageStatus")?;
    match s.chat.sms_status(sid, status).await {
        Ok(_) => {}
        // A report can overtake the outbox storing the SID Twilio just gave it, and
        // Twilio does not send it again: nothing the sender could fix.
        Err(ChatError::NotFound(_)) => {
            tracing::info!(sid, status, "twilio status for no known message, ignored")
        }
        Err(e) => return Err(e.into()),
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Ready when the store answers and, where configured, Redis answers, the fan-out is
/// subscribed and the change feed listens. Each check is bounded, so a probe never
/// hangs on a dead peer.
async fn ready(State(s): State<AppState>) -> Response {
    const CHECK: std::time::Duration = std::time::Duration::from_secs(2);
    let mut body = serde_json::Map::new();
    let mut ready = true;
    let store = match tokio::time::timeout(CHECK, s.store.ping()).await {
        Ok(Ok(())) => "up",
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready: the store does not answer");
            "down"
        }
        Err(_) => {
            tracing::warn!("not ready: the store does not answer within 2 s");
            "down"
        }
    };
    ready &= store == "up";
    body.insert("store".into(), json!(store));
    if let Some(redis) = &s.cluster.redis {
        let up = matches!(tokio::time::timeout(CHECK, redis.ping()).await, Ok(Ok(())));
        if !up {
            tracing::warn!("not ready: Redis does not answer");
        }
        // PING can succeed on a connection that came back without its subscription;
        // then nothing from the other nodes arrives, so that is not ready either.
        let subscribed = redis.is_subscribed();
        if !subscribed {
            tracing::warn!("not ready: the Redis fan-out is not subscribed");
        }
        ready &= up && subscribed;
        body.insert("redis".into(), json!(if up { "up" } else { "down" }));
        body.insert(
            "redis_subscription".into(),
            json!(if subscribed { "subscribed" } else { "down" }),
        );
    }
    if let Some(feed) = &s.cluster.change_feed {
        let listening = feed.is_listening();
        ready &= listening;
        body.insert(
            "change_feed".into(),
            json!(if listening { "listening" } else { "down" }),
        );
    }
    // Loaded at start: a plugin that does not load stops the start.
    body.insert("plugins".into(), json!(&*s.plugins));
    if s.chat.draining() {
        ready = false;
        body.insert("draining".into(), json!(true));
    }
    body.insert(
        "status".into(),
        json!(if ready { "ready" } else { "unavailable" }),
    );
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(serde_json::Value::Object(body))).into_response()
}

/// Prometheus text: what livechat recorded (see `livechat_core::metrics`), with the
/// gauges read at this moment.
async fn metrics(State(s): State<AppState>) -> Response {
    s.chat.record_gauges();
    s.metrics.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

#[derive(Deserialize)]
struct ContactsQuery {
    #[serde(default)]
    limit: Option<u32>,
}

async fn list_contacts(
    State(s): State<AppState>,
    Member(who): Member,
    path: Result<Path<WorkspaceId>, PathRejection>,
    query: Result<Query<ContactsQuery>, QueryRejection>,
) -> ApiResult<impl IntoResponse> {
    let Path(workspace_id) = path?;
    let Query(q) = query?;
    let list = s
        .chat
        .contacts(
            &who,
            livechat_core::protocol::ContactsRequest {
                workspace_id,
                limit: q.limit,
            },
        )
        .await?;
    Ok(Json(list))
}

/// A file of the demo inbox, embedded in the binary, so that `cargo run` serves the
/// page with nothing else on disk.
struct Asset {
    body: &'static [u8],
    content_type: &'static str,
    /// A hash of `body`: the `ETag`, so that a browser revalidates cheaply and still
    /// never runs a stale script against a newer page after an upgrade.
    etag: u64,
}

impl Asset {
    const fn new(body: &'static [u8], content_type: &'static str) -> Self {
        // FNV-1a, at compile time: any stable hash of the bytes will do.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut i = 0;
        while i < body.len() {
            hash ^= body[i] as u64;
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            i += 1;
        }
        Self {
            body,
            content_type,
            etag: hash,
        }
    }
}

static INBOX_HTML: Asset = Asset::new(
    include_bytes!("../assets/inbox.html"),
    "text/html; charset=utf-8",
);

/// The page's other files, by name under `/assets/`.
static ASSETS: [(&str, Asset); 4] = [
    (
        "inbox.js",
        Asset::new(
            include_bytes!("../assets/inbox.js"),
            "text/javascript; charset=utf-8",
        ),
    ),
    (
        "inbox.css",
        Asset::new(
            include_bytes!("../assets/inbox.css"),
            "text/css; charset=utf-8",
        ),
    ),
    (
        "favicon.svg",
        Asset::new(include_bytes!("../assets/favicon.svg"), "image/svg+xml"),
    ),
    // The official browser bundle of socket.io-client (MIT), vendored unchanged; its
    // version is in assets/README.md.
    (
        "socket.io.min.js",
        Asset::new(
            include_bytes!("../assets/vendor/socket.io.min.js"),
            "text/javascript; charset=utf-8",
        ),
    ),
];

/// Scripts, styles, images and connections from this origin only; no inline script or
/// style, no plugins, no framing, no `<base>`, no form posts.
const INBOX_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// The demo inbox: a page that signs in with the token in its URL's fragment.
async fn inbox_page(headers: HeaderMap) -> Response {
    serve_asset(&INBOX_HTML, &headers)
}

async fn inbox_asset(
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let Path(file) = path?;
    ASSETS
        .iter()
        .find(|(name, _)| *name == file)
        .map(|(_, asset)| serve_asset(asset, &headers))
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such asset"))
}

fn serve_asset(asset: &'static Asset, headers: &HeaderMap) -> Response {
    let etag = format!("\"{:016x}\"", asset.etag);
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|tag| tag.trim() == etag || tag.trim() == "*")
        });
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let h = response.headers_mut();
    // `no-cache`: keep it, but ask first (a 304 costs a header, not the file).
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    if let Ok(etag) = header::HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, etag);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(INBOX_CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
    response
}
