//! The external service behind `/external`: a simulator by default, or a real HTTP upstream when
//! `EXTERNAL_SERVICE_URL` is set.
//!
//! Upstream rules: `GET EXTERNAL_SERVICE_URL` with `EXTERNAL_SERVICE_TIMEOUT_MS` as the whole
//! call's timeout; redirects are not followed.
//! - 2xx: a success; its body becomes `value` in `{"external":"ok","value":<body>}` (parsed
//!   JSON as is; a body that is not JSON as a string; an empty body as null).
//! - 3xx and 4xx: the upstream is up and answered, but gave no value ([`Reply::Declined`]). Not
//!   a failure for the breaker (it says nothing about the upstream's health); the caller gets
//!   the fallback with the upstream's status. So is a 2xx body over 1 MiB.
//! - 5xx, a timeout, a connection error (also while reading the body), or a status outside
//!   200-599: a failure, counted toward opening the breaker.

use std::time::Duration;

use serde_json::Value;

/// What a call that did not fail gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// 2xx (or the simulator's success): the value to pass on.
    Value(Value),
    /// The upstream answered without a value: `reason` is the fallback's reason, `status` the
    /// upstream's status.
    Declined { status: u16, reason: &'static str },
}

/// The fallback reason of a redirect (3xx, not followed).
pub const REDIRECTED: &str = "external service redirected";
/// The fallback reason of a 4xx.
pub const REFUSED: &str = "external service refused";
/// The fallback reason of a 2xx body over the size limit.
pub const TOO_LARGE: &str = "external service answer too large";

pub enum Upstream {
    /// Fails with probability `failure_rate`, after a small random latency.
    Simulator { failure_rate: f64 },
    Http {
        client: reqwest::Client,
        url: String,
    },
}

/// Bodies larger than this are not passed through (a failure).
const MAX_UPSTREAM_BODY: usize = 1024 * 1024;

impl Upstream {
    pub fn simulator(failure_rate: f64) -> Upstream {
        Upstream::Simulator { failure_rate }
    }

    pub fn http(url: String, timeout: Duration) -> Result<Upstream, reqwest::Error> {
        let client = reqwest::Client::builder()
            // A redirect is the upstream's answer, not an instruction to call somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()?;
        Ok(Upstream::Http { client, url })
    }

    /// One call: what it gave, or why it failed (a failure for the breaker).
    pub async fn call(&self) -> Result<Reply, String> {
        match self {
            Upstream::Simulator { failure_rate } => {
                tokio::time::sleep(Duration::from_millis(fastrand::u64(5..=30))).await;
                if fastrand::f64() < *failure_rate {
                    Err("simulated failure".to_string())
                } else {
                    Ok(Reply::Value(Value::from(fastrand::u32(0..1000))))
                }
            }
            Upstream::Http { client, url } => {
                let resp = client.get(url).send().await.map_err(|e| e.to_string())?;
                let status = resp.status();
                if let Some(reason) = declined_reason(status.as_u16()) {
                    return Ok(Reply::Declined {
                        status: status.as_u16(),
                        reason,
                    });
                }
                if !status.is_success() {
                    return Err(format!("upstream answered {status}"));
                }
                let too_large = Reply::Declined {
                    status: status.as_u16(),
                    reason: TOO_LARGE,
                };
                if resp
                    .content_length()
                    .is_some_and(|n| n > MAX_UPSTREAM_BODY as u64)
                {
                    return Ok(too_large);
                }
                let body = resp.bytes().await.map_err(|e| e.to_string())?;
                if body.len() > MAX_UPSTREAM_BODY {
                    return Ok(too_large);
                }
                if body.iter().all(u8::is_ascii_whitespace) {
                    return Ok(Reply::Value(Value::Null));
                }
                Ok(Reply::Value(serde_json::from_slice(&body).unwrap_or_else(
                    |_| Value::String(String::from_utf8_lossy(&body).into_owned()),
                )))
            }
        }
    }
}

/// The fallback reason of a status that is an answer without a value (3xx, 4xx); `None` for
/// a success or a failure.
pub fn declined_reason(status: u16) -> Option<&'static str> {
    match status {
        300..=399 => Some(REDIRECTED),
        400..=499 => Some(REFUSED),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_3xx_and_4xx_are_declined_answers() {
        for status in [301, 302, 303, 304, 307, 308] {
            assert_eq!(declined_reason(status), Some(REDIRECTED), "{status}");
        }
        for status in [400, 401, 403, 404, 409, 429, 499] {
            assert_eq!(declined_reason(status), Some(REFUSED), "{status}");
        }
        // Successes and failures are decided elsewhere.
        for status in [100, 200, 204, 299, 500, 502, 503, 599, 600] {
            assert_eq!(declined_reason(status), None, "{status}");
        }
    }
}
