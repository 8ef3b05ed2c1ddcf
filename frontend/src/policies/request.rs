//! The body of `POST /api/limits/check`, validated whole (422 naming the field):
//! `{"subject": "user-42", "policies": ["burst", "hour"], "cost": 1, "peek": false}`.

use serde_json::Value;

use super::Policies;
use crate::config::policy_file::MAX_CLASS_POLICIES;

/// Longest `subject`, in bytes.
pub const MAX_SUBJECT_LEN: usize = 256;
/// Largest `cost`.
pub const MAX_COST: u64 = 1 << 31;

/// A valid request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsRequest {
    pub subject: String,
    /// Indices into `Policies::rules`, in the request's order.
    pub policies: Vec<usize>,
    pub cost: u64,
    pub peek: bool,
}

/// Validates `body` against the policies in force.
pub fn parse_limits_request(body: &[u8], policies: &Policies) -> Result<LimitsRequest, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not valid JSON: {e}"))?;
    let Value::Object(fields) = value else {
        return Err("the body must be a JSON object".to_string());
    };
    for name in fields.keys() {
        if !["subject", "policies", "cost", "peek"].contains(&name.as_str()) {
            return Err(format!(
                "unknown field {name:?} (expected subject, policies, cost, peek)"
            ));
        }
    }
    let subject = match fields.get("subject") {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_SUBJECT_LEN => s.clone(),
        Some(Value::String(_)) => {
            return Err(format!("subject must be 1 to {MAX_SUBJECT_LEN} bytes"))
        }
        Some(_) => return Err("subject must be a string".to_string()),
        None => return Err("subject is required".to_string()),
    };
    let names = match fields.get("policies") {
        Some(Value::Array(a)) if !a.is_empty() && a.len() <= MAX_CLASS_POLICIES => a,
        Some(Value::Array(_)) => {
            return Err(format!(
                "policies must name 1 to {MAX_CLASS_POLICIES} policies"
            ))
        }
        Some(_) => return Err("policies must be an array of policy names".to_string()),
        None => return Err("policies is required".to_string()),
    };
    let mut indices = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let Value::String(name) = name else {
            return Err(format!("policies[{i}] must be a policy name (a string)"));
        };
        let index = policies
            .rule(name)
            .ok_or_else(|| format!("policies[{i}]: unknown policy {name:?}"))?;
        if policies.rules[index].shadow {
            return Err(format!(
                "policies[{i}]: {name:?} is a shadow policy, which is never enforced"
            ));
        }
        if indices.contains(&index) {
            return Err(format!("policies[{i}]: {name:?} is listed twice"));
        }
        indices.push(index);
    }
    let cost = match fields.get("cost") {
        None => 1,
        Some(v) => v
            .as_u64()
            .filter(|&c| c <= MAX_COST)
            .ok_or_else(|| format!("cost must be an integer from 0 to {MAX_COST}"))?,
    };
    let peek = match fields.get("peek") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("peek must be true or false".to_string()),
    };
    Ok(LimitsRequest {
        subject,
        policies: indices,
        cost,
        peek,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{policy_file, Config};

    fn policies() -> Policies {
        let text = "[policies]\nburst = { limit = 10, window = \"1s\" }\n\
                    hour = { limit = 1000, window = \"1h\" }\n\
                    probe = { limit = 5, window = \"1m\", shadow = true }\n\
                    [tiers.anonymous]\n";
        Policies::from_config(&Config {
            policy_file: Some(policy_file::parse("p.toml", text).unwrap()),
            ..Config::default()
        })
    }

    #[test]
    fn a_valid_request_names_known_enforced_policies() {
        let p = policies();
        let r = parse_limits_request(
            br#"{"subject":"user-42","policies":["hour","burst"],"cost":0,"peek":true}"#,
            &p,
        )
        .unwrap();
        assert_eq!(
            r,
            LimitsRequest {
                subject: "user-42".into(),
                policies: vec![1, 0],
                cost: 0,
                peek: true
            }
        );
        let r = parse_limits_request(br#"{"subject":"s","policies":["burst"]}"#, &p).unwrap();
        assert_eq!((r.cost, r.peek), (1, false));
    }

    #[test]
    fn every_bad_field_is_named() {
        let p = policies();
        let long = format!(
            r#"{{"subject":"{}","policies":["burst"]}}"#,
            "x".repeat(257)
        );
        let cases: &[(&str, &str)] = &[
            ("{", "not valid JSON"),
            ("[]", "JSON object"),
            (r#"{"policies":["burst"]}"#, "subject is required"),
            (
                r#"{"subject":"","policies":["burst"]}"#,
                "subject must be 1 to 256",
            ),
            (&long, "subject must be 1 to 256"),
            (
                r#"{"subject":7,"policies":["burst"]}"#,
                "subject must be a string",
            ),
            (r#"{"subject":"s"}"#, "policies is required"),
            (
                r#"{"subject":"s","policies":[]}"#,
                "policies must name 1 to 16",
            ),
            (
                r#"{"subject":"s","policies":"burst"}"#,
                "policies must be an array",
            ),
            (
                r#"{"subject":"s","policies":[1]}"#,
                "policies[0] must be a policy name",
            ),
            (
                r#"{"subject":"s","policies":["nope"]}"#,
                "policies[0]: unknown policy \"nope\"",
            ),
            (r#"{"subject":"s","policies":["probe"]}"#, "shadow policy"),
            (
                r#"{"subject":"s","policies":["burst","burst"]}"#,
                "policies[1]: \"burst\" is listed twice",
            ),
            (
                r#"{"subject":"s","policies":["burst"],"cost":-1}"#,
                "cost must be an integer",
            ),
            (
                r#"{"subject":"s","policies":["burst"],"cost":2147483649}"#,
                "cost must be an integer",
            ),
            (
                r#"{"subject":"s","policies":["burst"],"cost":1.5}"#,
                "cost must be an integer",
            ),
            (
                r#"{"subject":"s","policies":["burst"],"peek":"yes"}"#,
                "peek must be true or false",
            ),
            (
                r#"{"subject":"s","policies":["burst"],"colour":1}"#,
                "unknown field \"colour\"",
            ),
        ];
        for (body, fragment) in cases {
            let e = parse_limits_request(body.as_bytes(), &p).unwrap_err();
            assert!(e.contains(fragment), "{body}: {e}");
        }
        assert!(parse_limits_request(
            br#"{"subject":"s","policies":["burst"],"cost":2147483648}"#,
            &p
        )
        .is_ok());
    }
}
