//! Property tests of the series decoder: arbitrary, structured and corrupted payloads must
//! decode to a series that works, or be refused, never panic.

use proptest::prelude::*;

use super::aggregates::Aggregates;
use super::encoding;
use super::series::Series;
use super::sketch::Sketch;
use crate::codec::Writer;
use crate::test_support::{config, mutate, mutation};

fn exercise_series(series: &mut Series, now: u64) {
    const HOUR: u64 = 3_600_000;
    let _ = series.summary();
    let _ = series.window(now, 60_000);
    let _ = series.window(now, HOUR);
    let _ = series.heap_bytes();
    if let Some((from, to)) = series.bounds(now, HOUR) {
        if from <= to && to / 60_000 - from / 60_000 < 10_000 {
            let _ = series.range(from, to, 60_000, now, HOUR);
        }
    }
    let bytes = encoding::encode(series);
    let back = encoding::decode(&bytes).expect("re-encoded payload decodes");
    assert_eq!(encoding::encode(&back), bytes);
    series.add(1.5, now, HOUR);
    let _ = series.summary();
}

/// A real series' payload to corrupt.
fn series_payload(samples: &[(i32, u32)], t0: u64) -> Vec<u8> {
    let mut s = Series::new();
    for &(v, dt) in samples {
        s.add(f64::from(v) / 4.0, t0 + u64::from(dt), 3_600_000);
    }
    encoding::encode(&s)
}

/// A double from the values decoders must survive: ordinary, extreme and non-finite.
fn any_double() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => (-1000i32..1000).prop_map(f64::from),
        1 => any::<f64>(),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(f64::MAX),
        1 => Just(-0.0),
    ]
}

fn write_structured_aggregates(w: &mut Writer, ints: [u64; 3], floats: [f64; 6]) {
    for v in ints {
        w.uint(v);
    }
    for v in floats {
        w.f64(v);
    }
}

/// A well-formed v2 series payload with arbitrary field values (counts, timestamps, doubles,
/// sketch entries, buckets), so the decoder's consistency checks are what is tested. Counts
/// and timestamps stay within what the module can write (`TS <= i64::MAX`, far fewer than
/// 2^64 samples); see the report on larger ones.
fn structured_series_payload() -> impl Strategy<Value = Vec<u8>> {
    let ts = || {
        prop_oneof![
            4 => 1_700_000_000_000u64..1_700_000_600_000,
            1 => 0..=i64::MAX as u64,
            1 => Just(i64::MAX as u64),
            1 => Just(0u64),
        ]
    };
    let count = || prop_oneof![4 => 0..5u64, 1 => 0..(1u64 << 40)];
    let aggregates = move || {
        (
            (count(), ts(), ts()),
            proptest::array::uniform6(any_double()),
        )
    };
    let sketch = || {
        proptest::collection::vec(
            prop_oneof![
                3 => (-(2 * 16383 + 1)..=(2 * 16383 + 1i32), 1..=0xffffu32)
                    .prop_map(|(i, c)| (((i + 32768) as u32) << 16) | c),
                1 => any::<u32>(),
            ],
            0..5,
        )
        .prop_map(|mut words| {
            words.sort_unstable();
            words
        })
    };
    let bucket = move || (aggregates(), sketch());
    (
        aggregates(),
        sketch(),
        proptest::collection::vec(bucket(), 0..4),
        proptest::collection::vec(bucket(), 0..4),
    )
        .prop_map(|(all, sketch, fine, coarse)| {
            let mut w = Writer::new(encoding::ENCODING_VERSION);
            let ((c, f, l), floats) = all;
            write_structured_aggregates(&mut w, [c, f, l], floats);
            w.uint(sketch.len() as u64);
            for word in &sketch {
                w.uint(u64::from(*word));
            }
            for tier in [fine, coarse] {
                w.uint(tier.len() as u64);
                for (((c, f, l), floats), sketch) in tier {
                    write_structured_aggregates(&mut w, [c, f, l], floats);
                    w.uint(sketch.len() as u64);
                    for word in &sketch {
                        w.uint(u64::from(*word));
                    }
                }
            }
            w.finish()
        })
}

/// One field edit of a real series' payload: aggregates are numbered in encoding order (the
/// all-time ones, then fine buckets, then coarse buckets), modulo how many there are.
#[derive(Clone, Debug)]
enum Edit {
    /// Adds a small delta (wrapping) to count / first_ts / last_ts.
    Nudge(usize, usize, i64),
    /// Sets count / first_ts / last_ts.
    SetInt(usize, usize, u64),
    /// Sets sum / comp / mean / m2 / min / max.
    SetFloat(usize, usize, f64),
    /// Replaces a sketch's entries.
    Sketch(usize, Vec<u32>),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => (any::<usize>(), 0..3usize, -70_000..70_000i64)
            .prop_map(|(o, f, d)| Edit::Nudge(o, f, d)),
        1 => (any::<usize>(), 0..3usize, prop_oneof![Just(0u64), Just(i64::MAX as u64), 0..(1u64 << 40)])
            .prop_map(|(o, f, v)| Edit::SetInt(o, f, v)),
        2 => (any::<usize>(), 0..6usize, any_double()).prop_map(|(o, f, v)| Edit::SetFloat(o, f, v)),
        1 => (any::<usize>(), proptest::collection::vec(any::<u32>(), 0..4)).prop_map(|(o, mut w)| {
            w.sort_unstable();
            Edit::Sketch(o, w)
        }),
    ]
}

/// A real series' payload (samples spread over two hours, so both tiers hold buckets) with a
/// few fields edited: mostly still well-framed and often still accepted, so what the decoder
/// lets through is exercised.
fn edited_series_payload() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec((-1000i32..1000, 0..7_200_000u32), 1..60),
        1_600_000_000_000u64..1_800_000_000_000,
        proptest::collection::vec(edit(), 0..3),
    )
        .prop_map(|(samples, t0, edits)| {
            let mut series = Series::new();
            for (v, dt) in samples {
                series.add(f64::from(v) / 4.0, t0 + u64::from(dt), 3_600_000);
            }
            let (all, sketch, fine, coarse) = series.parts();
            let total = 1 + fine.buckets().len() + coarse.buckets().len();
            let mut w = Writer::new(encoding::ENCODING_VERSION);
            let mut ordinal = 0;
            let mut write = |w: &mut Writer, a: &Aggregates, s: &Sketch| {
                let (mut floats, mut ints) = a.to_parts();
                let mut words = s.to_words().to_vec();
                for e in &edits {
                    match e {
                        Edit::Nudge(o, f, d) if o % total == ordinal => {
                            ints[*f] = ints[*f].wrapping_add_signed(*d)
                        }
                        Edit::SetInt(o, f, v) if o % total == ordinal => ints[*f] = *v,
                        Edit::SetFloat(o, f, v) if o % total == ordinal => floats[*f] = *v,
                        Edit::Sketch(o, ws) if o % total == ordinal => words = ws.clone(),
                        _ => {}
                    }
                }
                write_structured_aggregates(w, ints, floats);
                w.uint(words.len() as u64);
                for word in words {
                    w.uint(u64::from(word));
                }
                ordinal += 1;
            };
            write(&mut w, all, sketch);
            for tier in [fine, coarse] {
                w.uint(tier.buckets().len() as u64);
                for b in tier.buckets() {
                    write(&mut w, &b.agg, &b.sketch);
                }
            }
            w.finish()
        })
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn a_decoded_series_works_without_panicking_whatever_its_fields_hold(
        bytes in prop_oneof![structured_series_payload(), edited_series_payload()],
        now in prop_oneof![1_700_000_000_000u64..1_700_001_000_000, 0..=i64::MAX as u64],
    ) {
        if let Ok(mut decoded) = encoding::decode(&bytes) {
            exercise_series(&mut decoded, now);
        }
    }

    #[test]
    fn the_series_decoder_never_panics_on_arbitrary_or_corrupted_bytes(
        raw in proptest::collection::vec(any::<u8>(), 0..96),
        samples in proptest::collection::vec((any::<i32>(), 0..7_200_000u32), 0..40),
        mutations in proptest::collection::vec(mutation(), 1..4),
        t0 in 0..(1u64 << 45),
        now_offset in 0..10_000_000u64,
    ) {
        let valid = series_payload(&samples, t0);
        for bytes in [raw, mutate(valid, &mutations)] {
            if let Ok(mut decoded) = encoding::decode(&bytes) {
                exercise_series(&mut decoded, t0 + now_offset);
            }
        }
    }
}
