//! A spinner on stderr while something slow happens, only on a terminal.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Runs until [`Spinner::stop`] (or drop).
pub struct Spinner {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Spinner {
    /// Starts a spinner with `label` when `enabled` (stderr is a terminal).
    pub fn start(label: &str, enabled: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let handle = enabled.then(|| {
            let stop = stop.clone();
            let label = label.to_owned();
            std::thread::spawn(move || {
                let frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
                let mut i = 0;
                // Wait a moment first: fast operations show nothing.
                std::thread::sleep(Duration::from_millis(150));
                while !stop.load(Ordering::Relaxed) {
                    let mut e = std::io::stderr().lock();
                    let _ = write!(e, "\r{} {label}…", frames[i % frames.len()]);
                    let _ = e.flush();
                    drop(e);
                    i += 1;
                    std::thread::sleep(Duration::from_millis(80));
                }
                if i > 0 {
                    let mut e = std::io::stderr().lock();
                    let _ = write!(e, "\r\x1b[2K");
                    let _ = e.flush();
                }
            })
        });
        Self { stop, handle }
    }

    /// Stops and erases the spinner.
    pub fn stop(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.finish();
    }
}
