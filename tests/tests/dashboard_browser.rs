//! `GET /dashboard` in a real headless Chromium (SPEC §10), driven through WebDriver: the page
//! loads nothing from another origin, its panels draw, values update live without a reload, a
//! new metric type appears within 5 s, the breaker opens on screen, the top-clients table shows
//! a denied client, the browser log has no error, and it is usable at phone width. The test
//! saves a screenshot in `target/dashboard.png`; with `TALLY_UPDATE_SCREENSHOT=1` it also
//! replaces the one the README shows (`docs/dashboard.png`), so a test run leaves the tree
//! clean.

use std::time::Duration;

use serde_json::Value;
use tally_tests::api::{now_rfc3339, post_metric_from, ApiProc, Upstream};
use tally_tests::http::client;
use tally_tests::webdriver::Browser;
use tally_tests::{workspace_root, Server};

/// `POST /api/metrics` of `value` for `kind` as `client` (each client has its own budget).
async fn post(http: &reqwest::Client, base: &str, kind: &str, value: i64, client: &str) -> u16 {
    post_metric_from(http, base, kind, value, client).await
}

/// Whether the canvas of `selector` has anything painted: it differs from a blank canvas of
/// its size (compared as PNG data URLs; no pixel readback, which Chromium warns about).
fn drawn(selector: &str) -> String {
    format!(
        "const c = document.querySelector('{selector} canvas');
         if (!c || !c.width || !c.height) return false;
         const blank = document.createElement('canvas');
         blank.width = c.width;
         blank.height = c.height;
         return c.toDataURL() !== blank.toDataURL();"
    )
}

fn text_of(selector: &str) -> String {
    format!("const e = document.querySelector('{selector}'); return e ? e.textContent : null;")
}

/// Whether the text of `selector` is `want`.
fn text_is(selector: &str, want: &str) -> String {
    format!(
        "const e = document.querySelector('{selector}'); return !!e && e.textContent === '{want}';"
    )
}

const FIVE_S: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_live_in_a_real_browser() {
    let server = Server::start();
    let upstream = Upstream::start(500).await;
    let api = ApiProc::start(
        &server.url(),
        &[
            ("RATE_LIMIT", "3"),
            ("TRUSTED_PROXIES", "127.0.0.1"),
            ("EXTERNAL_SERVICE_URL", upstream.url.as_str()),
            ("CB_FAILURE_THRESHOLD", "3"),
            ("CB_RESET_TIMEOUT", "600"),
        ],
    );
    let base = api.base();
    let http = client();
    for (i, v) in [40, 55, 70, 61].into_iter().enumerate() {
        assert_eq!(
            post(&http, &base, "cpu", v, &format!("192.0.2.{i}")).await,
            201
        );
    }

    let browser = Browser::start(1400, 1000).await;
    browser.goto(&format!("{base}/dashboard")).await;
    // A marker that a reload would lose.
    browser
        .run("window.__tallyNoReload = 42; return true;")
        .await;

    // The panels draw: the cpu chart, its count and p99, the limiter chart, the breaker.
    let cpu = r#"[data-metric="cpu"]"#;
    // The first draw may wait for a cold browser; every later change must show within 5 s.
    let first = Duration::from_secs(15);
    assert!(
        browser.wait_for(&drawn(cpu), first).await.is_some(),
        "the cpu chart is not drawn"
    );
    assert!(browser
        .wait_for(&drawn("#ratelimit"), first)
        .await
        .is_some());
    let count = format!(r#"{cpu} [data-field="count"]"#);
    let p99 = format!(r#"{cpu} [data-field="p99"]"#);
    assert_eq!(browser.run(&text_of(&count)).await, "4");
    assert_eq!(browser.run(&text_of(&p99)).await, "70");
    assert_eq!(browser.run(&text_of("#breaker")).await, "closed");

    // Live: new samples change the count without a reload.
    for (i, v) in [90, 95].into_iter().enumerate() {
        assert_eq!(
            post(&http, &base, "cpu", v, &format!("192.0.2.{}", 10 + i)).await,
            201
        );
    }
    let took = browser.wait_for(&text_is(&count, "6"), FIVE_S).await;
    assert!(
        took.is_some(),
        "the count did not update: {}",
        browser.run(&text_of(&count)).await
    );

    // A new type gets its own drawn panel within 5 s.
    assert_eq!(post(&http, &base, "disk_io", 7, "192.0.2.50").await, 201);
    let disk = r#"[data-metric="disk_io"]"#;
    let took = browser.wait_for(&drawn(disk), FIVE_S).await;
    assert!(took.is_some(), "no disk_io panel within 5 s");

    // Labels: a tagged type, grouped by host in the browser (one line per host), then
    // filtered to one host (its count and p99).
    for (i, (host, v)) in [("web-1", 10), ("web-1", 20), ("web-2", 300)]
        .into_iter()
        .enumerate()
    {
        let body = format!(
            r#"{{"timestamp":"{}","value":{v},"type":"latency","tags":{{"host":"{host}"}}}}"#,
            now_rfc3339()
        );
        let r = http
            .post(format!("{base}/api/metrics"))
            .header("content-type", "application/json")
            .header("x-forwarded-for", format!("192.0.2.{}", 60 + i))
            .body(body)
            .send()
            .await
            .expect("tagged POST");
        assert_eq!(r.status(), 201);
    }
    let latency = r#"[data-metric="latency"]"#;
    assert!(
        browser.wait_for(&drawn(latency), FIVE_S).await.is_some(),
        "no latency panel within 5 s"
    );
    let group_by = format!(r#"{latency} [data-control="group_by"]"#);
    let pick_host = format!(
        "const s = document.querySelector('{group_by}');
         if (!s || !Array.from(s.options).some(o => o.value === 'host')) return false;
         s.value = 'host';
         return true;"
    );
    assert!(
        browser.wait_for(&pick_host, FIVE_S).await.is_some(),
        "the group-by menu never offered host"
    );
    let legend = format!(
        "const l = Array.from(document.querySelectorAll('{latency} .u-legend .u-label'))
             .map(e => e.textContent);
         return l.includes('host=web-1 p99') && l.includes('host=web-2 p99');"
    );
    assert!(
        browser.wait_for(&legend, FIVE_S).await.is_some(),
        "no line per host: {}",
        browser.run(&text_of(&format!("{latency} .u-legend"))).await
    );
    assert!(browser.wait_for(&drawn(latency), FIVE_S).await.is_some());
    browser
        .run(&format!(
            "const f = document.querySelector('{latency} [data-control=\"filter\"]');
             f.value = 'host=web-2';
             return true;"
        ))
        .await;
    let latency_count = format!(r#"{latency} [data-field="count"]"#);
    let latency_p99 = format!(r#"{latency} [data-field="p99"]"#);
    assert!(
        browser
            .wait_for(&text_is(&latency_count, "1"), FIVE_S)
            .await
            .is_some(),
        "the filter did not apply: count {}",
        browser.run(&text_of(&latency_count)).await
    );
    assert_eq!(browser.run(&text_of(&latency_p99)).await, "300");

    // The breaker opens on screen: three failed calls to the upstream.
    for _ in 0..3 {
        let r = http.get(format!("{base}/external")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert!(
        browser
            .wait_for(&text_is("#breaker", "open"), FIVE_S)
            .await
            .is_some(),
        "breaker shows {}",
        browser.run(&text_of("#breaker")).await
    );

    // A denied client shows up in the top-clients table.
    let denied_client = "198.51.100.23";
    let mut statuses = Vec::new();
    for v in 0..5 {
        statuses.push(post(&http, &base, "cpu", v, denied_client).await);
    }
    assert_eq!(statuses, [201, 201, 201, 429, 429]);
    let row = format!(r#"#top-clients [data-client="{denied_client}"]"#);
    assert!(
        browser
            .wait_for(
                &format!("return !!document.querySelector('{row}');"),
                FIVE_S
            )
            .await
            .is_some(),
        "no row for the denied client"
    );
    assert_eq!(browser.run(&text_of(&format!("{row} td.n"))).await, "2");

    // Still the same page: no reload happened.
    assert_eq!(browser.run("return window.__tallyNoReload;").await, 42);

    // Nothing was requested from another origin.
    let resources = browser
        .run(
            "return [location.origin].concat(performance.getEntriesByType('resource')
                 .map(e => e.name));",
        )
        .await;
    let resources: Vec<String> = resources
        .as_array()
        .expect("names")
        .iter()
        .map(|v| v.as_str().unwrap_or("").to_string())
        .collect();
    let origin = &resources[0];
    assert_eq!(origin, &base);
    assert!(resources.len() > 5, "{resources:?}");
    for name in &resources[1..] {
        assert!(
            name.starts_with(&format!("{origin}/")),
            "another origin: {name}"
        );
    }

    // The screenshot (the README's, with TALLY_UPDATE_SCREENSHOT=1).
    let png = browser.screenshot().await;
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let mut paths = vec![workspace_root().join("target/dashboard.png")];
    if std::env::var_os("TALLY_UPDATE_SCREENSHOT").is_some_and(|v| v == "1") {
        paths.push(workspace_root().join("docs/dashboard.png"));
    }
    for path in paths {
        std::fs::create_dir_all(path.parent().unwrap()).expect("the screenshot's dir");
        std::fs::write(&path, &png).expect("write the screenshot");
    }

    // Phone width: one column, nothing wider than the screen, the charts still drawn.
    browser.resize(390, 844).await;
    let fits = "return document.documentElement.scrollWidth <= window.innerWidth + 1;";
    assert!(
        browser.wait_for(fits, FIVE_S).await.is_some(),
        "wider than the screen: {} > {}",
        browser
            .run("return document.documentElement.scrollWidth;")
            .await,
        browser.run("return window.innerWidth;").await
    );
    let narrow = format!(
        "const c = document.querySelector('{cpu} canvas'); return c.getBoundingClientRect().right <= window.innerWidth;"
    );
    assert!(browser.wait_for(&narrow, FIVE_S).await.is_some());
    assert!(browser.wait_for(&drawn(cpu), FIVE_S).await.is_some());

    // No error in the browser's log (a 404 favicon would be one).
    let errors: Vec<(String, String)> = browser
        .log()
        .await
        .into_iter()
        .filter(|(level, _)| level == "SEVERE" || level == "WARNING")
        .collect();
    assert!(errors.is_empty(), "browser log: {errors:?}");
    assert_ne!(
        browser.run("return document.body.dataset.polls;").await,
        Value::Null
    );
}
