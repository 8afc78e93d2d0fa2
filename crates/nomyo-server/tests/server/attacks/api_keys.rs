//! API key guessing: nothing in a 401 tells how close a guess was.

use super::*;

/// A sealed v1 request for model `m` with `Authorization: Bearer {key}`.
async fn post_v1_with_key(base: &str, key: &str) -> reqwest::Response {
    let s = seal_json(&chat("m", "x"));
    http()
        .post(format!("{base}/v1/chat/secure_completion"))
        .header("authorization", format!("Bearer {key}"))
        .header("x-payload-id", &s.id)
        .header("x-public-key", &s.public_key_header)
        .body(s.body)
        .send()
        .await
        .unwrap()
}

/// Wrong API keys sharing 0, 1, half, all-but-one characters with a real
/// key (and the key with a character added or removed) all get the same 401
/// with byte-identical bodies, on both protocols: nothing in the answer
/// tells how close a guess was. (The comparison itself is of SHA-256 hashes
/// in constant time, `policy::ApiKeys::authenticate`; timings are not
/// asserted here: they are too noisy on a shared machine.)
#[tokio::test]
async fn api_key_guesses_sharing_a_prefix_get_identical_401s() {
    let real = "sk-nomyo-0123456789abcdefghijklmnopqrstuv";
    let mut keys = ApiKeys::default();
    keys.add_key(real);
    keys.add_key("sk-another-key-entirely-000000000000000");
    let (b, backend) = echo_state(&["m"]);
    let (base, _) = serve(b.api_keys(keys).build().unwrap()).await;
    let n = real.len();
    let mut guesses: Vec<String> = [0, 1, n / 2, n - 1]
        .iter()
        .map(|&k| {
            let mut g: Vec<u8> = real.as_bytes().to_vec();
            for c in g.iter_mut().skip(k) {
                *c = if *c == b'x' { b'y' } else { b'x' };
            }
            String::from_utf8(g).unwrap()
        })
        .collect();
    guesses.push(format!("{real}x"));
    guesses.push(real[..n - 1].to_owned());
    guesses.push(real.to_uppercase());
    let configs = key_configs(&base).await;
    let mut bodies = std::collections::BTreeSet::new();
    let mut v2_bodies = std::collections::BTreeSet::new();
    for g in &guesses {
        let resp = post_v1_with_key(&base, g).await;
        assert_eq!(resp.status(), 401, "{g}");
        bodies.insert(resp.bytes().await.unwrap().to_vec());
        let r = seal_v2(&kem_config(&configs, Kem::XWing), &chat("m", "x"));
        let resp = http()
            .post(format!("{base}/v1/chat/completions"))
            .header("authorization", format!("Bearer {g}"))
            .header("ehbp-encapsulated-key", &r.enc_hex)
            .body(r.body())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{g}");
        v2_bodies.insert(resp.bytes().await.unwrap().to_vec());
    }
    assert_eq!(bodies.len(), 1, "v1 401 bodies differ: {bodies:?}");
    assert_eq!(v2_bodies.len(), 1, "v2 401 bodies differ: {v2_bodies:?}");
    let body = bodies.into_iter().next().unwrap();
    assert!(!String::from_utf8_lossy(&body).contains("sk-"));
    assert_eq!(backend.calls.load(Ordering::SeqCst), 0);
    // The real key works (the test would be vacuous otherwise).
    let resp = post_v1_with_key(&base, real).await;
    assert_eq!(resp.status(), 200);
}
