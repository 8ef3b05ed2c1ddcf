//! Header formatting and policy plans, as tables.

use super::*;
use crate::config::policy_file;

fn state(limit: i64, window_ms: i64, remaining: i64, reset_after_ms: i64) -> PolicyState {
    PolicyState {
        limit,
        window_ms,
        remaining,
        reset_after_ms,
    }
}

fn with_file(text: &str) -> Policies {
    let config = Config {
        policy_file: Some(policy_file::parse("p.toml", text).unwrap()),
        ..Config::default()
    };
    Policies::from_config(&config)
}

const FILE: &str = r#"[policies]
burst  = { limit = 10,   window = "1s" }
minute = { limit = 100,  window = "1m" }
hour   = { limit = 1000, window = "1h" }
probe  = { limit = 50,   window = "1m", shadow = true }

[tiers.pro]
ingest = ["burst", "hour", "probe"]
read   = ["minute"]

[tiers.anonymous]
ingest = ["minute"]
"#;

#[test]
fn without_a_file_there_is_one_default_policy_on_ingest_as_today() {
    let p = Policies::from_config(&Config::default());
    assert!(!p.from_file);
    let anon = p.anonymous();
    assert_eq!(anon.ingest.enforced, [0]);
    assert_eq!(anon.ingest.policy_header, "\"default\";q=5;w=60");
    assert!(anon.read.enforced.is_empty() && anon.read.shadow.is_empty());
    assert_eq!(p.arguments(&[0]), [(5, 60_000)]);
}

#[test]
fn a_file_gives_each_class_its_enforced_and_shadow_policies_in_the_tiers_order() {
    let p = with_file(FILE);
    assert!(p.from_file);
    assert_eq!(p.anonymous().name, "anonymous");
    let pro = p.tier("pro").unwrap();
    assert_eq!(pro.ingest.enforced, [0, 2]);
    assert_eq!(pro.ingest.shadow, [3]);
    assert_eq!(
        pro.ingest.policy_header,
        "\"burst\";q=10;w=1, \"hour\";q=1000;w=3600"
    );
    assert_eq!(
        pro.class(Class::Read).policy_header,
        "\"minute\";q=100;w=60"
    );
    assert!(p.tier("gold").is_none());
    assert_eq!(p.rule("probe"), Some(3));
}

#[test]
fn the_ratelimit_header_lists_every_enforced_policy_with_seconds_rounded_up() {
    let p = with_file(FILE);
    let states = [
        state(10, 1000, 9, 1000),
        state(1000, 3_600_000, 999, 3_599_001),
    ];
    assert_eq!(
        p.ratelimit_header(&[0, 2], &states),
        "\"burst\";r=9;t=1, \"hour\";r=999;t=3600"
    );
    // Nothing recorded: t=0; a negative remaining never shows.
    assert_eq!(ratelimit_item("a", -1, 0), "\"a\";r=0;t=0");
    assert_eq!(ratelimit_item("a", 3, 1), "\"a\";r=3;t=1");
}

#[test]
fn a_denial_names_the_violated_policy_that_frees_up_last() {
    let denied = |limit| Decision {
        allowed: false,
        limit,
        remaining: 0,
        retry_after_ms: 500,
        reset_after_ms: 900,
    };
    // burst full, hour fine: burst.
    let states = [
        state(10, 1000, 0, 900),
        state(1000, 3_600_000, 990, 3_600_000),
    ];
    assert_eq!(violated(&[0, 2], &states, &denied(10), 1), Some(0));
    // Both violated, the module names hour (its limit): hour.
    let states = [
        state(10, 1000, 0, 900),
        state(1000, 3_600_000, 0, 3_600_000),
    ];
    assert_eq!(violated(&[0, 2], &states, &denied(1000), 1), Some(2));
    // A cost above a limit can never pass: that policy.
    let states = [state(10, 1000, 10, 0), state(1000, 3_600_000, 1000, 0)];
    assert_eq!(violated(&[0, 2], &states, &denied(10), 11), Some(0));
}

#[test]
fn retry_after_is_whole_seconds_at_least_one_or_a_window_when_never() {
    let d = |retry_after_ms| Decision {
        allowed: false,
        limit: 5,
        remaining: 0,
        retry_after_ms,
        reset_after_ms: 1,
    };
    assert_eq!(retry_after_s(&d(0), 60_000), 1);
    assert_eq!(retry_after_s(&d(1001), 60_000), 2);
    assert_eq!(retry_after_s(&d(-1), 60_000), 60);
    assert_eq!(retry_after_s(&d(-1), 1500), 2);
}
