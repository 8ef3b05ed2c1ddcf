//! `COMMAND DOCS`, `COMMAND INFO` and `COMMAND GETKEYS` of every module command, on every
//! server flavor (Redis 7.0 and 8.2, Valkey 8.1 and 9.1): summary,
//! since, group, complexity, the argument tree (names, types, tokens, optional / multiple,
//! nested blocks), internal commands marked internal, arity and the key spec.

use tally_tests::redis::{self, Connection, Value};
use tally_tests::{pairs, text, Flavor, Server};

/// What one command must document.
struct Expected {
    name: &'static str,
    internal: bool,
    /// A fragment of the summary.
    summary: &'static str,
    arity: i64,
    /// The key spec's flags, as `COMMAND INFO` names them.
    key_flags: &'static [&'static str],
    /// The argument tree, rendered by `render`.
    args: &'static str,
    /// A valid call (after the name), for `COMMAND GETKEYS`.
    call: &'static [&'static str],
    /// ACL categories, on servers that let a module set them (Redis 7.2+, Valkey).
    acl: &'static [&'static str],
}

const POLICY_ARGS: &str =
    "key:key#0 policy:block[multiple]{limit:integer window_ms:integer} cost:integer(COST)[optional] \
     policies:pure-token(POLICIES)[optional]";

const EXPECTED: &[Expected] = &[
    Expected {
        name: "RATELIMIT.CHECK",
        internal: false,
        summary: "every sliding-window policy",
        arity: -4,
        key_flags: &["RW", "access", "update"],
        args: POLICY_ARGS,
        call: &["rl", "10", "1000", "20", "60000", "COST", "2"],
        acl: &["@write", "@fast"],
    },
    Expected {
        name: "RATELIMIT.PEEK",
        internal: false,
        summary: "recording nothing",
        arity: -4,
        key_flags: &["RO", "access"],
        args: POLICY_ARGS,
        call: &["rl", "10", "1000", "POLICIES"],
        acl: &["@read", "@fast"],
    },
    Expected {
        name: "RATELIMIT.RECORD",
        internal: true,
        summary: "replicated effect of an allowed RATELIMIT.CHECK",
        arity: 5,
        key_flags: &["RW", "update"],
        args: "key:key#0 now_ms:integer cost:integer horizon_ms:integer",
        call: &["rl", "1000", "1", "1000"],
        acl: &["@write", "@fast", "@dangerous"],
    },
    Expected {
        name: "RATELIMIT.RESTORE",
        internal: true,
        summary: "AOF rewrite",
        arity: 3,
        key_flags: &["OW", "update"],
        args: "key:key#0 payload:string",
        call: &["rl", "payload"],
        acl: &["@write", "@slow", "@keyspace", "@dangerous"],
    },
    Expected {
        name: "METRIC.ADD",
        internal: false,
        summary: "Records one sample",
        arity: -3,
        key_flags: &["RW", "access", "update"],
        args: "key:key#0 value:double timestamp:block[optional]{unix_ms:integer(TS) \
               applied:block[optional]<Internal>{retention_ms:integer(RETENTION) now_ms:integer(NOW)}}",
        call: &["m", "1.5", "TS", "1000"],
        acl: &["@write", "@fast"],
    },
    Expected {
        name: "METRIC.SUMMARY",
        internal: false,
        summary: "p99",
        arity: -2,
        key_flags: &["RO", "access"],
        args: "key:key#0 window_ms:integer(WINDOW)[optional]",
        call: &["m", "WINDOW", "60000"],
        acl: &["@read", "@fast"],
    },
    Expected {
        name: "METRIC.RANGE",
        internal: false,
        summary: "per-bucket",
        arity: -5,
        key_flags: &["RO", "access"],
        args: "key:key#0 from:oneof{from_ms:integer oldest:pure-token(-)} \
               to:oneof{to_ms:integer newest:pure-token(+)} bucket_ms:integer \
               quantiles:pure-token(QUANTILES)[optional]",
        call: &["m", "-", "+", "60000", "QUANTILES"],
        acl: &["@read", "@slow"],
    },
    Expected {
        name: "METRIC.EXPORT",
        internal: false,
        summary: "mergeable state",
        arity: -2,
        key_flags: &["RO", "access"],
        args: "key:key#0 part:oneof[optional]{window_ms:integer(WINDOW) \
               range:block(RANGE){from:oneof{from_ms:integer oldest:pure-token(-)} \
               to:oneof{to_ms:integer newest:pure-token(+)} bucket_ms:integer}}",
        call: &["m", "RANGE", "-", "+", "60000"],
        acl: &["@read", "@slow"],
    },
    Expected {
        name: "METRIC.RESTORE",
        internal: true,
        summary: "AOF rewrite",
        arity: 3,
        key_flags: &["OW", "update"],
        args: "key:key#0 payload:string",
        call: &["m", "payload"],
        acl: &["@write", "@slow", "@keyspace", "@dangerous"],
    },
];

fn field(map: &Value, name: &str) -> Option<Value> {
    pairs(map)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

fn items(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(items) | Value::Set(items) => items.clone(),
        other => panic!("not an array: {other:?}"),
    }
}

/// One argument of a `COMMAND DOCS` reply as `name:type#key_spec(token)[flags]<Internal>{subargs}`
/// (the parts that are set), ignoring what servers add on their own (`display_text`).
fn render(arg: &Value) -> String {
    let mut out = format!(
        "{}:{}",
        text(&field(arg, "name").expect("name")),
        text(&field(arg, "type").expect("type"))
    );
    if let Some(index) = field(arg, "key_spec_index") {
        out += &format!("#{}", text(&index));
    }
    if let Some(token) = field(arg, "token") {
        out += &format!("({})", text(&token));
    }
    if let Some(flags) = field(arg, "flags") {
        let flags: Vec<String> = items(&flags).iter().map(text).collect();
        out += &format!("[{}]", flags.join(","));
    }
    if let Some(summary) = field(arg, "summary") {
        if text(&summary).starts_with("Internal: ") {
            out += "<Internal>";
        }
    }
    if let Some(args) = field(arg, "arguments") {
        out += &format!("{{{}}}", render_all(&args));
    }
    out
}

fn render_all(args: &Value) -> String {
    items(args).iter().map(render).collect::<Vec<_>>().join(" ")
}

fn normalize(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Every check of this suite against one running server; `acl`: the server lets a module set
/// ACL categories.
fn check_server(label: &str, conn: &mut Connection, acl: bool) {
    // The module's commands are exactly the documented ones.
    let listed: Value = redis::cmd("COMMAND")
        .arg("LIST")
        .arg("FILTERBY")
        .arg("MODULE")
        .arg("tally")
        .query(conn)
        .unwrap_or_else(|e| panic!("{label}: COMMAND LIST: {e}"));
    let mut listed: Vec<String> = items(&listed).iter().map(text).collect();
    listed.sort_unstable();
    let mut names: Vec<&str> = EXPECTED.iter().map(|e| e.name).collect();
    names.sort_unstable();
    assert_eq!(listed, names, "{label}");

    for e in EXPECTED {
        let ctx = format!("{label} {}", e.name);
        // COMMAND DOCS (asked in lower case, as a client may).
        let reply: Value = redis::cmd("COMMAND")
            .arg("DOCS")
            .arg(e.name.to_lowercase())
            .query(conn)
            .unwrap_or_else(|err| panic!("{ctx}: COMMAND DOCS: {err}"));
        let entries = pairs(&reply);
        assert_eq!(entries.len(), 1, "{ctx}: {reply:?}");
        let docs = &entries[0].1;
        let get = |name: &str| {
            field(docs, name).unwrap_or_else(|| panic!("{ctx}: no {name} in {docs:?}"))
        };
        let summary = text(&get("summary"));
        assert!(summary.contains(e.summary), "{ctx}: {summary}");
        assert_eq!(
            summary.starts_with("Internal: "),
            e.internal,
            "{ctx}: {summary}"
        );
        assert_eq!(text(&get("since")), "1.0.0", "{ctx}");
        assert_eq!(text(&get("group")), "module", "{ctx}");
        assert_eq!(text(&get("module")), "tally", "{ctx}");
        let complexity = text(&get("complexity"));
        assert!(complexity.starts_with("O("), "{ctx}: {complexity}");
        assert_eq!(render_all(&get("arguments")), normalize(e.args), "{ctx}");

        // COMMAND INFO: arity, legacy key range and the key spec.
        let reply: Value = redis::cmd("COMMAND")
            .arg("INFO")
            .arg(e.name)
            .query(conn)
            .unwrap_or_else(|err| panic!("{ctx}: COMMAND INFO: {err}"));
        let info = items(&items(&reply)[0]);
        assert_eq!(text(&info[0]).to_uppercase(), e.name, "{ctx}");
        assert_eq!(info[1], Value::Int(e.arity), "{ctx}");
        assert_eq!(
            &info[3..6],
            &[Value::Int(1), Value::Int(1), Value::Int(1)],
            "{ctx}"
        );
        let mut categories: Vec<String> = items(&info[6]).iter().map(text).collect();
        let mut expected: Vec<&str> = if acl { e.acl.to_vec() } else { Vec::new() };
        categories.sort_unstable();
        expected.sort_unstable();
        assert_eq!(categories, expected, "{ctx}");
        let specs = items(&info[8]);
        assert_eq!(specs.len(), 1, "{ctx}: {specs:?}");
        let spec = &specs[0];
        let flags: Vec<String> = items(&field(spec, "flags").unwrap())
            .iter()
            .map(text)
            .collect();
        assert_eq!(flags, e.key_flags, "{ctx}");
        let begin = field(spec, "begin_search").unwrap();
        assert_eq!(text(&field(&begin, "type").unwrap()), "index", "{ctx}");
        let index = field(&begin, "spec").unwrap();
        assert_eq!(field(&index, "index"), Some(Value::Int(1)), "{ctx}");
        let find = field(spec, "find_keys").unwrap();
        assert_eq!(text(&field(&find, "type").unwrap()), "range", "{ctx}");
        let range = field(&find, "spec").unwrap();
        assert_eq!(field(&range, "lastkey"), Some(Value::Int(0)), "{ctx}");
        assert_eq!(field(&range, "keystep"), Some(Value::Int(1)), "{ctx}");

        // COMMAND GETKEYS: the one key, and the documented arity enforced.
        let keys: Vec<String> = redis::cmd("COMMAND")
            .arg("GETKEYS")
            .arg(e.name)
            .arg(e.call)
            .query(conn)
            .unwrap_or_else(|err| panic!("{ctx}: COMMAND GETKEYS: {err}"));
        assert_eq!(keys, [e.call[0]], "{ctx}");
        // One argument fewer than the arity allows (SUMMARY's shortest call is its key alone,
        // and `COMMAND GETKEYS` with no argument is an error of GETKEYS itself).
        let short = (e.arity.unsigned_abs() as usize).saturating_sub(2);
        if short == 0 {
            continue;
        }
        let err = redis::cmd("COMMAND")
            .arg("GETKEYS")
            .arg(e.name)
            .arg(&e.call[..short])
            .query::<Value>(conn)
            .expect_err("too few arguments");
        assert!(
            err.to_string().contains("Invalid number of arguments"),
            "{ctx}: {err}"
        );
    }

    // The arity the docs declare is the server's check too: refused before the module runs,
    // with the usual error, and nothing written.
    let err = redis::cmd("RATELIMIT.RECORD")
        .arg("rl-arity")
        .arg("1")
        .query::<Value>(conn)
        .expect_err("short RECORD");
    assert!(
        err.to_string().contains("wrong number of arguments"),
        "{label}: {err}"
    );
    let exists: i64 = redis::cmd("EXISTS").arg("rl-arity").query(conn).unwrap();
    assert_eq!(exists, 0, "{label}");
}

#[test]
fn every_command_is_documented_on_every_flavor() {
    for flavor in Flavor::all() {
        let server = Server::start_flavor(flavor);
        // Redis 7.0 has no RedisModule_SetCommandACLCategories; Valkey and Redis 8.2 have.
        let acl = flavor != Flavor::Redis;
        check_server(&format!("{flavor:?}"), &mut server.conn(), acl);
        // The commands still work with their docs set.
        let mut conn = server.conn();
        let reply = server
            .run(&mut conn, &["RATELIMIT.CHECK", "k", "1", "1000"])
            .unwrap();
        assert_eq!(items(&reply)[0], Value::Int(1), "{flavor:?}");
    }
}
