//! Generated load specs: `--load` patterns and `--concurrency` come from a
//! command line, so any text gives a spec or a typed error, never a panic,
//! and a spec that parses prints back to itself.

use leakscope_loadspec::{Concurrency, Pattern};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 1024,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_text_is_a_pattern_or_an_error(spec in any::<String>()) {
        let _ = spec.parse::<Pattern>();
        let _ = spec.parse::<Concurrency>();
    }

    #[test]
    fn pattern_shaped_text_round_trips(
        spec in "(full|zip|abort:[0-9]{0,21}(KiB|MiB|GiB|B|k)?|slow:[0-9]{0,21}(KiB|MiB)?(/s)?|range:[0-9]{0,21}-[0-9]{0,21})",
    ) {
        if let Ok(p) = spec.parse::<Pattern>() {
            let again: Pattern = p.to_string().parse().expect("its own text parses");
            prop_assert_eq!(again, p);
        }
    }

    #[test]
    fn concurrency_shaped_text_round_trips(spec in "[0-9]{0,11}(\\.\\.[0-9]{0,11})?") {
        if let Ok(c) = spec.parse::<Concurrency>() {
            prop_assert!(c.max() >= 1);
            let again: Concurrency = c.to_string().parse().expect("its own text parses");
            prop_assert_eq!(again, c);
        }
    }
}
