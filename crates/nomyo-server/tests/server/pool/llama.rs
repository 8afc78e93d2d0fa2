//! Two real llama.cpp servers behind one pool (needs a `llama-server`
//! binary in `NOMYO_LLAMA_SERVER`).

use super::*;

/// A llama.cpp `llama-server` child, killed on drop.
struct Llama(std::process::Child);

impl Drop for Llama {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `llama-server` on a free port; returns it and its base URL once it
/// answers `GET /health` with 200.
async fn start_llama(bin: &str, model: &str) -> (Llama, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new(bin)
        .args([
            "-m", model, "--alias", "smol", "-c", "2048", "-np", "2", "-t", "1",
        ])
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("NOMYO_LLAMA_SERVER runs");
    let child = Llama(child);
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let ok = client
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "llama-server did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (child, format!("http://127.0.0.1:{port}/v1"))
}

/// Two real llama.cpp servers behind one pool; one is killed mid-load and the
/// requests move to the other. Local only (not CI):
/// `NOMYO_LLAMA_SERVER=target/peer/build/bin/llama-server cargo test -p nomyo-server --test server pool:: -- --ignored --nocapture`
/// (model: `models/SmolLM2-135M-Instruct.Q4_1.gguf`, or `NOMYO_LLAMA_MODEL`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a llama-server binary in NOMYO_LLAMA_SERVER"]
async fn real_llama_servers_fail_over_when_one_dies() {
    let Ok(bin) = std::env::var("NOMYO_LLAMA_SERVER") else {
        panic!("set NOMYO_LLAMA_SERVER to a llama-server binary");
    };
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let model = std::env::var("NOMYO_LLAMA_MODEL")
        .unwrap_or_else(|_| format!("{root}/models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    let (mut a, a_url) = start_llama(&bin, &model).await;
    let (_b, b_url) = start_llama(&bin, &model).await;
    let mut c = PoolConfig::new(vec![
        UpstreamConfig::new(a_url.clone()),
        UpstreamConfig::new(b_url.clone()),
    ]);
    c.health_check_interval = Duration::from_millis(500);
    let m = EndpointMetrics::default();
    let p = Arc::new(PoolBackend::connect("p", c, m.clone()).await.unwrap());
    assert!(p.models().contains(&"smol".to_owned()), "{:?}", p.models());
    let ask = move |i: usize| {
        let p = Arc::clone(&p);
        async move {
            let body = json!({"model": "smol", "max_tokens": 24, "temperature": 0,
                "messages": [{"role": "user", "content": format!("Count to {}", i % 7 + 3)}]});
            p.chat(ChatRequest {
                body: body.as_object().unwrap().clone(),
                tier: SecurityTier::Standard,
                request_id: format!("real{i}"),
            })
            .await
        }
    };
    let ok = |m: &EndpointMetrics, url: &str| {
        m.requests
            .get_or_create(&EndpointOutcomeLabels {
                backend: "p".into(),
                endpoint: redact_url(url),
                outcome: "ok",
            })
            .get()
    };
    // Warm-up: both serve.
    let warm = futures::future::join_all((0..4).map(&ask)).await;
    assert!(warm.iter().all(Result::is_ok), "{warm:?}");
    assert!(ok(&m, &a_url) > 0 && ok(&m, &b_url) > 0);
    // Load, and A dies while it has requests in flight.
    let load = tokio::spawn({
        let ask = ask.clone();
        async move { futures::future::join_all((10..26).map(ask)).await }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let a_ok_at_kill = ok(&m, &a_url);
    a.0.kill().unwrap();
    let _ = a.0.wait();
    let answers = load.await.unwrap();
    for r in &answers {
        let v = r.as_ref().expect("no client-visible error");
        assert!(v["choices"][0]["message"]["content"].is_string());
    }
    let a_failed = m
        .requests
        .get_or_create(&EndpointOutcomeLabels {
            backend: "p".into(),
            endpoint: redact_url(&a_url),
            outcome: "failed",
        })
        .get();
    eprintln!(
        "A ok before kill {a_ok_at_kill}, after {}; A failed over {a_failed}; B ok {}",
        ok(&m, &a_url),
        ok(&m, &b_url)
    );
    assert!(a_failed > 0, "A had requests in flight that moved to B");
    // Requests that were still in flight on A may have finished the instant
    // it was killed; after that, B serves everything.
    let after = futures::future::join_all((30..34).map(&ask)).await;
    assert!(after.iter().all(Result::is_ok));
    assert!(ok(&m, &b_url) >= 4 + (answers.len() as u64) / 2);
}
