//! Property tests of merging across series (labels): the states of random splits of a set of
//! samples merge into the state of one sketch fed the union (the same bins), exact
//! aggregates, and quantiles within 1% of the exact rank `ceil(q n)` sample.

use proptest::prelude::*;

use super::aggregates::Aggregates;
use super::series::QUANTILES;
use super::sketch::{Sketch, ALL_TIME_CAP};
use super::state::State;
use crate::test_support::config;

/// Values of either sign over a few decades (a sketch of them never collapses), with zeros.
fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        1 => Just(0.0),
        6 => (-2000i32..2000).prop_map(|v| f64::from(v) / 8.0),
        3 => (-3.0f64..4.0, any::<bool>()).prop_map(|(e, neg)| {
            let v = 10f64.powf(e);
            if neg { -v } else { v }
        }),
    ]
}

fn state_of(samples: &[(f64, u64)]) -> State {
    let mut agg = Aggregates::default();
    let mut sketch = Sketch::new();
    for &(x, ts) in samples {
        agg.add(x, ts);
        sketch.add(x, ALL_TIME_CAP);
    }
    State::of(&agg, &[&sketch])
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn merged_states_equal_one_sketch_fed_the_union(
        samples in proptest::collection::vec((value(), 0u64..1_000_000), 1..400),
        series in proptest::collection::vec(0usize..8, 400),
    ) {
        // Each sample goes to one of up to 8 series (a random split, some series empty).
        let mut parts: Vec<Vec<(f64, u64)>> = vec![Vec::new(); 8];
        for (i, &s) in samples.iter().enumerate() {
            parts[series[i]].push(s);
        }
        let mut merged = State::default();
        for p in &parts {
            merged.merge(&state_of(p));
        }
        let whole = state_of(&samples);
        prop_assert_eq!(merged.bins(), whole.bins(), "the same bins");
        let (m, w) = (merged.summary().unwrap(), whole.summary().unwrap());
        prop_assert_eq!(m.count, w.count);
        prop_assert_eq!((m.min, m.max), (w.min, w.max));
        prop_assert_eq!((m.first_ts, m.last_ts), (w.first_ts, w.last_ts));
        prop_assert_eq!(m.quantiles, w.quantiles);
        prop_assert!(close(m.sum, w.sum), "{} {}", m.sum, w.sum);
        prop_assert!(close(m.avg, w.avg), "{} {}", m.avg, w.avg);

        // The stddev merge equals the direct (two-pass) computation.
        let n = samples.len() as f64;
        let mean = samples.iter().map(|s| s.0).sum::<f64>() / n;
        let var = samples.iter().map(|s| (s.0 - mean).powi(2)).sum::<f64>() / n;
        let scale = samples.iter().map(|s| s.0.abs()).fold(1.0, f64::max);
        prop_assert!((m.stddev - var.sqrt()).abs() <= 1e-9 * scale, "{} {}", m.stddev, var.sqrt());

        // Each quantile within 1% of the exact sample of rank ceil(q n).
        let mut sorted: Vec<f64> = samples.iter().map(|s| s.0).collect();
        sorted.sort_by(f64::total_cmp);
        for ((_, num, den), q) in QUANTILES.iter().zip(m.quantiles) {
            let rank = (num * samples.len() as u64).div_ceil(*den).max(1) as usize;
            let exact = sorted[rank - 1];
            let got = q.unwrap();
            prop_assert!((got - exact).abs() <= 0.01 * exact.abs(), "q{num}: {got} vs {exact}");
        }

        // The merged state travels through its encoding unchanged.
        prop_assert_eq!(State::decode(&merged.encode()), Ok(merged));
    }

    #[test]
    fn the_state_decoder_never_panics_on_arbitrary_bytes(
        raw in proptest::collection::vec(any::<u8>(), 0..96),
    ) {
        let mut bytes = raw.clone();
        bytes.insert(0, super::state::STATE_VERSION);
        for b in [&raw, &bytes] {
            if let Ok(s) = State::decode(b) {
                let _ = s.summary();
                prop_assert_eq!(State::decode(&s.encode()), Ok(s));
            }
            let _ = super::state::decode_points(b);
        }
    }
}
