//! The web console at `/`: one HTML page, its stylesheet and its script,
//! compiled into the binary, so it needs no build toolchain and no files
//! beside the host. The page reads the API (`/projections`, the dead
//! letters, collection queries), follows `/changes` and calls the admin
//! routes; it has no state of its own on the server. The three files stay
//! open (`Access::Open`) so that a browser can load the sign-in form; every
//! call the page makes carries the token the user signed in with.

use crate::api::auth::Access;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::on;

use crate::api::openapi::{Method, Operation, Success, string_schema};
use crate::api::routes::Route;

const INDEX: &str = include_str!("console/index.html");
const STYLESHEET: &str = include_str!("console/console.css");
const JAVASCRIPT: &str = include_str!("console/console.js");

/// The page.
pub(crate) const PAGE: Route = Route {
    method: Method::Get,
    path: "/",
    handler: |m| on(m, page),
    access: Access::Open,
    doc: Operation {
        summary: "The web console: projections, rebuild progress, admin actions, dead letters and a document browser, updated live",
        description: None,
        params: &[],
        body: None,
        ok: Success { description: "An HTML page.", media_type: "text/html", schema: string_schema },
        errors: &[],
    },
};

/// The page's stylesheet.
pub(crate) const STYLE: Route = Route {
    method: Method::Get,
    path: "/console/console.css",
    handler: |m| on(m, || async { file("text/css; charset=utf-8", STYLESHEET) }),
    access: Access::Open,
    doc: Operation {
        summary: "The web console's stylesheet",
        description: None,
        params: &[],
        body: None,
        ok: Success { description: "CSS.", media_type: "text/css", schema: string_schema },
        errors: &[],
    },
};

/// The page's script.
pub(crate) const SCRIPT: Route = Route {
    method: Method::Get,
    path: "/console/console.js",
    handler: |m| on(m, || async { file("text/javascript; charset=utf-8", JAVASCRIPT) }),
    access: Access::Open,
    doc: Operation {
        summary: "The web console's script",
        description: None,
        params: &[],
        body: None,
        ok: Success { description: "JavaScript.", media_type: "text/javascript", schema: string_schema },
        errors: &[],
    },
};

/// Pages and files of this build: a browser may keep them for a while,
/// but must ask again before using them after an upgrade.
const CACHE: &str = "no-cache";

async fn page() -> Response {
    file("text/html; charset=utf-8", INDEX)
}

fn file(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, CACHE)], body).into_response()
}
