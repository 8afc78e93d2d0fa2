//! Interoperability with an independent v1 implementation: a server written
//! in Python with `cryptography` from docs/PROTOCOL.md alone
//! (tests/python/v1_server.py). Needs a python3 with `cryptography`
//! (NOMYO_PYTHON, the repository's .venv, or python3 on PATH); skipped
//! without one, except under CI (CI set), where that is a failure.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use nomyo_client::{
    ChatMessage, ChatRequest, Client, KnownServers, Protocol, SecurityTier, TrustDecision,
};
use serde_json::json;

struct PyServer {
    child: Child,
    url: String,
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Option<PyServer> {
    let py = nomyo_testkit::python::with_cryptography()?;
    let script = nomyo_testkit::python::v1_server_script();
    let child = Command::new(py)
        .args([script.as_str(), "--bits", "2048"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut server = PyServer {
        child,
        url: String::new(),
    };
    let mut line = String::new();
    BufReader::new(server.child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    server.url = line
        .trim()
        .strip_prefix("listening on ")
        .expect("the Python server did not start")
        .to_owned();
    Some(server)
}

#[tokio::test]
async fn talks_to_an_independent_python_implementation() {
    let Some(server) = start() else { return };
    let dir = tempfile::tempdir().unwrap();
    // A v1-only server: protocol v1 chosen explicitly (auto would refuse
    // the maximum tier over v1).
    let client = Client::builder()
        .protocol(Protocol::V1)
        .base_url(&server.url)
        .allow_http(true)
        .security_tier(SecurityTier::Maximum)
        .known_servers(KnownServers::File(dir.path().join("known_servers")))
        .build()
        .unwrap();
    let request = ChatRequest::new("any-model")
        .message(ChatMessage::user("bonjour ✓"))
        .seed(1)
        .with("tool_choice", json!("none"));
    let answer = client.create(&request).await.unwrap();
    assert_eq!(answer.text(), Some("python saw: bonjour ✓"));
    let keys: Vec<&str> = answer.extra["request_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(keys, ["messages", "model", "seed", "tool_choice"]);
    let m = &answer.metadata;
    assert_eq!(m.security_tier.as_deref(), Some("maximum"));
    assert_eq!(
        m.encryption_algorithm.as_deref(),
        Some("hybrid-aes256-rsa4096")
    );
    assert!(m.payload_id.is_some());
    assert!(matches!(
        client.server_key().await.unwrap().trust(),
        TrustDecision::FirstUse { .. }
    ));
    // The client's 4096-bit ephemeral key was accepted and used for the answer.
    assert_eq!(client.client_public_key().await.unwrap().bits(), 4096);
    // A second request reuses everything.
    let again = client.create(&request).await.unwrap();
    assert_eq!(again.text(), Some("python saw: bonjour ✓"));
}
