//! An OpenAI-compatible upstream that answers at once, for benchmarks:
//! `GET /v1/models` lists `bench-model`, `POST /v1/chat/completions` returns
//! a fixed completion. Prints `http://127.0.0.1:PORT/v1` once listening.
//! A test double for `benches/compare_v1.py`, never part of the product.

use axum::routing::{get, post};
use axum::Router;

const MODELS: &str = r#"{"object":"list","data":[{"id":"bench-model","object":"model"}]}"#;
const ANSWER: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1764300000,"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#;

fn json(body: &'static str) -> ([(axum::http::HeaderName, &'static str); 1], &'static str) {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let app = Router::new()
        .route("/v1/models", get(|| async { json(MODELS) }))
        .route(
            "/v1/chat/completions",
            post(|_body: axum::body::Bytes| async { json(ANSWER) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("http://{}/v1", listener.local_addr()?);
    axum::serve(listener, app).await
}
