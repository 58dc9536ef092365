//! The finance dashboard at `/ui`: one HTML page, its script and stylesheet, embedded in
//! the binary (`authority/ui/`; nothing is fetched from anywhere else, no build step). The
//! page is a client of the HTTP/JSON admin API ([`crate::http_api`]): the user signs in
//! with a token, kept in the tab's `sessionStorage` and sent as a bearer token; the page
//! itself is public and holds no data.
//!
//! It shows, per tenant and refreshed every second: the balance by grant, burn rates,
//! projected depletion, this month's spend and hard cap (with a form to change the cap),
//! spend per day (the last 14 days, every 5 s) and consumption since the page opened,
//! spend by agent, model, feature and task with work units, alert rules, recent denials by
//! limit and tier, whether the audit chain verifies (every ten seconds: it checks the whole
//! chain), and an estimate form.

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;

const INDEX: &str = include_str!("../ui/index.html");
const APP_JS: &str = include_str!("../ui/app.js");
const APP_CSS: &str = include_str!("../ui/app.css");

/// Only this origin's own script and styles run; the page cannot be framed (the cap form
/// must not be clickjacked).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// The routes: `/ui` (and `/ui/`), `/ui/app.js`, `/ui/app.css`.
pub fn router() -> Router {
    Router::new()
        .route(
            "/ui",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route("/ui/", get(|| async { Redirect::permanent("/ui") }))
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
}
