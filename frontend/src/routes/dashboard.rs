//! `GET /dashboard`: the live dashboard (SPEC §10), one page served from files compiled into
//! the binary (`frontend/static/dashboard.*`, and uPlot vendored from the npm registry under
//! `static/vendor/uplot/`, with its license). Nothing is loaded from another origin; the page
//! polls the API's own JSON endpoints.

use actix_web::http::header::CACHE_CONTROL;
use actix_web::HttpResponse;

const PAGE: &str = include_str!("../../static/dashboard.html");
const SCRIPT: &str = include_str!("../../static/dashboard.js");
const UPLOT_JS: &str = include_str!("../../static/vendor/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../../static/vendor/uplot/uPlot.min.css");
const FAVICON: &str = include_str!("../../static/favicon.svg");

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((CACHE_CONTROL, "no-cache"))
        .body(body)
}

pub async fn page() -> HttpResponse {
    asset("text/html; charset=utf-8", PAGE)
}

pub async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub async fn uplot_js() -> HttpResponse {
    asset("text/javascript; charset=utf-8", UPLOT_JS)
}

pub async fn uplot_css() -> HttpResponse {
    asset("text/css; charset=utf-8", UPLOT_CSS)
}

/// An SVG icon, so the browser's request for it is not a 404 (a console error).
pub async fn favicon() -> HttpResponse {
    asset("image/svg+xml", FAVICON)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_same_origin_assets() {
        for needle in ["http://", "https://", "//cdn", "@import"] {
            let in_page = PAGE.replace("http://www.w3.org/2000/svg", "");
            assert!(!in_page.contains(needle), "page: {needle}");
            assert!(!SCRIPT.contains(needle), "script: {needle}");
        }
        for src in [
            "/dashboard/dashboard.js",
            "/dashboard/uPlot.iife.min.js",
            "/dashboard/uPlot.min.css",
        ] {
            assert!(PAGE.contains(src), "{src}");
        }
    }
}
