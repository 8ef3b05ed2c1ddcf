//! Support for the rate-limit policy suites (SPEC section 8): a policy file in a temp dir, the
//! API with it (in-process or as a process), and the `tally-api keys` command line.

use std::process::Command;

use tally_api::config::{policy_file, Config, TrustedProxies};

use crate::api::{config, TestApp};
use crate::TempDir;

/// A policy file written to its own temp dir (removed on drop).
pub struct PolicyFile {
    pub path: String,
    _dir: TempDir,
}

impl PolicyFile {
    pub fn new(text: &str) -> PolicyFile {
        let dir = TempDir::new("policies");
        let path = dir.path().join("policies.toml");
        std::fs::write(&path, text).expect("write the policy file");
        PolicyFile {
            path: path.to_string_lossy().into_owned(),
            _dir: dir,
        }
    }

    /// The API's configuration for `redis_url` with this file, trusting 127.0.0.1's
    /// `X-Forwarded-For` (so a test can be many clients).
    pub fn config(&self, redis_url: &str) -> Config {
        Config {
            policy_file: Some(policy_file::read(&self.path).expect("a valid policy file")),
            trusted_proxies: TrustedProxies::parse("127.0.0.1/32").expect("CIDR"),
            ..config(redis_url)
        }
    }

    /// The API in-process with this file.
    pub async fn spawn(&self, redis_url: &str) -> TestApp {
        TestApp::spawn_with(self.config(redis_url)).await
    }

    /// `tally-api keys ARGS` against `redis_url` (plus `extra` variables, e.g. cluster mode):
    /// (success, stdout, stderr).
    pub fn keys(
        &self,
        redis_url: &str,
        extra: &[(&str, &str)],
        args: &[&str],
    ) -> (bool, String, String) {
        let out = Command::new(crate::api_path())
            .arg("keys")
            .args(args)
            .env_clear()
            .env("REDIS_URL", redis_url)
            .env("POLICY_FILE", &self.path)
            .envs(extra.iter().copied())
            .output()
            .expect("run tally-api keys");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// A new key of `tier` named `name`: (key, id).
    pub fn create_key(
        &self,
        redis_url: &str,
        extra: &[(&str, &str)],
        tier: &str,
        name: &str,
    ) -> (String, String) {
        let (ok, out, err) = self.keys(
            redis_url,
            extra,
            &["create", "--tier", tier, "--name", name],
        );
        assert!(ok, "keys create failed: {err}");
        let mut lines = out.lines();
        let key = lines.next().expect("the key on the first line").to_string();
        let id = lines
            .next()
            .and_then(|l| l.strip_prefix("id "))
            .and_then(|l| l.split(',').next())
            .expect("the id on the second line")
            .to_string();
        (key, id)
    }
}

/// `GET path` on `app` with `key` in `X-API-Key`.
pub async fn get_with_key(app: &TestApp, path: &str, key: &str) -> reqwest::Response {
    app.client
        .get(format!("{}{path}", app.base))
        .header("x-api-key", key)
        .send()
        .await
        .expect("GET")
}
