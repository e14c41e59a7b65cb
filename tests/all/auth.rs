//! API tokens, the address check and CORS, against real `refract run`
//! processes: each route answers 401 without a token and 403 without its
//! scope, tokens are stored hashed, a public address needs tokens or an
//! explicit opt-out, and browsers get their preflight answered.

use std::process::Command;

use serde_json::{Value, json};

use crate::common::cli::refract;
use crate::common::http::{Client, Reply};
use crate::common::plugins_dir;
use crate::common::served::{bearer, make_token, serve};

/// The SHA-256 of `text` as `sha256sum` prints it: computed outside refract.
fn sha256sum(text: &str) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_owned()
}

async fn call(c: &mut Client, method: &str, path: &str, token: Option<&str>) -> Reply {
    let auth = token.map(bearer);
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    let body = if method == "POST" && path.ends_with("/events") {
        json!({ "events": [{ "type": "AccountOpened", "payload": { "owner": "ann", "initial_deposit": 5 } }] })
            .to_string()
            .into_bytes()
    } else {
        Vec::new()
    };
    c.request_with(method, path, &headers, body).await
}

fn assert_refused(reply: &Reply, status: u16, what: &str) {
    assert_eq!(reply.status, status, "{what}: {}", reply.text);
    assert!(reply.content_type.starts_with("application/json"), "{what}: {}", reply.content_type);
    assert!(reply.json()["error"].is_string(), "{what}: {}", reply.text);
    let challenge = reply.headers.get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
    assert!(challenge.as_deref().is_some_and(|c| c.starts_with("Bearer")), "{what}: {challenge:?}");
}

/// Every route of the table with a token requirement, taken from the
/// served OpenAPI document, with its path parameters filled in.
fn scoped_routes(doc: &Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(scope) = op["security"][0]["bearer"][0].as_str() else { continue };
            let concrete = path
                .replace("{name}", "account-summary")
                .replace("{collection}", "accounts")
                .replace("{id}", "account-1")
                .replace("{stream}", "account-1");
            out.push((method.to_uppercase(), concrete, scope.to_owned()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_route_needs_a_token_with_its_scope_and_secrets_are_stored_hashed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let plugins = plugins_dir(dir.path(), &["account_summary"]);
    let reader = make_token(&data, "reader", &["read"]);
    let appender = make_token(&data, "appender", &["append"]);
    let admin = make_token(&data, "ops", &["admin"]);
    // One token from refract.toml, two from a tokens file: both sources count.
    let config = dir.path().join("refract.toml");
    std::fs::write(&config, format!("[defaults]\ndeadline_ms = 5000\n\n{}", reader.entry)).unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(&tokens, format!("{}\n{}", appender.entry, admin.entry)).unwrap();
    for (made, file) in [(&reader, &config), (&appender, &tokens), (&admin, &tokens)] {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(made.secret.len() >= 32, "{}", made.secret);
        assert!(!text.contains(&made.secret), "the secret must not be stored");
        assert!(text.contains(&format!("sha256 = \"{}\"", sha256sum(&made.secret))), "{text}");
    }

    let (_host, addr) = serve(
        &data,
        "127.0.0.1:0",
        &[
            "--plugins",
            plugins.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--tokens",
            tokens.to_str().unwrap(),
        ],
    );
    let mut c = Client::connect(addr).await;

    // Open routes.
    assert_eq!(call(&mut c, "GET", "/health", None).await.status, 200);
    let doc = call(&mut c, "GET", "/openapi.json", None).await;
    assert_eq!(doc.status, 200);
    let doc = doc.json();
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");

    let routes = scoped_routes(&doc);
    let scopes: std::collections::BTreeSet<&str> = routes.iter().map(|(_, _, s)| s.as_str()).collect();
    assert_eq!(scopes, ["admin", "append", "read"].into_iter().collect(), "{routes:?}");
    let secret_of = |scope: &str| match scope {
        "read" => &reader.secret,
        "append" => &appender.secret,
        _ => &admin.secret,
    };
    for (method, path, scope) in &routes {
        let what = format!("{method} {path}");
        assert_refused(&call(&mut c, method, path, None).await, 401, &format!("{what} without a token"));
        let unknown = call(&mut c, method, path, Some("rft_not-a-token")).await;
        assert_refused(&unknown, 401, &format!("{what} with an unknown token"));
        assert!(unknown.headers["www-authenticate"].to_str().unwrap().contains("invalid_token"));
        for other in ["read", "append", "admin"].into_iter().filter(|s| s != scope) {
            let reply = call(&mut c, method, path, Some(secret_of(other))).await;
            assert_refused(&reply, 403, &format!("{what} with a `{other}` token"));
            assert_eq!(reply.json()["scope"], scope.as_str(), "{what}");
        }
    }

    // The right scope gets through, end to end.
    let appended = call(&mut c, "POST", "/streams/account-1/events", Some(&appender.secret)).await;
    assert_eq!(appended.status, 200, "{}", appended.text);
    let position = appended.json()["position"].as_u64().unwrap();
    let doc = call(
        &mut c,
        "GET",
        &format!("/projections/account-summary/accounts/account-1?min_position={position}"),
        Some(&reader.secret),
    )
    .await;
    assert_eq!(doc.status, 200, "{}", doc.text);
    assert_eq!(doc.json()["document"]["balance"], 5);
    let metrics = call(&mut c, "GET", "/metrics", Some(&reader.secret)).await;
    assert_eq!(metrics.status, 200);
    let paused = call(&mut c, "POST", "/projections/account-summary/pause", Some(&admin.secret)).await;
    assert_eq!(paused.status, 200, "{}", paused.text);
    assert_eq!(paused.json()["paused"], true);
}

#[test]
fn a_public_address_needs_tokens_or_an_explicit_opt_out() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let plugins = plugins_dir(dir.path(), &["account_summary"]);
    let p = plugins.to_str().unwrap();

    let out = refract(&data).args(["run", "--http", "0.0.0.0:0", "--plugins", p]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to serve the API on 0.0.0.0:0 without tokens"), "{err}");
    assert!(err.contains("--insecure-no-auth") && err.contains("refract token"), "{err}");

    let rt = tokio::runtime::Runtime::new().unwrap();
    // Opted out: served, and open.
    let (host, addr) = serve(&data, "0.0.0.0:0", &["--plugins", p, "--insecure-no-auth"]);
    rt.block_on(async {
        let mut c = Client::connect(addr).await;
        assert_eq!(c.get("/projections").await.status, 200);
    });
    drop(host);

    // With tokens: served, and closed to callers without one.
    let made = make_token(&data, "ci", &["read"]);
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(&tokens, &made.entry).unwrap();
    let (_host, addr) = serve(&data, "0.0.0.0:0", &["--plugins", p, "--tokens", tokens.to_str().unwrap()]);
    rt.block_on(async {
        let mut c = Client::connect(addr).await;
        assert_refused(&c.get("/projections").await, 401, "no token");
        assert_eq!(call(&mut c, "GET", "/projections", Some(&made.secret)).await.status, 200);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_get_preflights_answered_and_only_allowed_origins_get_cors_headers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let plugins = plugins_dir(dir.path(), &["account_summary"]);
    let made = make_token(&data, "app", &["read"]);
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(&tokens, &made.entry).unwrap();
    let app = "https://app.example.com";
    let (_host, addr) = serve(
        &data,
        "127.0.0.1:0",
        &["--plugins", plugins.to_str().unwrap(), "--tokens", tokens.to_str().unwrap(), "--cors-origin", app],
    );
    let mut c = Client::connect(addr).await;
    let header = |r: &Reply, name: &str| r.headers.get(name).map(|v| v.to_str().unwrap().to_owned());

    // A preflight carries no token, and is answered anyway.
    let preflight = [
        ("origin", app),
        ("access-control-request-method", "GET"),
        ("access-control-request-headers", "authorization"),
    ];
    let r = c.request_with("OPTIONS", "/projections", &preflight, Vec::new()).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(header(&r, "access-control-allow-origin").as_deref(), Some(app));
    assert!(header(&r, "access-control-allow-methods").unwrap().contains("GET"));
    assert!(header(&r, "access-control-allow-headers").unwrap().contains("authorization"));
    assert_eq!(header(&r, "allow").as_deref(), Some("GET, HEAD, OPTIONS"));

    // Another origin: OPTIONS still answers (not 405), without CORS headers.
    let evil = [("origin", "https://evil.example.com"), ("access-control-request-method", "GET")];
    let r = c.request_with("OPTIONS", "/projections", &evil, Vec::new()).await;
    assert_eq!(r.status, 204);
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    let r = c.request_with("OPTIONS", "/streams/s/events", &[], Vec::new()).await;
    assert_eq!((r.status, header(&r, "allow").as_deref()), (204, Some("POST, OPTIONS")));
    let r = c.request_with("OPTIONS", "/nowhere", &[], Vec::new()).await;
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].as_str().unwrap().contains("/nowhere"));

    // Real requests from the app get the header, refusals too (so the app can read them).
    let auth = bearer(&made.secret);
    let r = c.request_with("GET", "/projections", &[("origin", app), ("authorization", &auth)], Vec::new()).await;
    assert_eq!(r.status, 200);
    assert_eq!(header(&r, "access-control-allow-origin").as_deref(), Some(app));
    let r = c.request_with("GET", "/projections", &[("origin", app)], Vec::new()).await;
    assert_eq!(r.status, 401);
    assert_eq!(header(&r, "access-control-allow-origin").as_deref(), Some(app));
    let r = c
        .request_with(
            "GET",
            "/projections",
            &[("origin", "https://evil.example.com"), ("authorization", &auth)],
            Vec::new(),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(header(&r, "access-control-allow-origin"), None);
}
