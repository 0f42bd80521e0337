//! `--profiling-port`: the counterpart of Go's `net/http/pprof` for a running node.
//!
//! A small HTTP/1.1 server on `127.0.0.1:PORT` (loopback only: profiles reveal code paths):
//! * `GET /debug/pprof/` — an index page;
//! * `GET /debug/pprof/profile?seconds=N` — samples the whole process's CPU use for N seconds
//!   (default 30, at most 300) at 99 Hz and returns a flamegraph SVG;
//!   `&format=collapsed` returns the folded stacks as text instead (for `inferno` and friends).

use std::fmt::Write as _;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Default and largest profile length.
const DEFAULT_SECONDS: f64 = 30.0;
const MAX_SECONDS: f64 = 300.0;
/// Sampling frequency (Hz); odd so it does not beat with periodic work.
const FREQUENCY: i32 = 99;
/// Largest request head read.
const MAX_HEAD: usize = 16 << 10;

/// Binds `127.0.0.1:port` and serves profiles in the background until the runtime ends.
pub async fn start(port: u16) -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(async move {
                        if let Err(e) = serve(stream).await {
                            tracing::debug!("profiling: connection failed: {e}");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("profiling: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(addr)
}

struct Response {
    status: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Response {
    fn text(status: &'static str, body: impl Into<String>) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into().into_bytes(),
        }
    }
}

async fn serve(stream: TcpStream) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut reader = BufReader::new(r);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).await?;
    // Read (and ignore) the headers, bounded.
    let mut total = request_line.len();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).await?;
        total += n;
        if n == 0 || line == "\r\n" || line == "\n" || total > MAX_HEAD {
            break;
        }
    }
    let resp = route(&request_line).await;
    let head = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        resp.status,
        resp.content_type,
        resp.body.len()
    );
    w.write_all(head.as_bytes()).await?;
    w.write_all(&resp.body).await?;
    w.shutdown().await
}

async fn route(request_line: &str) -> Response {
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Response::text("400 Bad Request", "malformed request line\n");
    };
    if method != "GET" {
        return Response::text("405 Method Not Allowed", "only GET is served\n");
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match path {
        "/debug/pprof" | "/debug/pprof/" => Response {
            status: "200 OK",
            content_type: "text/html; charset=utf-8",
            body: INDEX.as_bytes().to_vec(),
        },
        "/debug/pprof/profile" => {
            let mut seconds = DEFAULT_SECONDS;
            let mut collapsed = false;
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                match pair.split_once('=') {
                    Some(("seconds", v)) => match v.parse::<f64>() {
                        Ok(s) if s.is_finite() && s > 0.0 && s <= MAX_SECONDS => seconds = s,
                        _ => {
                            return Response::text(
                                "400 Bad Request",
                                format!("seconds must be a number in (0, {MAX_SECONDS}]\n"),
                            )
                        }
                    },
                    Some(("format", "collapsed")) => collapsed = true,
                    Some(("format", "svg")) => collapsed = false,
                    _ => {
                        return Response::text(
                            "400 Bad Request",
                            format!(
                            "unknown parameter {pair:?}; use seconds=N and format=svg|collapsed\n"
                        ),
                        )
                    }
                }
            }
            let d = Duration::from_secs_f64(seconds);
            match tokio::task::spawn_blocking(move || profile(d, collapsed)).await {
                Ok(r) => r,
                Err(e) => Response::text("500 Internal Server Error", format!("{e}\n")),
            }
        }
        _ => Response::text(
            "404 Not Found",
            "not found; see /debug/pprof/ for what is served\n",
        ),
    }
}

/// Samples the process for `d` and renders the report.
fn profile(d: Duration, collapsed: bool) -> Response {
    let guard = match pprof::ProfilerGuardBuilder::default()
        .frequency(FREQUENCY)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
    {
        Ok(g) => g,
        Err(e) => {
            return Response::text(
                "409 Conflict",
                format!("cannot start the profiler ({e}); is another profile running? try again when it ends\n"),
            )
        }
    };
    std::thread::sleep(d);
    let report = match guard.report().build() {
        Ok(r) => r,
        Err(e) => return Response::text("500 Internal Server Error", format!("{e}\n")),
    };
    drop(guard);
    let samples: isize = report.data.values().sum();
    if collapsed {
        let mut out = String::new();
        for (frames, count) in &report.data {
            out.push_str(&frames.thread_name_or_id());
            for frame in frames.frames.iter().rev() {
                for symbol in frame.iter().rev() {
                    let _ = write!(out, ";{symbol}");
                }
            }
            let _ = writeln!(out, " {count}");
        }
        return Response::text("200 OK", out);
    }
    if samples == 0 {
        // An idle process takes no CPU samples; still answer with a picture that says so.
        let svg = format!(
            "<?xml version=\"1.0\" standalone=\"no\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"640\" height=\"60\"><text x=\"10\" y=\"35\" font-family=\"monospace\" font-size=\"14\">no CPU samples: the node was idle for {:.1} s</text></svg>\n",
            d.as_secs_f64()
        );
        return Response {
            status: "200 OK",
            content_type: "image/svg+xml",
            body: svg.into_bytes(),
        };
    }
    let mut svg = Vec::new();
    match report.flamegraph(&mut svg) {
        Ok(()) => Response {
            status: "200 OK",
            content_type: "image/svg+xml",
            body: svg,
        },
        Err(e) => Response::text("500 Internal Server Error", format!("flamegraph: {e}\n")),
    }
}

const INDEX: &str = "<!DOCTYPE html>
<html><head><title>steward profiling</title></head><body>
<h1>steward profiling</h1>
<ul>
<li><a href=\"/debug/pprof/profile?seconds=30\">/debug/pprof/profile?seconds=30</a>:
CPU flamegraph (SVG) of the next 30 seconds; <code>seconds</code> up to 300.</li>
<li><a href=\"/debug/pprof/profile?seconds=30&amp;format=collapsed\">/debug/pprof/profile?seconds=30&amp;format=collapsed</a>:
the same profile as folded stacks (text).</li>
</ul>
<p>Example: <code>curl -o cpu.svg 'http://127.0.0.1:PORT/debug/pprof/profile?seconds=10'</code></p>
</body></html>
";
