//! `nomyo serve --context N`: a context the embedded model cannot take is a
//! usage error (exit 2) at start-up, before anything is served; `serve
//! --help` states the default and its memory bound.

// The server under test is a real `nomyo serve` (feature `serve`).
#![cfg(feature = "serve")]
#![allow(clippy::unwrap_used)]

use crate::support;

use support::{assert_exit, nomyo, stdout};
#[cfg(feature = "engine")]
use support::{model, serve_embedded_cmd, stderr};

// The embedded model: not in the client-only build.
#[cfg(feature = "engine")]
#[test]
fn a_context_the_model_cannot_take_exits_2() {
    // Zero is refused by the flag parser, whatever the model.
    let o = nomyo()
        .args(["serve", "--ephemeral-key", "--context", "0"])
        .output()
        .unwrap();
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("--context"), "{}", stderr(&o));
    assert!(stderr(&o).contains("at least 64 tokens"), "{}", stderr(&o));

    let Some(model) = model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let o = serve_embedded_cmd(dir.path(), &model, &["--context", "8193"])
        .output()
        .unwrap();
    assert_exit(&o, 2);
    let err = stderr(&o);
    assert!(err.contains("context 8193 is out of range"), "{err}");
    assert!(err.contains("from 64 to 8192"), "{err}");
    assert!(!stdout(&o).contains("listening on"), "{}", stdout(&o));
}

#[test]
fn serve_help_states_the_context_default_and_its_bound() {
    let o = nomyo().args(["serve", "--help"]).output().unwrap();
    assert_exit(&o, 0);
    let help = stdout(&o);
    assert!(help.contains("--context <N>"), "{help}");
    assert!(help.contains("per sequence"), "{help}");
    assert!(help.contains("1 GiB"), "{help}");
    assert!(help.contains("--parallel <N>"), "{help}");
    assert!(help.contains("KV heads"), "{help}");
}
