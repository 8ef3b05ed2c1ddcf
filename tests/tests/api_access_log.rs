//! The access log follows `RUST_LOG`: one line per request at `info` (the default), also when
//! only actix's logger target is at info, and none when it is hidden (the middleware is left
//! out then). Runs the release binary, whose stderr is the log.

use std::time::{Duration, Instant};

use tally_tests::api::ApiProc;
use tally_tests::free_port;
use tally_tests::http::get_status;

/// The API with `rust_log`, pointed at a port where no Redis listens (/health answers 503,
/// which is logged like any other request), after one more request of its own.
fn log_after_a_request(rust_log: &str, expect_line: bool) -> String {
    let redis_url = format!("redis://127.0.0.1:{}", free_port());
    let api = ApiProc::start(&redis_url, &[("RUST_LOG", rust_log)]);
    assert_eq!(
        get_status(api.port, "/api/metrics/types?probe=access-log"),
        Some(503)
    );
    // The line is written after the response; give it a moment when one is expected.
    let deadline = Instant::now() + Duration::from_secs(if expect_line { 5 } else { 1 });
    loop {
        let log = api.log();
        if log.contains("probe=access-log") || Instant::now() > deadline {
            return log;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn access_lines_are_written_when_rust_log_shows_them_and_skipped_when_it_hides_them() {
    for rust_log in ["info", "warn,actix_web::middleware::logger=info"] {
        let log = log_after_a_request(rust_log, true);
        assert!(
            log.contains("\"GET /api/metrics/types?probe=access-log HTTP/1.1\" 503"),
            "RUST_LOG={rust_log}: no access line in\n{log}"
        );
    }
    for rust_log in ["warn", "info,actix_web::middleware::logger=warn"] {
        let log = log_after_a_request(rust_log, false);
        assert!(
            !log.contains("GET /"),
            "RUST_LOG={rust_log}: unexpected access line in\n{log}"
        );
    }
}
