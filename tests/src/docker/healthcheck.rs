//! Health checks run the way Docker runs them, on the host.

use std::process::Command;
use std::time::Duration;

use super::dockerfile::HealthCheck;
use crate::process::run_bounded;

/// Replaces `from` by `to` in the health check's arguments, exactly once in all: the check
/// must address the port the image serves on, and nothing else is changed.
pub fn adapt(check: &HealthCheck, from: &str, to: &str) -> Vec<String> {
    let count: usize = check.test.iter().map(|a| a.matches(from).count()).sum();
    assert_eq!(
        count, 1,
        "health check {:?} should name {from:?} once",
        check.test
    );
    check.test.iter().map(|a| a.replace(from, to)).collect()
}

pub fn parse_duration(text: &str) -> Duration {
    let (mut total, mut number) = (Duration::ZERO, String::new());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if c == 'm' && chars.peek() == Some(&'s') {
            unit.push(chars.next().unwrap());
        }
        let n: f64 = number.parse().unwrap_or_else(|_| panic!("duration {text}"));
        number.clear();
        total += Duration::from_secs_f64(match unit.as_str() {
            "ms" => n / 1000.0,
            "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            other => panic!("duration unit {other} in {text}"),
        });
    }
    assert!(number.is_empty(), "duration {text} needs a unit");
    total
}

/// Runs a health check command the way Docker does (`CMD` argv or `CMD-SHELL` via `sh -c`),
/// killed after the check's own timeout. Ok(()) if it exited 0.
pub fn run_healthcheck(test: &[String], timeout: Duration) -> Result<(), String> {
    let cmd = match test[0].as_str() {
        "CMD" => {
            let mut c = Command::new(&test[1]);
            c.args(&test[2..]);
            c
        }
        "CMD-SHELL" => {
            let mut c = Command::new("sh");
            c.arg("-c").arg(&test[1]);
            c
        }
        other => panic!("health check kind {other}"),
    };
    match run_bounded(cmd, timeout) {
        Ok((status, _, _)) if status.success() => Ok(()),
        Ok((status, _, err)) => Err(format!("{test:?}: {status}: {err}")),
        Err(e) => Err(format!("{test:?}: timed out after {timeout:?}: {e}")),
    }
}

pub fn healthcheck_timeout(check: &HealthCheck) -> Duration {
    check
        .timeout
        .as_deref()
        .map_or(Duration::from_secs(30), parse_duration)
}
