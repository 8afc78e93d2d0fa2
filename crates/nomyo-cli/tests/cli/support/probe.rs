//! Reading a running server from outside: plain HTTP GETs, its metrics, and
//! `/proc` figures of its process.

use super::*;

/// One `GET path` over a fresh HTTP/1.1 connection: (status, body).
pub fn http_get_bytes(addr: &str, path: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(raw.len(), |i| i + 4);
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "chunked answer to GET {path}"
    );
    (status, raw[split..].to_vec())
}

/// [`http_get_bytes`] with a text body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let (status, body) = http_get_bytes(addr, path);
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A metric's value from `GET /metrics` (the first sample of that name).
pub fn metric(addr: &str, name: &str) -> f64 {
    let (status, body) = http_get(addr, "/metrics");
    assert_eq!(status, 200, "GET /metrics: {body}");
    body.lines()
        .find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == name || k.starts_with(&format!("{name}{{"))).then(|| v.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no metric {name} in:\n{body}"))
}

/// Open file descriptors of process `pid` (Linux `/proc`).
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Resident set of process `pid`, KiB (Linux `/proc`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}
