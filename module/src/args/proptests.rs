//! Property tests of the strict argument parsers: what they accept is exactly the documented
//! grammar, and every error names the argument.

use proptest::prelude::*;

use crate::args;
use crate::error::Error;

// ---------------------------------------------------------------------------------------------
// Argument parsers
// ---------------------------------------------------------------------------------------------

/// Bytes that look like numbers more often than uniform bytes do.
fn numberish() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..32),
        "[-+ 0-9.eExXa-fA-FnNiItTyY_,]{0,26}".prop_map(String::into_bytes),
        "0{0,4}[0-9]{1,22}".prop_map(String::into_bytes),
        any::<u64>().prop_map(|v| v.to_string().into_bytes()),
        any::<f64>().prop_map(|v| v.to_string().into_bytes()),
    ]
}

/// The documented grammar of the integer parsers: 1 to 20 ASCII digits (leading zeros
/// allowed), value at most u64::MAX. (Redis's own string2ll also refuses leading zeros.)
fn plain_digits(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 20 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn message(e: Error) -> String {
    match e {
        Error::Arg(m) => m,
        other => panic!("argument errors are Error::Arg, got {other:?}"),
    }
}

/// `cases` per property; failures are reported with their shrunk input, not written to a
/// regressions file in the source tree.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn positive_accepts_exactly_plain_digits_in_range(
        b in numberish(),
        max in prop_oneof![Just(u64::MAX), Just(i64::MAX as u64), Just(u32::MAX as u64), 1..1000u64],
        name in "[a-z_]{1,12}",
    ) {
        match (args::positive(&b, &name, max), plain_digits(&b)) {
            (Ok(v), Some(want)) => prop_assert!(v == want && (1..=max).contains(&v)),
            (Ok(v), None) => prop_assert!(false, "{:?} accepted as {}", b, v),
            (Err(e), digits) => {
                prop_assert!(digits.is_none_or(|v| v == 0 || v > max), "{:?} refused", b);
                let m = message(e);
                prop_assert!(m.starts_with(&format!("{name} must be")), "{}", m);
                if digits.is_some_and(|v| v > max) {
                    prop_assert_eq!(m, format!("{name} must be an integer between 1 and {max}"));
                }
            }
        }
    }

    #[test]
    fn every_canonical_integer_spelling_parses_to_its_value(v in any::<u64>()) {
        let s = v.to_string();
        prop_assert_eq!(args::positive(s.as_bytes(), "n", u64::MAX).ok(), (v > 0).then_some(v));
        prop_assert_eq!(
            args::non_negative(s.as_bytes(), "n").ok(),
            (v <= i64::MAX as u64).then_some(v)
        );
        // A sign, a space, a fraction or an exponent is never part of an integer.
        for bad in [format!("+{s}"), format!("-{s}"), format!(" {s}"), format!("{s} "),
                    format!("{s}.0"), format!("{s}e0"), format!("{s}\0")] {
            prop_assert!(args::positive(bad.as_bytes(), "n", u64::MAX).is_err(), "{}", bad);
            prop_assert!(args::non_negative(bad.as_bytes(), "n").is_err(), "{}", bad);
        }
    }

    #[test]
    fn non_negative_accepts_exactly_plain_digits_up_to_i64_max(b in numberish()) {
        let want = plain_digits(&b).filter(|&v| v <= i64::MAX as u64);
        match args::non_negative(&b, "TS") {
            Ok(v) => prop_assert_eq!(Some(v), want),
            Err(e) => {
                prop_assert_eq!(want, None, "{:?} refused", b);
                prop_assert_eq!(message(e), "TS must be a non-negative integer");
            }
        }
    }

    #[test]
    fn finite_accepts_only_finite_numbers_and_never_panics(b in numberish()) {
        match args::finite(&b, "value") {
            Ok(v) => {
                prop_assert!(v.is_finite());
                let text = std::str::from_utf8(&b).expect("accepted input is UTF-8");
                prop_assert!(!text.is_empty());
                prop_assert!(!text.contains(|c: char| c.is_whitespace()), "{:?}", text);
                prop_assert_eq!(text.parse::<f64>().ok(), Some(v));
            }
            Err(e) => prop_assert_eq!(message(e), "value must be a finite number"),
        }
    }

    #[test]
    fn every_finite_double_round_trips_through_its_usual_spellings(v in any::<f64>()) {
        let spellings = [format!("{v}"), format!("{v:?}"), format!("{v:e}"), format!("{v:E}")];
        for s in spellings {
            let got = args::finite(s.as_bytes(), "value");
            if v.is_finite() {
                // Bit for bit: -0.0 stays -0.0.
                prop_assert_eq!(got.map(f64::to_bits), Ok(v.to_bits()), "{}", s);
            } else {
                prop_assert!(got.is_err(), "{} accepted", s);
            }
        }
        // Integers as a client library sends them.
        let n = v as i64;
        prop_assert_eq!(args::finite(n.to_string().as_bytes(), "value"), Ok(n as f64));
    }
}
