//! The `nomyo` binary under test: a clean environment, `chat` and `bench`
//! command lines, and checks of a finished command's output.

use super::*;

/// The `nomyo` binary under test.
pub fn nomyo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nomyo"))
}

/// `nomyo` with `home` as its HOME, none of the caller's configuration,
/// log or connection variables, and no input.
pub fn nomyo_at_home(home: &Path) -> Command {
    let mut cmd = nomyo();
    cmd.env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("RUST_LOG")
        .env_remove("NOMYO_API_KEY")
        .env_remove("NOMYO_BASE_URL")
        .env_remove("NOMYO_MODEL")
        .stdin(Stdio::null());
    cmd
}

/// The arguments (the program first) of `nomyo chat` with model `tiny`
/// against `url` over plain HTTP, the known-servers file `known`, then
/// `extra`.
pub fn chat_args(url: &str, known: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        env!("CARGO_BIN_EXE_nomyo"),
        "chat",
        "--base-url",
        url,
        "--allow-http",
        "-m",
        "tiny",
        "--known-servers",
        known.to_str().unwrap(),
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

/// `nomyo bench --base-url URL --allow-http --model tiny` in a clean
/// environment (HOME = `home`, no RUST_LOG or NOMYO_*), the API key `key`
/// in $BENCH_KEY, known servers in `known_servers`, stdin closed.
pub fn bench_cmd(url: &str, home: &Path, known_servers: &Path, key: &str) -> Command {
    let mut cmd = nomyo_at_home(home);
    cmd.args([
        "bench",
        "--base-url",
        url,
        "--allow-http",
        "--api-key-env",
        "BENCH_KEY",
        "--model",
        "tiny",
        "--known-servers",
    ])
    .arg(known_servers)
    .env("BENCH_KEY", key);
    cmd
}

/// A finished command's stdout (UTF-8).
pub fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// A finished command's stderr (UTF-8).
pub fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// Asserts the exit code, showing stdout and stderr otherwise.
#[track_caller]
pub fn assert_exit(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "exit status; stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
}
