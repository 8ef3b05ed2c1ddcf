//! Dockerfile parsing, just what the project's files use: continuation lines, comments,
//! stages, exec-form JSON arrays, HEALTHCHECK options, `ENV KEY=value`, `COPY`.

use std::collections::BTreeMap;
use std::fs;

use crate::workspace_root;

#[derive(Clone, Debug)]
pub struct Instruction {
    pub keyword: String,
    pub args: String,
}

/// Instructions of a Dockerfile, continuation lines joined, comment lines dropped (as Docker
/// does, also inside a continued instruction).
pub fn parse_dockerfile(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_empty()) {
            continue;
        }
        let (body, continued) = match trimmed.strip_suffix('\\') {
            Some(body) => (body, true),
            None => (trimmed, false),
        };
        if !pending.is_empty() {
            pending.push(' ');
        }
        pending.push_str(body.trim());
        if !continued && !pending.is_empty() {
            let (keyword, args) = pending
                .split_once(char::is_whitespace)
                .unwrap_or((&pending, ""));
            out.push(Instruction {
                keyword: keyword.to_ascii_uppercase(),
                args: args.trim().to_string(),
            });
            pending.clear();
        }
    }
    assert!(
        pending.is_empty(),
        "Dockerfile ends inside a continued line"
    );
    out
}

/// One build stage: its FROM line and its instructions.
#[derive(Clone, Debug)]
pub struct Stage {
    pub from: String,
    pub instructions: Vec<Instruction>,
}

impl Stage {
    pub fn all<'a>(&'a self, keyword: &str) -> impl Iterator<Item = &'a str> + 'a {
        let keyword = keyword.to_string();
        self.instructions
            .iter()
            .filter(move |i| i.keyword == keyword)
            .map(|i| i.args.as_str())
    }

    pub fn last(&self, keyword: &str) -> Option<&str> {
        self.all(keyword).last()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct HealthCheck {
    /// Compose's form: `["CMD", prog, args...]` or `["CMD-SHELL", "command line"]`.
    pub test: Vec<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub start_period: Option<String>,
    pub retries: Option<u64>,
}

pub struct Dockerfile {
    pub name: &'static str,
    pub stages: Vec<Stage>,
}

impl Dockerfile {
    pub fn load(name: &'static str) -> Dockerfile {
        let path = workspace_root().join(name);
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut stages: Vec<Stage> = Vec::new();
        for i in parse_dockerfile(&text) {
            if i.keyword == "FROM" {
                stages.push(Stage {
                    from: i.args.clone(),
                    instructions: Vec::new(),
                });
            } else if let Some(stage) = stages.last_mut() {
                stage.instructions.push(i);
            }
        }
        assert!(!stages.is_empty(), "{name}: no FROM");
        Dockerfile { name, stages }
    }

    /// The stage that becomes the image.
    pub fn runtime(&self) -> &Stage {
        self.stages.last().unwrap()
    }

    /// CMD or ENTRYPOINT of the image, which must be in exec form (JSON): in shell form the
    /// process would be `sh -c`, and SIGTERM would stop the shell, not the server.
    pub fn exec_form(&self, keyword: &str) -> Option<Vec<String>> {
        self.runtime().last(keyword).map(|args| {
            serde_json::from_str(args).unwrap_or_else(|e| {
                panic!(
                    "{}: {keyword} must be in exec form (a JSON array), got {args:?}: {e}",
                    self.name
                )
            })
        })
    }

    pub fn healthcheck(&self) -> HealthCheck {
        let args = self
            .runtime()
            .last("HEALTHCHECK")
            .unwrap_or_else(|| panic!("{}: no HEALTHCHECK in the runtime stage", self.name));
        let (options, command) = args
            .split_once("CMD ")
            .unwrap_or_else(|| panic!("{}: HEALTHCHECK without CMD: {args}", self.name));
        let mut check = HealthCheck {
            test: Vec::new(),
            interval: None,
            timeout: None,
            start_period: None,
            retries: None,
        };
        for option in options.split_whitespace() {
            let (name, value) = option
                .strip_prefix("--")
                .and_then(|o| o.split_once('='))
                .unwrap_or_else(|| panic!("{}: bad HEALTHCHECK option {option}", self.name));
            match name {
                "interval" => check.interval = Some(value.to_string()),
                "timeout" => check.timeout = Some(value.to_string()),
                "start-period" => check.start_period = Some(value.to_string()),
                "retries" => check.retries = Some(value.parse().expect("retries")),
                other => panic!("{}: HEALTHCHECK option {other} not handled here", self.name),
            }
        }
        let command = command.trim();
        check.test = if command.starts_with('[') {
            let argv: Vec<String> = serde_json::from_str(command).expect("HEALTHCHECK CMD JSON");
            std::iter::once("CMD".to_string()).chain(argv).collect()
        } else {
            vec!["CMD-SHELL".to_string(), command.to_string()]
        };
        check
    }

    /// `ENV` of the runtime stage (`KEY=value` pairs, no quoting used in these files).
    pub fn env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for args in self.runtime().all("ENV") {
            for pair in args.split_whitespace() {
                let (k, v) = pair
                    .split_once('=')
                    .unwrap_or_else(|| panic!("{}: ENV {args}: use KEY=value", self.name));
                assert!(
                    !v.contains(['"', '\'']),
                    "{}: quoted ENV not handled here",
                    self.name
                );
                env.insert(k.to_string(), v.to_string());
            }
        }
        env
    }

    /// Destination of the runtime stage's `COPY --from=<stage> <src> <dest>` for `src`.
    pub fn copied_from_builder(&self, src: &str) -> String {
        self.runtime()
            .all("COPY")
            .filter(|a| a.starts_with("--from="))
            .find_map(|a| {
                let words: Vec<&str> = a.split_whitespace().collect();
                (words.len() == 3 && words[1] == src).then(|| words[2].to_string())
            })
            .unwrap_or_else(|| {
                panic!(
                    "{}: no `COPY --from=... {src} <dest>` in the runtime stage",
                    self.name
                )
            })
    }

    /// Source paths of every plain `COPY` (from the build context) in every stage.
    pub fn context_sources(&self) -> Vec<String> {
        let mut out = Vec::new();
        for stage in &self.stages {
            for args in stage.all("COPY").filter(|a| !a.starts_with("--")) {
                let words: Vec<&str> = args.split_whitespace().collect();
                out.extend(words[..words.len() - 1].iter().map(|w| w.to_string()));
            }
        }
        out
    }
}
