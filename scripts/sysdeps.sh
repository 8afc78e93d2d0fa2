#!/usr/bin/env bash
# The system packages nomyo-rs needs, in one place, and the one test of
# whether they are there. Every script that installs anything reads this file:
# scripts/demo.sh, .ci/run, bench/*.sh and deploy/Containerfile.
#
#   scripts/sysdeps.sh list GROUP...      the Debian packages of the groups
#   scripts/sysdeps.sh missing GROUP...   those not installed (exit 0 either way)
#   scripts/sysdeps.sh install GROUP...   apt-get install the missing ones
#
# Groups:
#   build    compile nomyo (aws-lc is C, llama.cpp is C++ driven by cmake, and
#            llama-cpp-sys-2's bindgen loads libclang.so, which only
#            libclang-dev provides: libclang-cpp.so.* is another library;
#            the server's TPM attestation links libtss2, found by pkg-config)
#   test     what .ci/run's tests start or call (a real Redis, curl, a
#            software TPM with tpm2-tools; libtss2-dev is in build)
#   runtime  what the release binary links at run time (deploy/Containerfile)
#
# "Installed" means dpkg says so (`install ok installed`), never that some
# file matching a pattern exists. SYSDEPS_DPKG_ADMINDIR points dpkg-query at
# another database (tests use a fake one). Python's venv and pip are checked
# by running them, since the interpreter need not be Debian's.
#
# It can also be sourced: `. scripts/sysdeps.sh` defines sysdeps_list,
# sysdeps_missing and sysdeps_install without running anything.

sysdeps_build=(cmake libclang-dev g++ make pkg-config libtss2-dev)
sysdeps_test=(redis-server curl swtpm swtpm-tools tpm2-tools)
# runtime: the image's Debian release (deploy/Containerfile: trixie, whose
# libtss2 packages carry the t64 suffix); esys pulls mu, sys and the TCTIs.
sysdeps_runtime=(ca-certificates libgomp1 libstdc++6 libtss2-esys-3.0.2-0t64 libtss2-tctildr0t64)

sysdeps_list() {
    local group
    for group in "$@"; do
        case "$group" in
            build) printf '%s\n' "${sysdeps_build[@]}" ;;
            test) printf '%s\n' "${sysdeps_test[@]}" ;;
            runtime) printf '%s\n' "${sysdeps_runtime[@]}" ;;
            *) echo "sysdeps: unknown group '$group' (build, test, runtime)" >&2; return 2 ;;
        esac
    done
}

# Is the Debian package installed? Asks dpkg, nothing else.
sysdeps_installed() {
    local args=(-W -f='${db:Status-Abbrev}')
    [[ -n "${SYSDEPS_DPKG_ADMINDIR:-}" ]] && args=(--admindir="$SYSDEPS_DPKG_ADMINDIR" "${args[@]}")
    [[ "$(dpkg-query "${args[@]}" "$1" 2>/dev/null)" == ii* ]]
}

# Packages of the groups that are missing, one a line; for the test group
# also the Debian packages that give a working `python3 -m venv` with pip when
# the interpreter on PATH lacks them.
sysdeps_missing() {
    local pkgs pkg group
    pkgs="$(sysdeps_list "$@")" || return 2
    for pkg in $pkgs; do
        sysdeps_installed "$pkg" || echo "$pkg"
    done
    for group in "$@"; do
        if [[ "$group" == test || "$group" == build ]]; then
            python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || echo python3-venv
            python3 -m pip --version >/dev/null 2>&1 || echo python3-pip
        fi
    done | sort -u
}

sysdeps_install() {
    local missing
    missing="$(sysdeps_missing "$@")" || return 2
    if [[ -z "$missing" ]]; then
        echo "system packages ($*): all installed" >&2
        return 0
    fi
    # shellcheck disable=SC2086 # one package a word
    echo "installing Debian packages: $(echo $missing)" >&2
    local sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq
    # shellcheck disable=SC2086
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends $missing >/dev/null
    missing="$(sysdeps_missing "$@")"
    if [[ -n "$missing" ]]; then
        echo "still missing after apt-get install: $missing" >&2
        return 1
    fi
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -euo pipefail
    cmd="${1:-}"
    shift || true
    case "$cmd" in
        list) sysdeps_list "$@" ;;
        missing) sysdeps_missing "$@" ;;
        install) sysdeps_install "$@" ;;
        *)
            echo "usage: $0 list|missing|install GROUP... (groups: build, test, runtime)" >&2
            exit 2
            ;;
    esac
fi
