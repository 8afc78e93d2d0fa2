//! One encrypted chat completion against a NOMYO server.
//!
//! ```text
//! NOMYO_BASE_URL=https://api.nomyo.ai NOMYO_API_KEY=... \
//!     cargo run -p nomyo-client --example chat -- MODEL "your prompt"
//! ```
//!
//! For a local `nomyo serve` over plain HTTP, also set `NOMYO_ALLOW_HTTP=1`.
//! `NOMYO_PIN=sha256:...` pins the server key; otherwise it is trusted on
//! first use (~/.config/nomyo/known_servers).

use nomyo_client::{ChatMessage, ChatRequest, Client, Fingerprint, SecretString, TrustDecision};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(model), Some(prompt)) = (args.next(), args.next()) else {
        eprintln!("usage: chat MODEL PROMPT   (server from NOMYO_BASE_URL)");
        std::process::exit(2);
    };
    let base_url =
        std::env::var("NOMYO_BASE_URL").unwrap_or_else(|_| "https://api.nomyo.ai".into());
    let mut builder = Client::builder()
        .base_url(base_url)
        .allow_http(std::env::var_os("NOMYO_ALLOW_HTTP").is_some());
    if let Ok(key) = std::env::var("NOMYO_API_KEY") {
        builder = builder.api_key(SecretString::from(key));
    }
    if let Ok(pin) = std::env::var("NOMYO_PIN") {
        builder = builder.pin(pin.parse::<Fingerprint>()?);
    }
    let client = builder.build()?;

    // Optional: generate the client key and verify the server key up front.
    let server_key = client.prepare().await?;
    if let TrustDecision::FirstUse { file } = server_key.trust() {
        eprintln!(
            "trusting {} on first use (recorded in {})",
            server_key.fingerprint(),
            file.display()
        );
    }

    let request = ChatRequest::new(model)
        .message(ChatMessage::system("Answer briefly."))
        .message(ChatMessage::user(prompt));
    let answer = client.create(&request).await?;
    println!("{}", answer.text().unwrap_or("(no text)"));
    let m = &answer.metadata;
    eprintln!(
        "payload {} · tier {} · encrypted {}",
        m.payload_id.as_deref().unwrap_or("?"),
        m.security_tier.as_deref().unwrap_or("?"),
        m.is_encrypted.unwrap_or(false)
    );
    Ok(())
}
