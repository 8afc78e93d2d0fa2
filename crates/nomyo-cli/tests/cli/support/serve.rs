//! A real `nomyo serve` process: its command lines, start-up, stderr and
//! the key fingerprint it prints.

use super::*;

/// The API key the servers started here accept.
pub const API_KEY: &str = "soak-faults-key-7e21";

/// A running `nomyo serve`, killed on drop; its stderr is collected.
pub struct Serve {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Everything it wrote on stderr so far.
    pub stderr: Arc<Mutex<String>>,
    /// The thread collecting stderr (done once the process is gone).
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Serve {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    /// Waits until stderr contains `needle`; false after `within`.
    pub fn wait_stderr(&self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.stderr.lock().unwrap().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Serve {
    /// Stops the process and returns everything it wrote on stderr, up to
    /// its last line (the reader thread is joined, not raced).
    pub fn stop_and_collect(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let text = self.stderr.lock().unwrap().clone();
        text
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary directory with an API key file holding [`API_KEY`].
pub fn api_key_file(dir: &Path) -> PathBuf {
    let keys = dir.join("api_keys");
    std::fs::write(&keys, format!("{API_KEY}\n")).unwrap();
    keys
}

/// Starts `cmd` (a `nomyo serve ...` command, possibly wrapped in `sh -c`)
/// and waits for `listening on URL`. `None` if it exits first; its stderr
/// is then in the second value.
pub fn start(mut cmd: Command) -> Result<Serve, (Option<i32>, String)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nomyo serve");
    let stderr = Arc::new(Mutex::new(String::new()));
    let sink = stderr.clone();
    let err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(url) = line.strip_prefix("listening on ") {
                    std::thread::spawn(move || for _ in lines {});
                    return Ok(Serve {
                        child,
                        url: url.trim().to_owned(),
                        stderr,
                        reader: Some(reader),
                    });
                }
            }
            _ => {
                let status = child.wait().unwrap();
                let _ = reader.join();
                let text = stderr.lock().unwrap().clone();
                return Err((status.code(), text));
            }
        }
    }
}

/// The flags of a throwaway server key: in memory, 2048 bits (fast).
pub const EPHEMERAL_KEY: [&str; 3] = ["--ephemeral-key", "--key-bits", "2048"];

/// `nomyo serve` on 127.0.0.1:0 in front of `upstream`, with the API key
/// file in `dir`, plus `extra` flags (`--ephemeral-key` or `--key-dir`, ...).
pub fn serve_cmd(upstream: &Upstream, dir: &Path, extra: &[&str]) -> Command {
    let mut cmd = serve_cmd_open(&upstream.url, extra);
    cmd.arg("--api-key-file").arg(api_key_file(dir));
    cmd
}

/// `nomyo serve` on 127.0.0.1:0 (unless `extra` has `--listen`) in front of
/// the upstream at `upstream_url`, no API key required, plus `extra` flags.
pub fn serve_cmd_open(upstream_url: &str, extra: &[&str]) -> Command {
    let mut cmd = nomyo();
    cmd.arg("serve");
    if !extra.contains(&"--listen") {
        cmd.args(["--listen", "127.0.0.1:0"]);
    }
    cmd.args(["--upstream", upstream_url])
        .args(extra)
        .env_remove("RUST_LOG")
        .env_remove("NOMYO_LOG");
    cmd
}

/// `nomyo serve` of the embedded `model` on 127.0.0.1:0 with a throwaway
/// 2048-bit key, run in `dir`, without RUST_LOG or NOMYO_MODEL_FILE, plus
/// `extra` flags.
pub fn serve_embedded_cmd(dir: &Path, model: &Path, extra: &[&str]) -> Command {
    let mut cmd = nomyo();
    cmd.current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("NOMYO_MODEL_FILE")
        .arg("serve")
        .args(EPHEMERAL_KEY)
        .args(["--listen", "127.0.0.1:0", "--model"])
        .arg(model)
        .args(extra);
    cmd
}

/// [`start`], panicking with the exit code and stderr if it exits first.
pub fn started(cmd: Command) -> Serve {
    start(cmd).unwrap_or_else(|(code, err)| panic!("nomyo serve exited ({code:?}): {err}"))
}

/// The fingerprint `nomyo serve` printed on stderr ("server key sha256:...").
pub fn printed_fingerprint(srv: &Serve) -> nomyo_client::Fingerprint {
    assert!(
        srv.wait_stderr("server key sha256:", Duration::from_secs(10)),
        "{}",
        srv.stderr.lock().unwrap()
    );
    let text = srv.stderr.lock().unwrap().clone();
    let at = text.find("server key sha256:").unwrap() + "server key ".len();
    text[at..at + 71].parse().unwrap()
}
