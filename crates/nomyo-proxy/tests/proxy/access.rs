//! The loopback host check and the access token, in-process.

use super::*;

/// In-process (no socket): the loopback host check and the access token.
#[tokio::test]
async fn local_access_policy() {
    let up = upstream(Speaks::V2, false, false).await;
    let client = client_for(&up).build().unwrap();
    let chat = |host: &str, auth: Option<&str>| {
        let mut b = Request::builder()
            .method("POST")
            .uri("/v1/chat/completions")
            .header("host", host)
            .header("content-type", "application/json");
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.body(axum::body::Body::from(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}).to_string(),
        ))
        .unwrap()
    };
    let status =
        |app: Router, req: Request| async move { app.oneshot(req).await.unwrap().status() };

    let open = nomyo_proxy::app(ProxyState::new(client.clone()));
    assert_eq!(
        status(open.clone(), chat("localhost:8080", None)).await,
        200
    );
    assert_eq!(
        status(open.clone(), chat("127.0.0.1:8080", None)).await,
        200
    );
    // DNS rebinding: a page at attacker.example resolving to 127.0.0.1.
    assert_eq!(
        status(open.clone(), chat("attacker.example:8080", None)).await,
        403
    );

    let token = SecretString::from("local-token");
    let guarded = nomyo_proxy::app(ProxyState::new(client).access_token(&token));
    assert_eq!(
        status(guarded.clone(), chat("proxy.lan:8080", None)).await,
        401
    );
    assert_eq!(
        status(guarded.clone(), chat("proxy.lan:8080", Some("Bearer nope"))).await,
        401
    );
    assert_eq!(
        status(
            guarded.clone(),
            chat("proxy.lan:8080", Some("Bearer local-token"))
        )
        .await,
        200
    );
    let health = Request::builder()
        .uri("/health")
        .header("host", "proxy.lan")
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(status(guarded, health).await, 200);
    assert_eq!(up.bodies().len(), 3);
}
