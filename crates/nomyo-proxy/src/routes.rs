//! The OpenAI-compatible routes and the local access policy.

use std::convert::Infallible;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use nomyo_client::types::STREAM_NOT_BOOLEAN;
use nomyo_client::SecurityTier;
use nomyo_client::{ChatRequest, RequestOptions, COMPLETIONS_PATH, MODELS_PATH};
use serde_json::{json, Value};

use crate::error::ProxyError;
use crate::{sse, ProxyState, MAX_REQUEST_BYTES, TIER_HEADER};

pub(crate) fn router(state: ProxyState) -> Router {
    Router::new()
        .route(COMPLETIONS_PATH, post(chat_completions))
        .route(MODELS_PATH, get(models))
        .route(&format!("{MODELS_PATH}/{{model}}"), get(model))
        .route("/health", get(health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// A short id for this request, in logs and the `x-request-id` header
/// (which the OpenAI SDKs expose as `_request_id`).
fn request_id() -> String {
    format!("proxy-{}", uuid::Uuid::new_v4().simple())
}

/// Whether `host` (a Host header value, with or without a port) names this
/// machine's loopback interface.
fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [::1]:12436
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The local access policy, before any route.
///
/// With an access token: every route but `/health` needs it. Without one
/// (loopback): the Host must be a loopback name, which stops DNS rebinding
/// (a web page whose host name resolves to 127.0.0.1), and a POST body must
/// be `application/json`, which a cross-site form cannot send without a
/// CORS preflight that this proxy never grants.
async fn guard(State(st): State<ProxyState>, req: Request, next: Next) -> Response {
    let h = req.headers();
    if st.has_access_token() {
        if req.uri().path() != "/health"
            && !st.authorised(h.get(header::AUTHORIZATION).map(HeaderValue::as_bytes))
        {
            tracing::debug!(path = %req.uri().path(), "refused: missing or wrong access token");
            return ProxyError::new(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "missing or wrong proxy access token: send it as the API key (Authorization: Bearer TOKEN)",
            )
            .into_response();
        }
    } else {
        let host = h
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .unwrap_or("");
        if !is_loopback_host(host) {
            tracing::debug!("refused: Host is not a loopback name");
            return ProxyError::new(
                StatusCode::FORBIDDEN,
                "permission_error",
                "this proxy only answers requests addressed to localhost/127.0.0.1 \
                 (start it with an access token to serve other host names)",
            )
            .into_response();
        }
    }
    if req.method() == Method::POST {
        let json = h
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return ProxyError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request_error",
                "the request body must be JSON with Content-Type: application/json",
            )
            .into_response();
        }
    }
    next.run(req).await
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn not_found() -> ProxyError {
    ProxyError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "unknown route: this proxy serves POST /v1/chat/completions, GET /v1/models[/MODEL] and GET /health",
    )
}

async fn method_not_allowed() -> ProxyError {
    ProxyError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        "method not allowed on this route",
    )
}

/// `GET /v1/models`: the server's list, in OpenAI's shape.
async fn models(State(st): State<ProxyState>) -> Response {
    let id = request_id();
    let started = Instant::now();
    match st.client.models().await {
        Ok(models) => {
            tracing::debug!(request_id = %id, count = models.len(), ms = started.elapsed().as_millis() as u64, "models listed");
            with_id(
                Json(nomyo_client::ModelList::new(models)).into_response(),
                &id,
            )
        }
        Err(e) => fail(&id, started, &e),
    }
}

/// `GET /v1/models/{model}`: one entry of the list, or 404.
async fn model(State(st): State<ProxyState>, Path(wanted): Path<String>) -> Response {
    let id = request_id();
    let started = Instant::now();
    match st.client.models().await {
        Ok(models) => match models.iter().find(|m| m.id == wanted) {
            Some(m) => with_id(Json(m).into_response(), &id),
            None => with_id(
                ProxyError::new(
                    StatusCode::NOT_FOUND,
                    "invalid_request_error",
                    "the endpoint does not offer this model (GET /v1/models lists them)",
                )
                .code("model_not_found")
                .into_response(),
                &id,
            ),
        },
        Err(e) => fail(&id, started, &e),
    }
}

fn with_id(mut resp: Response, id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut()
            .insert(HeaderName::from_static(nomyo_client::HEADER_REQUEST_ID), v);
    }
    resp
}

fn fail(id: &str, started: Instant, e: &nomyo_client::Error) -> Response {
    let p = ProxyError::from(e);
    tracing::debug!(request_id = %id, status = p.status.as_u16(), kind = p.kind, ms = started.elapsed().as_millis() as u64, "request failed");
    with_id(p.into_response(), id)
}

/// The per-request tier: the header, else the proxy's default.
fn tier(st: &ProxyState, headers: &HeaderMap) -> Result<Option<SecurityTier>, ProxyError> {
    match headers.get(TIER_HEADER) {
        None => Ok(st.default_tier),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<SecurityTier>().ok())
            .map(Some)
            .ok_or_else(|| {
                ProxyError::bad_request(format!("{TIER_HEADER} must be standard, high or maximum"))
            }),
    }
}

/// Parses the body; the request's bytes are overwritten once parsed, when
/// this handler holds the only reference to them.
fn parse_request(body: Bytes) -> Result<ChatRequest, ProxyError> {
    let parsed = serde_json::from_slice::<ChatRequest>(&body);
    if let Ok(mut b) = body.try_into_mut() {
        zeroize::Zeroize::zeroize(&mut b[..]);
    }
    // serde's messages can quote the offending value (a piece of the
    // prompt): say where, not what.
    parsed.map_err(|e| {
        // Our own message, and nothing of the value: safe to say as it is.
        if e.to_string().contains(STREAM_NOT_BOOLEAN) {
            return ProxyError::bad_request(STREAM_NOT_BOOLEAN);
        }
        ProxyError::bad_request(format!(
            "the body is not a valid chat-completion request ({} at line {} column {}): \
             it needs \"messages\" (and \"model\" when the server serves several) in the OpenAI format",
            match e.classify() {
                serde_json::error::Category::Data => "unexpected field type or value",
                serde_json::error::Category::Eof => "incomplete JSON",
                _ => "invalid JSON",
            },
            e.line(),
            e.column()
        ))
    })
}

/// The model for a request that names none: the server's only one, from
/// `GET /v1/models`; with none or several, a 400 that lists them.
async fn only_model(st: &ProxyState, id: &str) -> Result<String, ProxyError> {
    let models = st.client.models().await.map_err(|e| ProxyError::from(&e))?;
    match models.as_slice() {
        [one] => {
            tracing::debug!(request_id = %id, "model filled in: the server serves one");
            Ok(one.id.clone())
        }
        [] => Err(ProxyError::bad_request(
            "\"model\" is missing and the server lists no model (GET /v1/models)",
        )
        .code("model_not_found")),
        many => Err(ProxyError::bad_request(format!(
            "\"model\" is missing and the server serves {} models; name one of: {}",
            many.len(),
            many.iter()
                .map(|m| printable(&m.id))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .code("model_required")),
    }
}

/// A server-given name as it may appear in a message: no control
/// characters, at most 100 characters.
fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(100).collect()
}

/// `POST /v1/chat/completions`, plain or streamed.
async fn chat_completions(
    State(st): State<ProxyState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let id = request_id();
    let started = Instant::now();
    let resp = match handle_chat(&st, &headers, body, &id, started).await {
        Ok(r) => r,
        Err(p) => {
            tracing::debug!(request_id = %id, status = p.status.as_u16(), kind = p.kind, ms = started.elapsed().as_millis() as u64, "request failed");
            p.into_response()
        }
    };
    with_id(resp, &id)
}

async fn handle_chat(
    st: &ProxyState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    id: &str,
    started: Instant,
) -> Result<Response, ProxyError> {
    let body = body.map_err(|r| {
        let status = r.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ProxyError::new(
                status,
                "invalid_request_error",
                format!("the request body is larger than {MAX_REQUEST_BYTES} bytes"),
            )
        } else {
            ProxyError::new(
                status,
                "invalid_request_error",
                "cannot read the request body",
            )
        }
    })?;
    let body_bytes = body.len();
    let mut request = parse_request(body)?;
    // Not a field of the sealed request: the client sets it for a stream.
    let stream = request.stream.take().unwrap_or(false);
    // The same id in the proxy's logs, the server's access line and the
    // answer's x-request-id.
    let mut options = RequestOptions::default().request_id(id);
    if let Some(t) = tier(st, headers)? {
        options = options.security_tier(t);
    }
    if request.model.trim().is_empty() {
        request.model = only_model(st, id).await?;
    }
    tracing::debug!(request_id = %id, body_bytes, stream, messages = request.messages.len(), "chat request");

    let v2 = st
        .client
        .uses_v2()
        .await
        .map_err(|e| ProxyError::from(&e))?;
    if !stream {
        let answer = st.client.create_with(&request, &options).await;
        zeroize::Zeroize::zeroize(&mut request);
        let completion = answer.map_err(|e| ProxyError::from(&e))?;
        let json = completion.to_json(false);
        drop(completion);
        tracing::debug!(request_id = %id, v2, answer_bytes = json.len(), ms = started.elapsed().as_millis() as u64, "chat answered");
        let mut resp = Response::new(Body::from(json.expose_secret().to_vec()));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return Ok(resp);
    }

    if !v2 {
        // v1 cannot stream: one complete answer, sent as the events a
        // streaming server would have produced.
        let include_usage = request
            .extra
            .remove("stream_options")
            .and_then(|o| o.get("include_usage").and_then(Value::as_bool))
            .unwrap_or(false);
        let answer = st.client.create_with(&request, &options).await;
        zeroize::Zeroize::zeroize(&mut request);
        let completion = answer.map_err(|e| ProxyError::from(&e))?;
        let events = sse::from_completion(&completion, include_usage);
        drop(completion);
        tracing::debug!(request_id = %id, events = events.len(), ms = started.elapsed().as_millis() as u64, "v1 answer sent as an event stream");
        let body = futures::stream::iter(events.into_iter().map(Ok::<_, Infallible>));
        return Ok(sse_response(Body::from_stream(body)));
    }

    let chunks = st.client.create_stream_with(&request, &options).await;
    zeroize::Zeroize::zeroize(&mut request);
    let chunks = chunks.map_err(|e| ProxyError::from(&e))?;
    tracing::debug!(request_id = %id, ms = started.elapsed().as_millis() as u64, "v2 stream started");
    let id = id.to_owned();
    let events = futures::stream::unfold(
        (chunks, false, 0usize),
        move |(mut chunks, finished, n)| {
            let id = id.clone();
            async move {
                if finished {
                    return None;
                }
                let event = match chunks.next().await {
                    Some(Ok(chunk)) => return Some((sse::event(&chunk), (chunks, false, n + 1))),
                    Some(Err(e)) => {
                        let p = ProxyError::from(&e);
                        tracing::debug!(request_id = %id, chunks = n, kind = p.kind, ms = started.elapsed().as_millis() as u64, "v2 stream failed");
                        sse::error_event(&p)
                    }
                    None => {
                        tracing::debug!(request_id = %id, chunks = n, ms = started.elapsed().as_millis() as u64, "v2 stream complete");
                        Bytes::from_static(sse::DONE)
                    }
                };
                Some((event, (chunks, true, n)))
            }
        },
    )
    .map(Ok::<_, Infallible>);
    Ok(sse_response(Body::from_stream(events)))
}

fn sse_response(body: Body) -> Response {
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:12436",
            "LOCALHOST:1",
            "127.0.0.1",
            "127.0.0.1:12436",
            "127.1.2.3:9",
            "[::1]:12436",
            "[::1]",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "",
            "evil.example:12436",
            "localhost.evil.example",
            "10.0.0.1:12436",
            "[::2]:80",
            "0.0.0.0:12436",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
