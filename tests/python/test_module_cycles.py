"""scripts/check-module-cycles.py: it refuses a cycle between a crate's
top-level modules or between the children of one module, through a path or
a name a module re-exports, and accepts layers."""
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


def test_a_cycle_between_the_children_of_a_module_is_refused(tmp_path):
    files = {
        "lib.rs": "mod worker;\n",
        "worker/mod.rs": "mod sampler;\nmod sequence;\nuse sequence::Generator;\n",
        "worker/sampler.rs": "pub fn seed() -> u32 { 0 }\n",
        # Through the parent's import of a child's type.
        "worker/sequence.rs": "use super::sampler::seed;\npub struct Generator;\n",
    }
    assert run(tmp_path, files).returncode == 0
    files["worker/sampler.rs"] = "use super::Generator;\nimpl Generator { fn s(&self) {} }\n"
    done = run(tmp_path, files)
    assert done.returncode == 1, done.stdout
    assert "in worker, modules in a cycle: sampler, sequence" in done.stdout
