//! The query page (`/` and `/graph` under the façade's prefix): a PromQL box with completion
//! of metric and label names, a table of the instant answer, a chart of the range answer,
//! every agent's targets, and links to queryz and the zpages. Hand-written HTML, CSS and
//! JavaScript built into the binary: nothing is fetched from elsewhere at run time. The page
//! and its assets ask for the same credentials as the API (a browser prompts for basic
//! auth, then sends them with the page's own API calls).

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use super::api::{authorize, ApiState};

const INDEX_HTML: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const APP_CSS: &str = include_str!("ui/app.css");

/// Text made safe inside a double-quoted HTML attribute.
fn attribute(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn asset(st: &ApiState, headers: &HeaderMap, content_type: &'static str, body: String) -> Response {
    if let Err(r) = authorize(&st.credentials, headers) {
        return r;
    }
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The router of the page and its assets under `prefix` (no trailing slash).
pub fn router(prefix: &str) -> axum::Router<Arc<ApiState>> {
    use axum::routing::get;
    let page_prefix = prefix.to_string();
    let page = move |State(st): State<Arc<ApiState>>, headers: HeaderMap| {
        let p = page_prefix.clone();
        async move {
            let html = INDEX_HTML.replace("{{PREFIX}}", &attribute(&p)).replace(
                "{{ZPAGES_PORT}}",
                &attribute(&st.agent.zpages_port().unwrap_or_default()),
            );
            asset(&st, &headers, "text/html; charset=utf-8", html)
        }
    };
    let root = if prefix.is_empty() {
        "/".to_string()
    } else {
        prefix.to_string()
    };
    let mut r = axum::Router::new()
        .route(&root, get(page.clone()))
        .route(&format!("{prefix}/graph"), get(page.clone()))
        .route(
            &format!("{prefix}/ui/app.js"),
            get(|State(st): State<Arc<ApiState>>, h: HeaderMap| async move {
                asset(
                    &st,
                    &h,
                    "text/javascript; charset=utf-8",
                    APP_JS.to_string(),
                )
            }),
        )
        .route(
            &format!("{prefix}/ui/app.css"),
            get(|State(st): State<Arc<ApiState>>, h: HeaderMap| async move {
                asset(&st, &h, "text/css; charset=utf-8", APP_CSS.to_string())
            }),
        );
    if !prefix.is_empty() {
        r = r.route(&format!("{prefix}/"), get(page));
    }
    r
}
