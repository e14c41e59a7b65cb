//! `OPTIONS` and CORS: a browser app on another origin may call the API
//! when its origin is allowed. Every `OPTIONS` request is answered here,
//! before routing and before auth (a browser's preflight carries no token):
//! 204 with `Allow`, plus the CORS headers when it is an allowed origin's
//! preflight. Other answers to an allowed origin get
//! `Access-Control-Allow-Origin`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method as HttpMethod, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::error::ApiError;
use crate::api::openapi::Method;
use crate::api::routes::ROUTES;

/// How long a browser may cache a preflight's answer, in seconds.
const MAX_AGE: &str = "600";

/// The origins browser apps may call the API from.
#[derive(Debug, Clone, Default)]
pub struct Cors {
    /// `*`: any origin (no credentials are involved: tokens travel in a header the app sets).
    any: bool,
    origins: Vec<String>,
}

impl Cors {
    /// Allows `origins` (`https://app.example.com`, or `*` for any). Empty: no cross-origin calls.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(origins: I) -> Self {
        let mut cors = Self::default();
        for o in origins {
            let o: String = o.into();
            let o = o.trim().trim_end_matches('/').to_owned();
            if o == "*" {
                cors.any = true;
            } else if !o.is_empty() {
                cors.origins.push(o);
            }
        }
        cors
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if it is allowed.
    fn allow(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        if self.any {
            return Some(HeaderValue::from_static("*"));
        }
        let text = origin.to_str().ok()?;
        self.origins.iter().any(|o| o == text).then(|| origin.clone())
    }
}

/// The methods the route table serves on `path`, `OPTIONS` included; none
/// when no route matches.
fn methods_on(path: &str) -> Vec<&'static str> {
    let mut methods: Vec<&'static str> = Vec::new();
    for r in ROUTES.iter().filter(|r| template_matches(r.path, path)) {
        let names: &[&'static str] = match r.method {
            Method::Get => &["GET", "HEAD"],
            Method::Post => &["POST"],
        };
        for name in names {
            if !methods.contains(name) {
                methods.push(name);
            }
        }
    }
    if !methods.is_empty() {
        methods.push("OPTIONS");
    }
    methods
}

/// Whether a concrete path matches a `{param}` template, segment by segment.
fn template_matches(template: &str, path: &str) -> bool {
    let (mut t, mut p) = (template.split('/'), path.split('/'));
    loop {
        match (t.next(), p.next()) {
            (None, None) => return true,
            (Some(ts), Some(ps)) if ts.starts_with('{') && ts.ends_with('}') && !ps.is_empty() => {}
            (Some(ts), Some(ps)) if ts == ps => {}
            _ => return false,
        }
    }
}

/// Answers `OPTIONS`, and adds the CORS headers to answers for allowed origins.
pub(crate) async fn layer(State(cors): State<Arc<Cors>>, request: Request, next: Next) -> Response {
    let allowed = cors.allow(request.headers());
    if request.method() == HttpMethod::OPTIONS {
        let methods = methods_on(request.uri().path());
        if methods.is_empty() {
            return ApiError::NoRoute(request.uri().path().to_owned()).into_response();
        }
        let list = methods.join(", ");
        let mut response = StatusCode::NO_CONTENT.into_response();
        let h = response.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&list) {
            h.insert(header::ALLOW, v.clone());
            if let Some(origin) = allowed {
                h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
                h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    HeaderValue::from_static("authorization, content-type, last-event-id"),
                );
                h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(MAX_AGE));
            }
        }
        h.insert(header::VARY, HeaderValue::from_static("origin"));
        return response;
    }
    let mut response = next.run(request).await;
    if let Some(origin) = allowed {
        let h = response.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("www-authenticate"));
        h.append(header::VARY, HeaderValue::from_static("origin"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_by_segment() {
        assert!(template_matches("/projections/{name}", "/projections/a"));
        assert!(!template_matches("/projections/{name}", "/projections/"));
        assert!(!template_matches("/projections/{name}", "/projections/a/b"));
        assert!(template_matches("/health", "/health"));
        assert_eq!(methods_on("/streams/s/events"), ["POST", "OPTIONS"]);
        assert!(methods_on("/nowhere").is_empty());
    }

    #[test]
    fn only_listed_origins_are_allowed() {
        let cors = Cors::new(["https://app.example.com/"]);
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, HeaderValue::from_static("https://app.example.com"));
        assert_eq!(cors.allow(&h).unwrap(), "https://app.example.com");
        h.insert(header::ORIGIN, HeaderValue::from_static("https://evil.example.com"));
        assert_eq!(cors.allow(&h), None);
        assert_eq!(Cors::new(["*"]).allow(&h).unwrap(), "*");
        assert_eq!(Cors::default().allow(&h), None);
    }
}
