//! The exit codes of docs/CLI.md §2: usage errors 2, refused callers 3,
//! security failures 4, server and network failures 5, others 1.

use super::*;

#[test]
fn usage_errors_exit_2() {
    let env = Env::new();
    for (args, needle) in [
        (
            vec!["chat", "--base-url", "http://192.0.2.1:9", "hi"],
            "--allow-http",
        ),
        (
            vec!["chat", "--allow-http", "--protocol", "v1", "--stream", "hi"],
            "v1 cannot stream",
        ),
        (vec!["chat", "--base-url", "ftp://x", "hi"], "scheme"),
        (vec!["chat", "--tier", "extreme", "hi"], "tier"),
        (vec!["chat", "--pin", "sha256:12", "hi"], "fingerprint"),
        (
            vec!["chat", "--allow-http", "--key-dir", "/nonexistent/k", "hi"],
            "nomyo keygen",
        ),
    ] {
        let o = env.run(&args);
        assert_exit(&o, 2);
        let e = human_error(&o);
        assert!(e.contains(needle), "{args:?}: {e}");
    }
}

#[cfg(feature = "serve")]
#[test]
fn refused_callers_exit_3() {
    let up = upstream();
    let env = Env::new();
    let keys = env.home.path().join("api_keys");
    std::fs::write(&keys, "sk-right\n").unwrap();
    let s = serve(&up, &["--api-key-file", keys.to_str().unwrap()]);
    let dir = key_dir(&env, None);

    let o = env.chat(&s, &dir, &["-m", "tiny", "hi"]);
    assert_exit(&o, 3);
    assert!(human_error(&o).contains("authentication failed"));

    let wrong = env.home.path().join("wrong");
    std::fs::write(&wrong, "sk-wrong\n").unwrap();
    let o = env.chat(
        &s,
        &dir,
        &[
            "-m",
            "tiny",
            "--api-key-file",
            wrong.to_str().unwrap(),
            "hi",
        ],
    );
    assert_exit(&o, 3);
    assert!(!stderr(&o).contains("sk-wrong"));

    // NOMYO_API_KEY when no flag is given; --api-key-env names another variable.
    let o = env.chat_env(
        &s,
        &dir,
        &["-m", "tiny", MARKER],
        &[("NOMYO_API_KEY", "sk-right")],
    );
    assert_exit(&o, 0);
    let o = env.chat_env(
        &s,
        &dir,
        &["-m", "tiny", "--api-key-env", "MY_KEY", MARKER],
        &[("MY_KEY", "sk-right"), ("NOMYO_API_KEY", "sk-wrong")],
    );
    assert_exit(&o, 0);
}

#[cfg(feature = "serve")]
#[test]
fn security_failures_exit_4() {
    let (_up, s, env) = setup();
    let dir = key_dir(&env, None);

    // A pin that does not match.
    let pin = format!("sha256:{}", "ab".repeat(32));
    let o = env.chat(&s, &dir, &["--pin", &pin, "hi"]);
    assert_exit(&o, 4);
    assert!(human_error(&o).contains("pin mismatch"));
    assert!(
        !env.known_servers().exists(),
        "pins bypass the known-servers file"
    );

    // A known-servers record that does not match: the key "changed".
    let origin = s.url.trim_end_matches('/');
    std::fs::create_dir_all(env.known_servers().parent().unwrap()).unwrap();
    std::fs::write(env.known_servers(), format!("{origin} {pin}\n")).unwrap();
    let o = env.chat(&s, &dir, &["hi"]);
    assert_exit(&o, 4);
    let e = human_error(&o);
    assert!(e.contains("HAS CHANGED") && e.contains("line 1"), "{e}");
    assert!(e.contains("nomyo fingerprint --server"), "{e}");
    assert_eq!(
        std::fs::read_to_string(env.known_servers()).unwrap(),
        format!("{origin} {pin}\n")
    );

    // The right pin wins over the file.
    let o = env.run(&["fingerprint", "--server", &s.url, "--allow-http"]);
    let fp = stdout(&o)
        .lines()
        .next()
        .unwrap()
        .strip_prefix("v1 ")
        .unwrap()
        .to_owned();
    let o = env.chat(&s, &dir, &["--pin", &fp, MARKER]);
    assert_exit(&o, 0);
}

#[cfg(feature = "serve")]
#[test]
fn server_and_network_failures_exit_5_and_others_1() {
    let (up, s, env) = setup();
    let dir = key_dir(&env, None);

    *up.fail_status.lock().unwrap() = Some(500);
    let o = env.chat(&s, &dir, &["-m", "tiny", "--max-retries", "0", "hi"]);
    assert_exit(&o, 5);
    assert!(human_error(&o).contains("server error (HTTP 502)"));
    *up.fail_status.lock().unwrap() = None;

    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let o = env.run(&[
        "chat",
        "--base-url",
        &url,
        "--allow-http",
        "--max-retries",
        "0",
        "hi",
    ]);
    assert_exit(&o, 5);
    assert!(human_error(&o).contains("cannot reach"));

    // Unknown model: 404, exit 1.
    let o = env.chat(&s, &dir, &["-m", "no-such-model", "hi"]);
    assert_exit(&o, 1);
    assert!(human_error(&o).contains("not found"));
}
