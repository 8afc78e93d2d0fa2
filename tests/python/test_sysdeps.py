"""scripts/sysdeps.sh: the one presence test for system packages.

A fresh Debian 12 image ships libclang-cpp.so.14 (another library) but not
libclang.so, which bindgen loads: a file glob such as
`ls /usr/lib/llvm-*/lib/libclang*.so*` matched it and skipped installing
libclang-dev, and the build failed. These tests run the detection against a
fake dpkg database (`dpkg-query --admindir`) beside a fake root holding only
libclang-cpp, and a stand-in apt-get that records what it was asked for.
"""

import glob
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SYSDEPS = REPO / "scripts" / "sysdeps.sh"

pytestmark = pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="needs dpkg-query (Debian)")


def stanza(name, status="install ok installed"):
    return (
        f"Package: {name}\nStatus: {status}\nPriority: optional\nSection: devel\n"
        f"Maintainer: nobody <nobody@example.invalid>\nArchitecture: amd64\nVersion: 1.0\n"
        f"Description: fake\n\n"
    )


def fake_dpkg(tmp_path, packages):
    admin = tmp_path / "dpkg"
    (admin / "info").mkdir(parents=True)
    (admin / "updates").mkdir()
    (admin / "status").write_text("".join(stanza(*p) if isinstance(p, tuple) else stanza(p) for p in packages))
    return admin


def fake_root_with_libclang_cpp_only(tmp_path):
    root = tmp_path / "root"
    for d in ("usr/lib/llvm-14/lib", "usr/lib/x86_64-linux-gnu"):
        (root / d).mkdir(parents=True)
        (root / d / "libclang-cpp.so.14").write_bytes(b"\x7fELF")
    return root


def sysdeps(admin, *args, path=None):
    env = dict(os.environ, SYSDEPS_DPKG_ADMINDIR=str(admin))
    if path is not None:
        env["PATH"] = f"{path}:{env['PATH']}"
    return subprocess.run(
        ["bash", str(SYSDEPS), *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_libclang_cpp_alone_does_not_count_as_libclang_dev(tmp_path):
    root = fake_root_with_libclang_cpp_only(tmp_path)
    # The old presence test would have been fooled by this root:
    old = glob.glob(str(root / "usr/lib/llvm-*/lib/libclang*.so*"))
    assert old, "the fake root should match the old glob"
    # Debian 12's base image: libclang-cpp14 and the compilers, no libclang-dev.
    admin = fake_dpkg(tmp_path, ["cmake", "libclang-cpp14", "g++", "make", "pkg-config", "libtss2-dev"])
    r = sysdeps(admin, "missing", "build")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["libclang-dev"]


def test_removed_package_with_config_left_is_missing(tmp_path):
    admin = fake_dpkg(
        tmp_path,
        ["cmake", "g++", "make", "pkg-config", "libtss2-dev", ("libclang-dev", "deinstall ok config-files")],
    )
    r = sysdeps(admin, "missing", "build")
    assert r.stdout.split() == ["libclang-dev"]


def test_nothing_missing_when_dpkg_has_every_package(tmp_path):
    everything = subprocess.run(
        ["bash", str(SYSDEPS), "list", "build", "test", "runtime"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "libclang-dev" in everything and "redis-server" in everything
    admin = fake_dpkg(tmp_path, everything)
    r = sysdeps(admin, "missing", "build", "test", "runtime")
    assert r.returncode == 0, r.stderr
    # Python's venv and pip are checked by running them; this interpreter has both.
    assert r.stdout.split() == []


def test_groups_are_separate(tmp_path):
    admin = fake_dpkg(tmp_path, [])
    build = set(sysdeps(admin, "missing", "build").stdout.split())
    runtime = set(sysdeps(admin, "missing", "runtime").stdout.split())
    assert {"cmake", "libclang-dev", "g++", "make", "pkg-config", "libtss2-dev"} <= build
    assert "redis-server" not in build
    assert runtime == {
        "ca-certificates",
        "libgomp1",
        "libstdc++6",
        "libtss2-esys-3.0.2-0t64",
        "libtss2-tctildr0t64",
    }


def test_unknown_group_is_an_error(tmp_path):
    r = sysdeps(fake_dpkg(tmp_path, []), "missing", "everything")
    assert r.returncode == 2
    assert "unknown group" in r.stderr


def test_install_asks_apt_for_exactly_the_missing_packages(tmp_path):
    admin = fake_dpkg(tmp_path, ["cmake", "libclang-cpp14", "g++", "make", "pkg-config", "libtss2-dev"])
    stubs = tmp_path / "bin"
    stubs.mkdir()
    log = tmp_path / "apt.log"
    for name in ("apt-get", "sudo"):
        stub = stubs / name
        if name == "sudo":
            stub.write_text('#!/bin/sh\nexec "$@"\n')
        else:
            stub.write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
        stub.chmod(0o755)
    r = sysdeps(admin, "install", "build", path=stubs)
    calls = log.read_text().splitlines()
    assert calls[0] == "update -qq"
    assert calls[1].split()[-1] == "libclang-dev"
    assert "cmake" not in calls[1]
    # The stand-in installed nothing, so the script must say so and fail.
    assert r.returncode == 1
    assert "still missing after apt-get install: libclang-dev" in r.stderr
