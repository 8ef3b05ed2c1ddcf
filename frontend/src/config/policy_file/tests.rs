//! The policy file's parser as tables: valid files and what they give, and every refusal with
//! its file, line and field.

use super::*;

const EXAMPLE: &str = r#"[policies]
burst  = { limit = 10,   window = "1s" }
minute = { limit = 100,  window = "1m" }
hour   = { limit = 1000, window = "1h" }
probe  = { limit = 50,   window = "1m", shadow = true }

[tiers.anonymous]
ingest = ["minute"]
read   = []

[tiers.pro]
ingest = ["burst", "hour", "probe"]
read   = ["minute"]
"#;

fn policy(name: &str, limit: u64, window_ms: u64, shadow: bool) -> NamedPolicy {
    NamedPolicy {
        name: name.to_string(),
        limit,
        window_ms,
        shadow,
    }
}

#[test]
fn the_documented_example_parses_in_file_order() {
    let f = parse("p.toml", EXAMPLE).unwrap();
    assert_eq!(
        f.policies,
        [
            policy("burst", 10, 1000, false),
            policy("minute", 100, 60_000, false),
            policy("hour", 1000, 3_600_000, false),
            policy("probe", 50, 60_000, true),
        ]
    );
    assert_eq!(
        f.tiers,
        [
            Tier {
                name: "anonymous".into(),
                ingest: vec![1],
                read: vec![],
            },
            Tier {
                name: "pro".into(),
                ingest: vec![0, 2, 3],
                read: vec![1],
            },
        ]
    );
    assert_eq!(f.tier("pro").unwrap().ingest, [0, 2, 3]);
    assert_eq!(f.policy("hour"), Some(2));
    assert_eq!(f.path, "p.toml");
}

#[test]
fn policies_may_be_tables_and_classes_may_be_left_out() {
    let text = "[policies.day]\nlimit = 5\nwindow = \"1d\"\n\n[tiers.anonymous]\n";
    let f = parse("p.toml", text).unwrap();
    assert_eq!(f.policies, [policy("day", 5, 86_400_000, false)]);
    assert!(f.tiers[0].ingest.is_empty() && f.tiers[0].read.is_empty());
}

#[test]
fn windows_are_an_integer_and_a_unit_from_1s_to_49_days() {
    for (s, ms) in [
        ("1s", 1000),
        ("90s", 90_000),
        ("5m", 300_000),
        ("2h", 7_200_000),
        ("49d", 49 * 86_400_000),
        ("007s", 7000),
    ] {
        assert_eq!(parse_window(s), Ok(ms), "{s}");
    }
    for s in [
        "",
        "s",
        "1",
        "0s",
        "1ms",
        "1.5s",
        "-1s",
        "+1s",
        " 1s",
        "1S",
        "50d",
        "1w",
        "99999999999999999999s",
    ] {
        assert!(parse_window(s).is_err(), "{s:?}");
    }
}

#[test]
fn names_follow_the_pattern() {
    for ok in ["a", "burst", "per-ip_2", "a234567890123456789012345678901b"] {
        assert!(valid_name(ok), "{ok}");
    }
    for bad in [
        "",
        "1a",
        "-a",
        "A",
        "aB",
        "a.b",
        "a b",
        "é",
        "a2345678901234567890123456789012b",
    ] {
        assert!(!valid_name(bad), "{bad}");
    }
}

/// Every refusal: (file text, line, field, a fragment of the message).
#[test]
fn every_refusal_names_the_file_the_line_and_the_field() {
    let anon = "\n[tiers.anonymous]\ningest = []\n";
    let cases: Vec<(String, usize, &str, &str)> = vec![
        // Unknown fields, at every level.
        (format!("colour = 1\n{anon}"), 1, "colour", "unknown field"),
        (
            format!("[policies]\nb = {{ limit = 1, window = \"1s\", burst = 2 }}\n{anon}"),
            2,
            "policies.b.burst",
            "unknown field",
        ),
        (
            format!("[policies]\nb = {{ limit = 1, window = \"1s\" }}\n{anon}write = [\"b\"]\n"),
            6,
            "tiers.anonymous.write",
            "unknown field",
        ),
        // Limits below 1, not integers.
        (
            format!("[policies]\nb = {{ limit = 0, window = \"1s\" }}\n{anon}"),
            2,
            "policies.b.limit",
            "integer from 1",
        ),
        (
            format!("[policies]\n\nb = {{ limit = -3, window = \"1s\" }}\n{anon}"),
            3,
            "policies.b.limit",
            "integer from 1",
        ),
        (
            format!("[policies]\nb = {{ limit = \"10\", window = \"1s\" }}\n{anon}"),
            2,
            "policies.b.limit",
            "integer from 1",
        ),
        (
            format!("[policies.b]\nwindow = \"1s\"\nlimit = 1.5\n{anon}"),
            3,
            "policies.b.limit",
            "integer from 1",
        ),
        // Bad windows.
        (
            format!("[policies]\nb = {{ limit = 1, window = \"10x\" }}\n{anon}"),
            2,
            "policies.b.window",
            "not a window",
        ),
        (
            format!("[policies]\nb = {{ limit = 1, window = 10 }}\n{anon}"),
            2,
            "policies.b.window",
            "must be a string",
        ),
        (
            format!("[policies]\nb = {{ limit = 1, window = \"0s\" }}\n{anon}"),
            2,
            "policies.b.window",
            "not a window",
        ),
        // Missing fields.
        (
            format!("[policies]\nb = {{ limit = 1 }}\n{anon}"),
            2,
            "policies.b.window",
            "is missing",
        ),
        (
            format!("[policies]\nb = {{ window = \"1s\" }}\n{anon}"),
            2,
            "policies.b.limit",
            "is missing",
        ),
        (
            format!("[policies]\nb = {{ limit = 1, window = \"1s\", shadow = \"yes\" }}\n{anon}"),
            2,
            "policies.b.shadow",
            "true or false",
        ),
        // Bad names.
        (
            format!("[policies]\nBurst = {{ limit = 1, window = \"1s\" }}\n{anon}"),
            2,
            "policies.Burst",
            "[a-z][a-z0-9_-]{0,31}",
        ),
        (
            "[tiers.Pro]\n[tiers.anonymous]\n".to_string(),
            1,
            "tiers.Pro",
            "[a-z][a-z0-9_-]{0,31}",
        ),
        // A policy that is not a table.
        (
            format!("[policies]\nb = 5\n{anon}"),
            2,
            "policies.b",
            "must be a table",
        ),
        // Tiers: unknown policies, duplicates, wrong types, the anonymous tier.
        (
            format!("[policies]\nb = {{ limit = 1, window = \"1s\" }}\n{anon}read = [\"b\",\n  \"nope\"]\n"),
            7,
            "tiers.anonymous.read[1]",
            "unknown policy \"nope\"",
        ),
        (
            format!("[policies]\nb = {{ limit = 1, window = \"1s\" }}\n{anon}read = [\"b\", \"b\"]\n"),
            6,
            "tiers.anonymous.read[1]",
            "listed twice",
        ),
        (
            format!("[policies]\nb = {{ limit = 1, window = \"1s\" }}\n{anon}read = \"b\"\n"),
            6,
            "tiers.anonymous.read",
            "array of policy names",
        ),
        (
            format!("[policies]\nb = {{ limit = 1, window = \"1s\" }}\n{anon}read = [1]\n"),
            6,
            "tiers.anonymous.read[0]",
            "policy name",
        ),
        (
            "[policies]\nb = { limit = 1, window = \"1s\" }\n\n[tiers.pro]\ningest = [\"b\"]\n"
                .to_string(),
            4,
            "tiers.anonymous",
            "is missing",
        ),
        ("[policies]\n".to_string(), 1, "tiers", "is missing"),
        // TOML syntax errors name their line.
        (
            format!("[policies]\nb = = 1\n{anon}"),
            2,
            "(syntax)",
            "",
        ),
    ];
    for (text, line, field, fragment) in cases {
        let e = parse("/etc/tally/policies.toml", &text).expect_err(&text);
        assert_eq!(e.file, "/etc/tally/policies.toml", "{text}");
        assert_eq!((e.line, e.field.as_str()), (line, field), "{text}\n{e}");
        assert!(e.message.contains(fragment), "{text}\n{e}");
        let shown = e.to_string();
        assert!(
            shown.starts_with(&format!("/etc/tally/policies.toml:{line}: {field}: ")),
            "{shown}"
        );
    }
}

#[test]
fn a_class_holds_at_most_16_policies() {
    let mut text = String::from("[policies]\n");
    let mut names = Vec::new();
    for i in 0..17 {
        text += &format!("p{i} = {{ limit = 1, window = \"1s\" }}\n");
        names.push(format!("\"p{i}\""));
    }
    text += &format!("[tiers.anonymous]\ningest = [{}]\n", names.join(", "));
    let e = parse("f", &text).unwrap_err();
    assert_eq!(e.field, "tiers.anonymous.ingest");
    assert!(e.message.contains("at most 16"), "{e}");
}

#[test]
fn a_missing_file_is_named() {
    let e = read("/nonexistent/policies.toml").unwrap_err();
    assert_eq!(e.file, "/nonexistent/policies.toml");
    assert!(e.message.contains("cannot read"), "{e}");
}
