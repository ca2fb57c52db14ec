//! Generated profiles: a run directory's heap profiles are input like any
//! other, so any bytes decode to a profile or a typed error, and any
//! profile, however its ids and string indices point (nowhere, negative,
//! past the end), reads back into stacks without a panic.

use leakscope_pprof::proto::{Function, Line, Location, Profile, Sample, ValueType};
use leakscope_pprof::{decode, encode_gzip, folded, stacks};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Indices that are sometimes right, sometimes past the end, sometimes
/// negative.
fn index() -> impl Strategy<Value = i64> {
    prop_oneof![0i64..6, Just(-1i64), Just(i64::MAX), Just(i64::MIN)]
}

fn id() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..6, Just(u64::MAX)]
}

fn function() -> impl Strategy<Value = Function> {
    (id(), index(), index(), index()).prop_map(|(id, name, system_name, filename)| Function {
        id,
        name,
        system_name,
        filename,
        start_line: 0,
    })
}

fn location() -> impl Strategy<Value = Location> {
    let lines = prop::collection::vec((id(), index()), 0..4);
    (id(), any::<u64>(), lines).prop_map(|(id, address, lines)| Location {
        id,
        mapping_id: 0,
        address,
        line: lines
            .into_iter()
            .map(|(function_id, line)| Line {
                function_id,
                line,
                column: 0,
            })
            .collect(),
        is_folded: false,
    })
}

fn sample() -> impl Strategy<Value = Sample> {
    let ids = prop::collection::vec(id(), 0..8);
    let values = prop::collection::vec(any::<i64>(), 0..3);
    (ids, values).prop_map(|(location_id, value)| Sample {
        location_id,
        value,
        label: vec![],
    })
}

fn profile() -> impl Strategy<Value = Profile> {
    let strings = prop::collection::vec("[ -~]{0,12}", 0..6);
    let types = prop::collection::vec((index(), index()), 0..3);
    let functions = prop::collection::vec(function(), 0..6);
    let locations = prop::collection::vec(location(), 0..6);
    let samples = prop::collection::vec(sample(), 0..8);
    (strings, types, functions, locations, samples).prop_map(|(s, t, f, l, smp)| Profile {
        string_table: s,
        sample_type: t
            .into_iter()
            .map(|(r#type, unit)| ValueType { r#type, unit })
            .collect(),
        function: f,
        location: l,
        sample: smp,
        ..Profile::default()
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_bytes_decode_or_fail(bytes in prop::collection::vec(any::<u8>(), 0..400), gz in any::<bool>()) {
        let bytes = if gz {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut e, &bytes).unwrap();
            e.finish().unwrap()
        } else {
            bytes
        };
        if let Ok(p) = decode(&bytes, 1 << 20) {
            let _ = stacks(&p, "inuse_space");
            let _ = folded(&p, "inuse_space");
        }
    }

    #[test]
    fn any_profile_reads_back(p in profile()) {
        let back = decode(&encode_gzip(&p), 1 << 20).expect("what we encode decodes");
        prop_assert_eq!(&back, &p);
        // One stack per sample that has a value of the chosen type.
        let read = stacks(&p, "inuse_space");
        prop_assert!(read.len() <= p.sample.len());
        // Folded lines are "frames value" with a positive value.
        for line in folded(&p, "inuse_space") {
            let value: i64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            prop_assert!(value > 0, "{}", line);
        }
    }
}
