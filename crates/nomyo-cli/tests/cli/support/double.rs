//! The OpenAI-compatible upstream double (instant, or slow/holding on
//! request, streamed answers sent chunk by chunk) and the HTTP plumbing to
//! write other doubles.

use super::*;

/// In a prompt: the upstream sends one streamed chunk, then holds the
/// stream open (for [`HOLD_FOR`]) without finishing it.
pub const HOLD_STREAM: &str = "HOLD-STREAM";
/// In a prompt: the upstream waits [`HOLD_FOR`] before answering.
pub const SLOW: &str = "SLOW-ANSWER";
/// How long a held or slow answer is held.
pub const HOLD_FOR: Duration = Duration::from_secs(30);
/// Content chunks of a normal streamed answer (sent 1 ms apart).
pub const STREAM_CHUNKS: usize = 4;

/// An OpenAI-compatible upstream on 127.0.0.1 (a thread per connection,
/// keep-alive): `GET /v1/models` lists `tiny`; `POST /v1/chat/completions`
/// answers at once (or as the prompt markers above say) and is counted.
pub struct Upstream {
    /// `http://127.0.0.1:PORT/v1`.
    pub url: String,
    /// Chat requests received.
    pub posts: Arc<AtomicU64>,
}

/// Starts an [`Upstream`] whose answers say "hi".
pub fn upstream() -> Upstream {
    upstream_answering("hi")
}

/// Starts an [`Upstream`] whose answers (plain, and the first chunk of a
/// stream) say `answer` (plain ASCII, no JSON escaping needed).
pub fn upstream_answering(answer: &str) -> Upstream {
    let answer = answer.to_owned();
    let posts = Arc::new(AtomicU64::new(0));
    let counter = posts.clone();
    let url = http_double(move |request, out| answer_chat(request, out, &counter, &answer));
    Upstream { url, posts }
}

/// One HTTP/1.1 request as the doubles here read it.
pub struct Request {
    /// The request line, trimmed: `POST /v1/chat/completions HTTP/1.1`.
    pub line: String,
    /// The body (as long as its Content-Length), as text.
    pub body: String,
}

/// `Content-Type` of JSON answers.
pub const JSON: &str = "application/json";

/// The `GET /v1/models` answer of the upstream doubles: one model, `tiny`.
pub const MODELS: &str = r#"{"object":"list","data":[{"id":"tiny","object":"model"}]}"#;

/// Serves keep-alive HTTP/1.1 on 127.0.0.1:0, a thread per connection:
/// `answer` writes the reply to each request and says whether to keep the
/// connection open. Returns `http://127.0.0.1:PORT/v1`.
pub fn http_double<F>(answer: F) -> String
where
    F: Fn(&Request, &mut TcpStream) -> std::io::Result<bool> + Send + Sync + 'static,
{
    let answer = Arc::new(answer);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let answer = answer.clone();
            std::thread::spawn(move || {
                let _ = connection(stream, &*answer);
            });
        }
    });
    url
}

fn connection<F>(stream: TcpStream, answer: &F) -> std::io::Result<()>
where
    F: Fn(&Request, &mut TcpStream) -> std::io::Result<bool>,
{
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    while let Some(request) = read_request(&mut reader)? {
        if !answer(&request, &mut out)? {
            break;
        }
    }
    Ok(())
}

/// The next request on a connection; `None` once the peer closed it.
fn read_request(reader: &mut impl BufRead) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim();
        if h.is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    Ok(Some(Request {
        line: line.trim().to_owned(),
        body: String::from_utf8_lossy(&body).into_owned(),
    }))
}

/// Writes one whole response (with a Content-Length).
pub fn write_response(
    out: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let reason = if status == 200 { "OK" } else { "Error" };
    write!(
        out,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    out.flush()
}

fn chunk_event(text: Option<&str>) -> String {
    let (delta, finish) = match text {
        Some(t) => (
            format!(r#"{{"role":"assistant","content":"{t}"}}"#),
            "null".to_owned(),
        ),
        None => ("{}".to_owned(), r#""stop""#.to_owned()),
    };
    format!(
        "data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1764300000,\"model\":\"tiny\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish}}}]}}\n\n"
    )
}

fn write_chunk(out: &mut TcpStream, data: &str) -> std::io::Result<()> {
    write!(out, "{:x}\r\n{data}\r\n", data.len())?;
    out.flush()
}

/// The [`Upstream`]'s answer to one request; false: close the connection.
fn answer_chat(
    request: &Request,
    out: &mut TcpStream,
    posts: &AtomicU64,
    answer: &str,
) -> std::io::Result<bool> {
    let body = &request.body;
    if request.line.starts_with("GET /v1/models") {
        write_response(out, 200, JSON, MODELS)?;
        return Ok(true);
    }
    posts.fetch_add(1, Ordering::SeqCst);
    if body.contains(SLOW) {
        std::thread::sleep(HOLD_FOR);
    }
    if body.contains(r#""stream":true"#) {
        write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        )?;
        out.flush()?;
        if body.contains(HOLD_STREAM) {
            write_chunk(out, &chunk_event(Some("partial")))?;
            std::thread::sleep(HOLD_FOR);
            return Ok(false);
        }
        write_chunk(out, &chunk_event(Some(answer)))?;
        for i in 1..STREAM_CHUNKS {
            write_chunk(out, &chunk_event(Some(&format!(" w{i}"))))?;
            std::thread::sleep(Duration::from_millis(1));
        }
        write_chunk(out, &chunk_event(None))?;
        write_chunk(out, "data: [DONE]\n\n")?;
        write!(out, "0\r\n\r\n")?;
        out.flush()?;
    } else {
        let reply = format!(
            r#"{{"id":"c1","object":"chat.completion","created":1764300000,"model":"tiny","choices":[{{"index":0,"finish_reason":"stop","message":{{"role":"assistant","content":"{answer}"}}}}],"usage":{{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}}}"#
        );
        write_response(out, 200, JSON, &reply)?;
    }
    Ok(true)
}
