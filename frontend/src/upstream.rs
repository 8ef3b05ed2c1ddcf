//! The external service behind `/external`: a simulator by default, or a real HTTP upstream when
//! `EXTERNAL_SERVICE_URL` is set.
//!
//! Upstream rules: `GET EXTERNAL_SERVICE_URL` with `EXTERNAL_SERVICE_TIMEOUT_MS` as the whole
//! call's timeout. A 2xx answer is a success and its body becomes `value` in
//! `{"external":"ok","value":<body>}` (parsed JSON as is; a body that is not JSON as a string; an empty body as null).
//! Anything else (non-2xx status, timeout, connection error, unreadable body) is a failure and
//! counts toward opening the breaker.

use std::time::Duration;

use serde_json::Value;

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
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()?;
        Ok(Upstream::Http { client, url })
    }

    /// One call: the value to report, or why it failed.
    pub async fn call(&self) -> Result<Value, String> {
        match self {
            Upstream::Simulator { failure_rate } => {
                tokio::time::sleep(Duration::from_millis(fastrand::u64(5..=30))).await;
                if fastrand::f64() < *failure_rate {
                    Err("simulated failure".to_string())
                } else {
                    Ok(Value::from(fastrand::u32(0..1000)))
                }
            }
            Upstream::Http { client, url } => {
                let resp = client.get(url).send().await.map_err(|e| e.to_string())?;
                let status = resp.status();
                if !status.is_success() {
                    return Err(format!("upstream answered {status}"));
                }
                if resp
                    .content_length()
                    .is_some_and(|n| n > MAX_UPSTREAM_BODY as u64)
                {
                    return Err("upstream body too large".to_string());
                }
                let body = resp.bytes().await.map_err(|e| e.to_string())?;
                if body.len() > MAX_UPSTREAM_BODY {
                    return Err("upstream body too large".to_string());
                }
                if body.iter().all(u8::is_ascii_whitespace) {
                    return Ok(Value::Null);
                }
                Ok(serde_json::from_slice(&body)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned())))
            }
        }
    }
}
