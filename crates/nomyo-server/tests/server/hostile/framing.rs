//! The matrix's HTTP framing rows: oversized and invalid headers,
//! conflicting lengths, chunked bodies, `Expect: 100-continue`, HTTP/1.0, an
//! HTTP/2 preface followed by garbage, an unknown version and odd targets.

use super::cases::{case, Case};
use super::*;

/// The HTTP framing rows; `enc_hex` is the v2 encapsulated key the
/// `Expect: 100-continue` row sends.
pub(super) fn http_framing(enc_hex: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    let g = seal_json(&chat("m", "x"));
    let v1_headers = |id: &str| {
        format!(
            "X-Payload-ID: {id}\r\nX-Public-Key: {}\r\nContent-Type: application/octet-stream\r\n",
            g.public_key_header
        )
    };
    cases.push(case(
        "header value of 1 MiB",
        format!(
            "GET /health HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(1 << 20)
        )
        .into_bytes(),
        &[431, 0],
    ));
    cases.push(case(
        "X-Public-Key of 64 KiB",
        v1_raw(&payload_id(), &"A".repeat(64 * 1024), &g.body, &[]),
        &[400, 431],
    ));
    cases.push(case(
        "200 headers",
        {
            let mut h = String::from("GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n");
            for i in 0..200 {
                h.push_str(&format!("X-H{i}: v\r\n"));
            }
            h.push_str("\r\n");
            h.into_bytes()
        },
        &[431, 0],
    ));
    cases.push(case(
        "control character in a header value",
        b"GET /health HTTP/1.1\r\nHost: t\r\nX-Bad: a\x01b\r\nConnection: close\r\n\r\n".to_vec(),
        &[400, 0],
    ));
    cases.push(case(
        "garbage request line",
        b"\x16\x03\x01 NOT HTTP AT ALL\r\n\r\n".to_vec(),
        &[400, 0],
    ));
    cases.push(case(
        "Content-Length and Transfer-Encoding together",
        format!(
            "POST /v1/chat/secure_completion HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            v1_headers(&payload_id())
        )
        .into_bytes(),
        &[400, 0],
    ));
    cases.push(case(
        "two different Content-Lengths",
        format!(
            "POST /v1/chat/secure_completion HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{}Content-Length: 5\r\nContent-Length: 7\r\n\r\nabcdefg",
            v1_headers(&payload_id())
        )
        .into_bytes(),
        &[400, 0],
    ));
    cases.push(case(
        "Content-Length not a number",
        format!(
            "POST /v1/chat/secure_completion HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{}Content-Length: 12abc\r\n\r\nabc",
            v1_headers(&payload_id())
        )
        .into_bytes(),
        &[400, 0],
    ));
    cases.push(case(
        "chunked body with a bad chunk size",
        format!(
            "POST /v1/chat/secure_completion HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{}Transfer-Encoding: chunked\r\n\r\nZZZ\r\nabc\r\n0\r\n\r\n",
            v1_headers(&payload_id())
        )
        .into_bytes(),
        &[400, 0],
    ));
    cases.push(case(
        "chunked body beyond the limit (no Content-Length)",
        {
            let mut b = format!(
                "POST /v1/chat/secure_completion HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{}Transfer-Encoding: chunked\r\n\r\n",
                v1_headers(&payload_id())
            )
            .into_bytes();
            let chunk = vec![b' '; 256 * 1024];
            for _ in 0..5 {
                b.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                b.extend_from_slice(&chunk);
                b.extend_from_slice(b"\r\n");
            }
            b.extend_from_slice(b"0\r\n\r\n");
            b
        },
        &[413],
    ));
    cases.push(case(
        "chunked good v1 body",
        {
            let mut b = format!(
                "POST /v1/chat/secure_completion HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{}Transfer-Encoding: chunked\r\n\r\n",
                v1_headers(&g.id)
            )
            .into_bytes();
            for c in g.body.chunks(100) {
                b.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                b.extend_from_slice(c);
                b.extend_from_slice(b"\r\n");
            }
            b.extend_from_slice(b"0\r\n\r\n");
            b
        },
        &[200],
    ));
    cases.push(case(
        "Expect: 100-continue with a Content-Length beyond the limit",
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nConnection: close\r\nEhbp-Encapsulated-Key: {enc_hex}\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            LIMIT * 4
        )
        .into_bytes(),
        &[413],
    ));
    cases.push(case(
        "HTTP/1.0 GET /health",
        b"GET /health HTTP/1.0\r\n\r\n".to_vec(),
        &[200],
    ));
    let g10 = seal_json(&chat("m", "over HTTP/1.0"));
    cases.push(case(
        "HTTP/1.0 v1 request with Content-Length",
        {
            let mut b = format!(
                "POST /v1/chat/secure_completion HTTP/1.0\r\n{}Content-Length: {}\r\n\r\n",
                v1_headers(&g10.id).replace(&g.public_key_header, &g10.public_key_header),
                g10.body.len()
            )
            .into_bytes();
            b.extend_from_slice(&g10.body);
            b
        },
        &[200],
    ));
    cases.push(case(
        "HTTP/1.0 v1 request without Content-Length (no body)",
        format!(
            "POST /v1/chat/secure_completion HTTP/1.0\r\n{}\r\n{}",
            v1_headers(&payload_id()),
            String::from_utf8_lossy(&g.body)
        )
        .into_bytes(),
        &[400],
    ));
    cases.push(case(
        "HTTP/2 preface then garbage",
        {
            let mut b = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
            b.extend_from_slice(&[0xff; 64]);
            b
        },
        // The server speaks HTTP/2 after the preface and closes with GOAWAY.
        &[0],
    ));
    cases.push(case(
        "unknown HTTP version",
        b"GET /health HTTP/3.7\r\nHost: t\r\n\r\n".to_vec(),
        &[400, 505, 0],
    ));
    cases.push(case(
        "absolute-form target to another host",
        b"GET http://evil.example/health HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n".to_vec(),
        &[200, 400, 404],
    ));
    cases.push(case(
        "path traversal",
        b"GET /../../etc/passwd HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_vec(),
        &[400, 404],
    ));
    cases
}
