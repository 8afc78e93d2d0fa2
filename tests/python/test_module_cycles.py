"""scripts/check-module-cycles.py: it refuses a cycle between a crate's
top-level modules, through a path or a name the crate root re-exports, and
accepts layers."""
import pathlib
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "check-module-cycles.py"


def run(tmp_path, files):
    for name, text in files.items():
        path = tmp_path / "crates" / "demo" / "src" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return subprocess.run(
        [sys.executable, str(SCRIPT)], cwd=tmp_path, capture_output=True, text=True
    )


LIB = "mod client;\nmod keys;\nmod transport;\npub use client::Client;\n"


def test_layers_pass(tmp_path):
    done = run(tmp_path, {
        "lib.rs": LIB,
        "client.rs": "use crate::keys::Keys;\nuse crate::transport::Transport;\npub struct Client;\n",
        "keys.rs": "use crate::transport::Transport;\n// crate::client is only named in a comment\npub struct Keys;\n",
        "transport.rs": "pub struct Transport;\n",
    })
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no module cycles" in done.stdout


def test_a_cycle_through_a_reexported_name_is_refused(tmp_path):
    done = run(tmp_path, {
        "lib.rs": LIB,
        "client.rs": "use crate::keys::Keys;\npub struct Client;\n",
        # keys/ reaches back up to the facade through the root's re-export.
        "keys/mod.rs": "mod fetch;\npub struct Keys;\n",
        "keys/fetch.rs": "impl crate::Client { fn f(&self) {} }\n",
        "transport.rs": "pub struct Transport;\n",
    })
    assert done.returncode == 1, done.stdout
    assert "modules in a cycle: client, keys" in done.stdout
    assert "transport" not in done.stdout.split("modules in a cycle:")[1].split("(")[0]


def test_a_grouped_use_counts(tmp_path):
    done = run(tmp_path, {
        "lib.rs": LIB,
        "client.rs": "use crate::{keys::Keys, transport};\npub struct Client;\n",
        "keys.rs": "pub struct Keys;\n",
        "transport.rs": "use crate::{client};\npub struct Transport;\n",
    })
    assert done.returncode == 1, done.stdout
    assert "modules in a cycle: client, transport" in done.stdout
