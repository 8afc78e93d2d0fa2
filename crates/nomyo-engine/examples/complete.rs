//! Runs one chat completion against a GGUF and prints the response object.
//!
//! `cargo run -p nomyo-engine --example complete -- MODEL.gguf '{"messages": [...]}'`

use nomyo_engine::{Engine, EngineConfig};
use nomyo_server::backend::{Backend, ChatRequest};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(model), Some(body)) = (args.next(), args.next()) else {
        return Err("usage: complete MODEL.gguf REQUEST_JSON".into());
    };
    let engine = Engine::start(EngineConfig::new(model))?;
    engine.wait_ready().await?;
    let body: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&body)?;
    let v = engine
        .chat(ChatRequest {
            body,
            tier: nomyo_core::SecurityTier::Standard,
            request_id: "example".into(),
        })
        .await?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}
