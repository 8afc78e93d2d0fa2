//! A command on a pseudo-terminal (util-linux `script`): its standard
//! streams are the terminal, what it shows is collected as it comes, with
//! the time each read arrived, and the test types into it.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long [`Terminal::wait_for`] and [`Terminal::exited`] wait.
const WAIT: Duration = Duration::from_secs(60);

/// What a terminal showed, and (arrival time, end offset) of each read.
type Shown = Arc<Mutex<(String, Vec<(Instant, usize)>)>>;

/// A command on a pseudo-terminal: what it shows, with the time each byte
/// arrived, and its input.
pub struct Terminal {
    child: Child,
    input: Option<ChildStdin>,
    /// Everything shown so far, and (arrival time, end offset) of each read.
    shown: Shown,
}

impl Terminal {
    /// Starts `args` (the program, then its arguments) on a new terminal,
    /// without the log and `NOMYO_*` connection variables of the test's
    /// environment.
    pub fn start<S: AsRef<str>>(args: &[S]) -> Self {
        // `exec`: the program replaces the shell `script` starts, so that
        // Ctrl-C reaches the program alone (a shell left waiting in the
        // terminal's foreground group would take the signal too, and end
        // with it once the program has exited).
        let line = args
            .iter()
            .map(|a| format!("'{}'", a.as_ref()))
            .collect::<Vec<_>>()
            .join(" ");
        let line = format!("exec {line}");
        let mut child = Command::new("script")
            .args(["-q", "-e", "-c", &line, "/dev/null"])
            .env("SHELL", "/bin/sh")
            .env_remove("RUST_LOG")
            .env_remove("NOMYO_LOG")
            .env_remove("NOMYO_API_KEY")
            .env_remove("NOMYO_BASE_URL")
            .env_remove("NOMYO_MODEL")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("util-linux script");
        let mut out = child.stdout.take().unwrap();
        let shown: Shown = Arc::new(Mutex::new((String::new(), Vec::new())));
        let sink = shown.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut s = sink.lock().unwrap();
                s.0.push_str(&String::from_utf8_lossy(&buf[..n]));
                let end = s.0.len();
                s.1.push((Instant::now(), end));
            }
        });
        let input = child.stdin.take();
        Self {
            child,
            input,
            shown,
        }
    }

    /// Types `bytes` as they are (`b"\x03"` is Ctrl-C).
    pub fn send(&mut self, bytes: &[u8]) {
        let input = self.input.as_mut().unwrap();
        input.write_all(bytes).unwrap();
        input.flush().unwrap();
    }

    /// Types `line` and a newline.
    pub fn type_line(&mut self, line: &str) {
        let input = self.input.as_mut().unwrap();
        input.write_all(line.as_bytes()).unwrap();
        input.write_all(b"\n").unwrap();
        input.flush().unwrap();
    }

    /// Answers a password prompt: types `line` and Enter (a carriage
    /// return) once the screen shows `prompt` and the terminal has stopped
    /// echoing. A program prints its prompt before it turns echo off; text
    /// typed in between would be echoed by the terminal, not by the program.
    pub fn answer(&mut self, prompt: &str, line: &str) {
        self.wait_for(prompt, 0);
        self.wait_for_no_echo();
        let input = self.input.as_mut().unwrap();
        input.write_all(line.as_bytes()).unwrap();
        input.write_all(b"\r").unwrap();
        input.flush().unwrap();
    }

    /// Waits (up to 60 s) until the program's terminal has echo off, as
    /// `stty -a` on its standard input reports it.
    fn wait_for_no_echo(&self) {
        let deadline = Instant::now() + WAIT;
        loop {
            if self.echo_is_off() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the terminal still echoes; it shows:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the terminal of the program (the child `script` runs) has
    /// echo off; false while that cannot be told yet.
    fn echo_is_off(&self) -> bool {
        let pid = self.child.id();
        let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        else {
            return false;
        };
        for child in children.split_whitespace() {
            let Ok(tty) = std::fs::read_link(format!("/proc/{child}/fd/0")) else {
                continue;
            };
            let Ok(out) = Command::new("stty").arg("-a").arg("-F").arg(&tty).output() else {
                continue;
            };
            let settings = String::from_utf8_lossy(&out.stdout);
            if settings.split_whitespace().any(|w| w == "-echo") {
                return true;
            }
        }
        false
    }

    /// Everything shown so far.
    pub fn text(&self) -> String {
        self.shown.lock().unwrap().0.clone()
    }

    /// The offset of `needle` at or after `from`, waiting up to 60 s.
    pub fn wait_for(&self, needle: &str, from: usize) -> usize {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = self.text();
            if let Some(i) = text.get(from..).and_then(|t| t.find(needle)) {
                return from + i;
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} after offset {from}; the terminal shows:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// When the byte at `offset` arrived, and in which read.
    pub fn arrival(&self, offset: usize) -> (Instant, usize) {
        let s = self.shown.lock().unwrap();
        let i = s.1.iter().position(|(_, end)| *end > offset).unwrap();
        (s.1[i].0, i)
    }

    /// Ends the input (Ctrl-D), then waits for the process to end.
    pub fn finish(mut self) -> (ExitStatus, String) {
        drop(self.input.take());
        self.exited()
    }

    /// Waits (up to 60 s) for the process to end, the input left open; its
    /// exit status (`script -e` exits with the command's) and what it showed.
    pub fn exited(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                return (status, self.text());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "the command did not end; the terminal shows:\n{}",
                    self.text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM to the command (script's child, exec'd by its shell).
    pub fn terminate(&self) {
        let pid = self.child.id();
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
        let child = children.split_whitespace().next().expect("a child process");
        let ok = Command::new("kill")
            .args(["-TERM", child])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
