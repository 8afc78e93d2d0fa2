//! Capturing what a process logs, for the canary tests: no prompt, answer,
//! key or token may appear in any log line.

use std::sync::Arc;

/// A log sink for `tracing_subscriber::fmt().with_writer(...)`: everything
/// written is kept in memory, for tests that read what the server logged.
#[derive(Clone, Default)]
pub struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Capture {
    /// Forgets what was logged so far.
    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }

    /// What was logged so far (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// The first line of `logs` that holds one of `secrets` (`(what, secret)`
/// pairs): what it is and the line.
pub fn find_secret<'a, 's>(
    logs: &'a str,
    secrets: &[(&'s str, &str)],
) -> Option<(&'s str, &'a str)> {
    secrets.iter().find_map(|&(what, secret)| {
        logs.lines()
            .find(|l| l.contains(secret))
            .map(|line| (what, line))
    })
}

/// Whether `logs` hold the server's access line of a served (200) request
/// with id `request_id`: how the canaries check that one id travels from the
/// proxy through the server.
pub fn has_access_line(logs: &str, request_id: &str) -> bool {
    let id = format!("request_id={request_id}");
    logs.lines()
        .any(|l| l.contains("nomyo::access") && l.contains(&id) && l.contains("status=200"))
}
