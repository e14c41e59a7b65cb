//! The contract of the HTTP API and of the CLI, from the outside.

use crate::common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::http::{Client, enc};
use common::*;
use refract::ApiState;
use serde_json::{Value, json};
use tokio::net::TcpListener;

fn refract(data: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_refract")).arg("--data-dir").arg(data).args(args).output().unwrap()
}

fn ok(output: Output) -> String {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let plugins = plugins_dir(dir.path(), &["account_summary"]);
    let events = dir.path().join("events.jsonl");
    write_jsonl(&events, &bank_events(5, 20, 1));
    ok(refract(&data, &["import", events.to_str().unwrap()]));
    let plugins = plugins.to_str().unwrap();
    ok(refract(&data, &["run", "--plugins", plugins, "--exit-when-caught-up", "--no-http"]));
    for args in [
        &["dead-letters", "account-summary"][..],
        &["status"],
        &["query", "account-summary", "accounts", "--lines"],
        &["get", "account-summary", "accounts", "account-1"],
    ] {
        // `refract ... | head -0`: the reader is gone before the first line is written.
        let mut child = Command::new(env!("CARGO_BIN_EXE_refract"))
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "refract {args:?}: {stderr}");
        assert!(output.status.success(), "refract {args:?}: {:?} {stderr}", output.status);
    }
}

#[test]
fn importing_an_empty_file_reports_the_real_head() {
    let dir = tempfile::tempdir().unwrap();
    let events = bank_events(5, 20, 1);
    let n = events.len();
    let file = dir.path().join("events.jsonl");
    write_jsonl(&file, &events);
    let imported = ok(refract(dir.path(), &["import", file.to_str().unwrap()]));
    assert_eq!(imported.trim(), format!("imported {n} events; head is now {n}"));
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "\n").unwrap();
    let imported = ok(refract(dir.path(), &["import", empty.to_str().unwrap()]));
    assert_eq!(imported.trim(), format!("imported 0 events; head is now {n}"));
}

/// API state over the stores, without a host: no projection runs, so only
/// the requests move the stores.
fn state(stores: &Stores) -> ApiState {
    ApiState::new(stores.events.clone(), stores.models.clone(), tokio::sync::broadcast::channel(16).0)
}

/// Serves the API on an ephemeral loopback port.
async fn serve(state: ApiState) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(refract::serve(listener, state, std::future::pending()));
    addr
}

/// The template with every `{param}` filled in.
fn fill(template: &str) -> String {
    template.split('/').map(|s| if s.starts_with('{') { "x" } else { s }).collect::<Vec<_>>().join("/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_document_and_the_router_describe_the_same_routes() {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::open(dir.path()).await;
    let addr = serve(state(&stores)).await;
    let doc = Client::connect(addr).await.get("/openapi.json").await.json();
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 9, "{paths:?}");
    let no_route = |reply: &common::http::Reply| {
        reply.status == 404 && reply.json()["error"].as_str().unwrap().starts_with("no such endpoint")
    };
    for (template, item) in paths {
        let path = fill(template);
        let documented: Vec<String> = item.as_object().unwrap().keys().map(|m| m.to_uppercase()).collect();
        // Every documented operation is routed: it may fail (no projection `x`), but not as an unknown route or method.
        for method in &documented {
            let body = if method == "POST" {
                json!({ "events": [{ "type": "Opened", "payload": {} }] }).to_string().into_bytes()
            } else {
                Vec::new()
            };
            let reply = Client::connect(addr).await.request(method, &path, body).await;
            assert!(!no_route(&reply) && reply.status != 405, "{method} {path}: {} {}", reply.status, reply.text);
        }
        // And the router answers no method the document leaves out.
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            if !documented.iter().any(|m| m == method) {
                let reply = Client::connect(addr).await.request(method, &path, Vec::new()).await;
                assert_eq!(reply.status, 405, "{method} {path} is served but not documented: {}", reply.text);
                assert!(reply.json()["error"].is_string(), "{}", reply.text);
            }
        }
    }
    // Paths next to the documented ones are not routed.
    for path in ["/events/x", "/streams/x/events/y", "/projections/x/y/z/w", "/health/x", "/openapi"] {
        let reply = Client::connect(addr).await.get(path).await;
        assert!(no_route(&reply), "GET {path} is served but not documented: {} {}", reply.status, reply.text);
    }
}

/// Log lines written by the tracing subscriber, for finding an error id in them.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// One thread, so the handler logs where the subscriber below is installed.
#[tokio::test(flavor = "current_thread")]
async fn a_store_failure_answers_500_with_an_id_and_no_backend_text() {
    let log = Log::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::open(dir.path()).await;
    let addr = serve(state(&stores)).await;
    let mut client = Client::connect(addr).await;
    assert_eq!(client.get("/projections").await.status, 200);
    // Break the read-model store under the server's feet.
    let url = format!("sqlite://{}", dir.path().join("models.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("DROP TABLE refract_generations").execute(&pool).await.unwrap();

    let reply = client.get("/projections").await;
    assert_eq!(reply.status, 500, "{}", reply.text);
    assert_eq!(reply.content_type, "application/json");
    let body = reply.json();
    let (error, id) = (body["error"].as_str().unwrap(), body["error_id"].as_str().unwrap());
    for backend in ["refract_generations", "no such table", "SELECT", "database", "sqlite"] {
        assert!(!reply.text.to_lowercase().contains(&backend.to_lowercase()), "`{backend}` in {}", reply.text);
    }
    assert!(error.contains(id), "{error}");
    // The log has the whole error under that id.
    let logged = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    let line = logged.lines().find(|l| l.contains(id)).unwrap_or_else(|| panic!("no {id} in the log:\n{logged}"));
    assert!(line.contains("no such table: refract_generations"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_in_a_document_id_or_a_filter_is_never_a_server_error() {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::open(dir.path()).await;
    let mut host = stores.host(refract::SyncConfig::default());
    host.start(host.runtime().load(&plugin("account_summary")).unwrap()).await.unwrap();
    let addr = common::http::start_api(&host).await;
    let mut client = Client::connect(addr).await;
    let accounts = "/projections/account-summary/accounts";
    for path in [
        format!("{accounts}/%00"),
        format!("{accounts}/a%00b"),
        format!("{accounts}?filter={}", enc("id=\0")),
        format!("{accounts}?filter={}", enc("owner=a\0b")),
        format!("{accounts}?filter={}", enc("owner=in:[\"\0\"]")),
        format!("{accounts}?order={}", enc("\0")),
        format!("/projections/account-summary/{}", enc("\0")),
    ] {
        let reply = client.get(&path).await;
        assert!(reply.status < 500, "GET {path}: {} {}", reply.status, reply.text);
        assert_eq!(reply.content_type, "application/json", "GET {path}");
        if reply.status >= 400 {
            assert!(reply.json()["error"].is_string(), "GET {path}: {}", reply.text);
        }
    }
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_in_a_stream_id_is_refused_with_400() {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::open(dir.path()).await;
    let addr = serve(state(&stores)).await;
    let body = json!({ "events": [{ "type": "Opened", "payload": {} }] });
    let reply = Client::connect(addr).await.post("/streams/%00/events", &body).await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert!(reply.json()["error"].is_string(), "{}", reply.text);
}

/// Sends `head` then `body` one byte per `every`, and returns all the server
/// wrote back until it closed the connection (or `give_up` passed).
fn trickle(addr: SocketAddr, head: &str, body: &[u8], every: Duration, give_up: Duration) -> (String, bool) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let reader = std::thread::spawn({
        let mut stream = stream.try_clone().unwrap();
        move || {
            stream.set_read_timeout(Some(give_up)).unwrap();
            let (mut out, mut buf) = (Vec::new(), [0; 4096]);
            let closed = loop {
                match stream.read(&mut buf) {
                    Ok(0) => break true,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                    // Bytes we sent after the server closed make it reset the connection.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
                    Err(_) => break false,
                }
            };
            (String::from_utf8_lossy(&out).into_owned(), closed)
        }
    });
    let start = Instant::now();
    for byte in body {
        // A write fails once the server has closed: the rest is not wanted.
        if stream.write_all(std::slice::from_ref(byte)).is_err() || start.elapsed() > give_up {
            break;
        }
        std::thread::sleep(every);
    }
    reader.join().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_too_slowly_gets_408_and_the_connection_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::open(dir.path()).await;
    let addr = serve(state(&stores).with_body_timeout(Duration::from_millis(300))).await;
    let body = json!({ "events": [{ "type": "Opened", "payload": { "owner": "slow" } }] }).to_string();
    let head = format!(
        "POST /streams/s-1/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let started = Instant::now();
    let (reply, closed) = tokio::task::spawn_blocking(move || {
        trickle(addr, &head, body.as_bytes(), Duration::from_millis(100), Duration::from_secs(10))
    })
    .await
    .unwrap();
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply:?}");
    assert!(reply.contains("\"error\":\"request body not received within 300 ms\""), "{reply}");
    assert!(closed, "the server closed the connection");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    // Nothing was appended, and a body that arrives in time still works.
    let mut client = Client::connect(addr).await;
    assert_eq!(client.get("/health").await.json()["head"], 0);
    assert_eq!(client.append("s-1", "Opened", json!({}), Value::Null).await, 1);
}

/// Headers trickled a byte at a time never complete a request: the
/// connection is closed once the header deadline passes (there is no
/// request to answer yet), and the server keeps serving others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_sent_too_slowly_close_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::open(dir.path()).await;
    let addr = serve(state(&stores).with_header_timeout(Duration::from_millis(500))).await;
    let head = "GET /health HTTP/1.1\r\nhost: x\r\nx-slow: ".to_owned();
    let rest = "a".repeat(200) + "\r\n\r\n";
    let started = Instant::now();
    let (reply, closed) = tokio::task::spawn_blocking(move || {
        trickle(addr, &head, rest.as_bytes(), Duration::from_millis(100), Duration::from_secs(15))
    })
    .await
    .unwrap();
    assert!(closed, "the server closed the connection");
    assert!(!reply.contains("200 OK"), "a request trickled past the deadline was served: {reply}");
    assert!(started.elapsed() < Duration::from_secs(5), "closed only after {:?}", started.elapsed());
    let mut client = Client::connect(addr).await;
    assert_eq!(client.get("/health").await.json()["head"], 0);
}

/// An event source that can only be read: the role a synced table or a
/// foreign stream plays. It implements `EventSource`'s two methods, nothing else.
struct ReadOnly(Arc<dyn refract::EventStore>);

#[async_trait::async_trait]
impl refract::EventSource for ReadOnly {
    async fn head(&self) -> Result<u64, refract::SourceError> {
        self.0.head().await
    }
    async fn read(
        &self,
        after: u64,
        up_to: u64,
        subscription: &refract::Subscription,
        limit: usize,
    ) -> Result<Vec<refract::Event>, refract::SourceError> {
        self.0.read(after, up_to, subscription, limit).await
    }
}

/// A host over a read-only source projects it and serves reads and
/// consistency waits; an append through its API is refused by name (405),
/// and nothing reaches the log behind the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_over_a_read_only_source_projects_it_and_refuses_appends() {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::open(dir.path()).await;
    let events = bank_events(20, 500, 3);
    append_all(stores.events.as_ref(), &events).await;
    let source: Arc<dyn refract::EventSource> = Arc::new(ReadOnly(stores.events.clone()));
    let mut host =
        refract::Host::from_source(source, stores.models_dyn(), refract::SyncConfig::default(), Default::default())
            .unwrap();
    assert!(host.events().is_none());
    host.start(host.runtime().load(&plugin("account_summary")).unwrap()).await.unwrap();
    host.wait_until_caught_up().await.unwrap();
    let addr = serve(ApiState::from_host(&host)).await;
    let mut client = Client::connect(addr).await;

    let want = expected_accounts(&events);
    let (id, account) = want.iter().next().unwrap();
    let reply = client.get(&format!("/projections/account-summary/accounts/{id}?min_position=500")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["document"]["balance"], json!(account.balance));

    let body = json!({ "events": [{ "type": "Opened", "payload": {} }] });
    let reply = client.post("/streams/account-x/events", &body).await;
    assert_eq!(reply.status, 405, "{}", reply.text);
    assert!(reply.json()["error"].as_str().unwrap().contains("read-only event source"), "{}", reply.text);
    assert_eq!(refract::EventSource::head(stores.events.as_ref()).await.unwrap(), 500, "nothing was appended");
    host.shutdown().await;
}

/// Writes `request` on a fresh connection and reads until the server closes
/// it: (status, content type, body).
fn raw_request(addr: SocketAddr, request: &[u8]) -> (u16, String, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(request).unwrap();
    let mut out = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading the answer: {e}; so far {}", String::from_utf8_lossy(&out)),
        }
    }
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no head in {text:?}"));
    let status = head[9..12].parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type: ").map(str::to_owned))
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

/// Requests the HTTP parser refuses before any handler runs (a `>` or a
/// space left unencoded, a header without a colon, a URL over the parser's
/// limit) get the same JSON error body as every other error, not an empty
/// one; so do bad percent-encoding and a parameter given twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::open(dir.path()).await;
    let addr = serve(state(&stores)).await;
    let unparsable = "the request is not valid HTTP: most often a URL holds a character that must be \
                      percent-encoded (a space, \", <, >, \\, ^, `, {, | or }), e.g. filter=balance%3E%3D100 for \
                      balance>=100; else the request line or a header is malformed";
    let long = format!("GET /projections?{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(70_000));
    let cases: [(&[u8], u16, &str); 4] = [
        (b"GET /projections/bank/accounts?filter=balance>=100 HTTP/1.1\r\nhost: x\r\n\r\n", 400, unparsable),
        (b"GET /projections/bank/accounts?filter=owner=ada lovelace HTTP/1.1\r\nhost: x\r\n\r\n", 400, unparsable),
        (b"GET /projections HTTP/1.1\r\nhost x\r\n\r\n", 400, unparsable),
        (long.as_bytes(), 414, "the URL is too long: send fewer or shorter parameters"),
    ];
    for (request, status, error) in cases {
        let shown = String::from_utf8_lossy(&request[..request.len().min(80)]).into_owned();
        let (got, content_type, body) = raw_request(addr, request);
        assert_eq!((got, content_type.as_str()), (status, "application/json"), "{shown}: {body}");
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), json!({ "error": error }), "{shown}");
    }

    let mut client = Client::connect(addr).await;
    let accounts = "/projections/bank/accounts";
    let bad_percent = "bad percent-encoding in the value of `filter`: `%` must be followed by two hex digits (write a literal % as %25)";
    for (query, error) in [
        ("filter=balance%3E%3D1%ZZ", bad_percent.to_owned()),
        ("filter=balance%3E%3", bad_percent.to_owned()),
        ("fil%tr=1", "bad percent-encoding in the parameter name `fil%tr`: `%` must be followed by two hex digits (write a literal % as %25)".to_owned()),
        ("filter=%FF", "the value of `filter` is not UTF-8 once percent-decoded".to_owned()),
        ("limit=1&limit=2", "`limit` is given more than once; give it once (only filter, agg, group_by repeat)".to_owned()),
        ("order=id&order=-id", "`order` is given more than once; give it once (only filter, agg, group_by repeat)".to_owned()),
    ] {
        let reply = client.get(&format!("{accounts}?{query}")).await;
        assert_eq!((reply.status, reply.content_type.as_str()), (400, "application/json"), "{query}: {}", reply.text);
        assert_eq!(reply.json(), json!({ "error": error }), "{query}");
    }
    // Repeatable parameters still repeat: this one fails later, on the
    // unknown projection, not on the repeat.
    let reply = client.get(&format!("{accounts}?filter=a%3D1&filter=b%3D2")).await;
    assert_eq!(reply.status, 404, "{}", reply.text);
}
