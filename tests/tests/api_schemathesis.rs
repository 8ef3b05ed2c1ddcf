//! The OpenAPI document against the live API: schemathesis (4.x, from PyPI; `scripts/deps.sh`
//! installs it) generates requests from `/openapi.json`, valid and invalid, and checks every
//! answer against the document: status codes, content types, headers, response schemas, that
//! invalid input is refused, that no request answers 5xx, and the 405s of unsupported methods.
//! `positive_data_acceptance` is left out: it expects every schema-valid request to succeed, and
//! some refusals cannot be put in a schema (a timestamp in the future, `from` after `to`, more
//! than 10,000 buckets, a window beyond a retention the server may have raised); the document
//! states them in its descriptions instead.
//!
//! The run is seeded and bounded (examples per operation, one worker, a wall-clock limit), on its
//! own redis-server with the module and its own `tally-api` process, on free loopback ports.
//! Without schemathesis the test is skipped with a note, unless `CI` or
//! `TALLY_REQUIRE_VALKEY=1` is set, where that is an error.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tally_api::routes::docs::OPENAPI;
use tally_tests::api::ApiProc;
use tally_tests::policies::PolicyFile;
use tally_tests::process::run_bounded;
use tally_tests::{workspace_root, Server, TempDir};

/// The seed of the run: the same requests every time (for one schemathesis version).
const SEED: &str = "20261207";
/// Test cases per operation and phase.
const MAX_EXAMPLES: &str = "100";
/// Wall-clock bound on the whole run; it takes well under a minute on a quiet 2-core machine.
const RUN_BOUND: Duration = Duration::from_secs(300);

/// schemathesis run by the `python3` that `scripts/deps.sh` installs it for (its console script
/// may not be on PATH).
fn schemathesis() -> Command {
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "schemathesis.cli"]);
    cmd
}

/// schemathesis's version when it is a 4.x release, else why not.
fn schemathesis_version() -> Result<String, String> {
    let out = schemathesis()
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("python3 cannot be run ({e})"))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // "python -m schemathesis.cli, version 4.32.5"
    match text.rsplit(' ').next() {
        Some(v) if out.status.success() && v.starts_with("4.") => Ok(v.to_string()),
        _ if !out.status.success() => Err("schemathesis is not installed for python3".to_string()),
        _ => Err(format!("schemathesis says {text:?}, not a 4.x version")),
    }
}

fn required() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
        || std::env::var("TALLY_REQUIRE_VALKEY").is_ok_and(|v| v == "1")
}

#[test]
fn schemathesis_finds_nothing_the_openapi_document_does_not_allow() {
    let version = match schemathesis_version() {
        Ok(v) => v,
        Err(why) if required() => {
            panic!("schemathesis is required (CI / TALLY_REQUIRE_VALKEY=1): {why}; scripts/deps.sh installs it")
        }
        Err(why) => {
            eprintln!("note: {why}; the schemathesis run is skipped (scripts/deps.sh installs it)");
            return;
        }
    };
    let server = Server::start();
    // With a policy file and an API key on every request, so that `POST /api/limits/check`
    // (401 without a key) is exercised too: the key's tier limits ingest and reads far above
    // what the run sends; `burst` and `hour` make the document's example a valid request.
    let policies = PolicyFile::new(
        "[policies]\nbig = { limit = 1000000000, window = \"1m\" }\n\
         burst = { limit = 1000000000, window = \"1s\" }\nhour = { limit = 1000000000, window = \"1h\" }\n\
         [tiers.anonymous]\ningest = [\"big\"]\n\
         [tiers.fuzz]\ningest = [\"big\"]\nread = [\"big\"]\n",
    );
    let (key, _) = policies.create_key(&server.url(), &[], "fuzz", "schemathesis");
    let authorization = format!("Authorization: Bearer {key}");
    let api = ApiProc::start(
        &server.url(),
        &[
            ("POLICY_FILE", policies.path.as_str()),
            // The logic, not the limiter, is what the run exercises.
            ("RATE_LIMIT", "1000000000"),
            // Both branches of /external's answer, and the breaker opening.
            ("EXTERNAL_SERVICE_FAILURE_RATE", "0.5"),
            ("CB_RESET_TIMEOUT", "0.5"),
        ],
    );
    // Its working directory: schemathesis writes nothing into the repository.
    let dir = TempDir::new("schemathesis");
    let config = workspace_root().join("tests/schemathesis.toml");
    let schema_url = format!("{}/openapi.json", api.base());
    let args: Vec<String> = [
        "--config-file",
        config.to_str().expect("utf-8 path"),
        "run",
        &schema_url,
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance",
        "--seed",
        SEED,
        "--max-examples",
        MAX_EXAMPLES,
        "--workers",
        "1",
        "--request-timeout",
        "5",
        "--generation-database",
        "none",
        "--no-color",
        "-H",
        &authorization,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let started = Instant::now();
    let mut cmd = schemathesis();
    cmd.args(&args)
        .current_dir(dir.path())
        .env("PYTHONUNBUFFERED", "1");
    let run = run_bounded(cmd, RUN_BOUND);
    let took = started.elapsed();
    let command = format!("python3 -m schemathesis.cli {}", args.join(" "));
    let output = match run {
        Err(e) => panic!("schemathesis {version} did not finish: {command}\n{e}"),
        Ok((s, out, err)) if !s.success() => panic!(
            "schemathesis {version} reported failures ({s}, after {took:.1?}): {command}\n{out}\n{err}"
        ),
        Ok((_, out, err)) => format!("{out}\n{err}"),
    };
    // A run that tested nothing would pass too: every operation must have been exercised but
    // `GET /openapi.json`, which schemathesis leaves out when it loads the document from it.
    let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("the document is JSON");
    let operations: usize = doc["paths"]
        .as_object()
        .expect("paths")
        .values()
        .map(|item| item.as_object().map_or(0, |m| m.len()))
        .sum();
    let tested = format!("Tested: {}", operations - 1);
    assert!(
        output.contains("No issues found") && output.lines().any(|l| l.trim() == tested),
        "schemathesis passed but did not test every operation: {command}\n{output}"
    );
    eprintln!("schemathesis {version}: no issues in {took:.1?} ({command})");
    assert!(
        api.log().lines().all(|l| !l.contains("panicked")),
        "{}",
        api.log()
    );
}
