//! The verdict rule on synthetic series with known shapes, generated here
//! with fixed seeds: slopes must come back within tolerance, and a bounded
//! cache warming up must never be called a leak.

use leakscope_analysis::trend::{judge, theil_sen, Verdict};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const MIB: f64 = 1024.0 * 1024.0;

fn normal(rng: &mut StdRng, sigma: f64) -> f64 {
    // Box–Muller.
    let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
    sigma * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn series(
    seed: u64,
    n: usize,
    max_x: f64,
    mut f: impl FnMut(f64, &mut StdRng) -> f64,
) -> Vec<(f64, f64)> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let x = max_x * i as f64 / (n - 1) as f64;
            (x, f(x, &mut rng))
        })
        .collect()
}

#[test]
fn a_linear_heap_leak_is_a_leak_with_its_slope() {
    for seed in 0..5 {
        let pts = series(seed, 500, 5000.0, |x, r| {
            40.0 * MIB + 65536.0 * x + normal(r, 2.0 * MIB)
        });
        let j = judge(&pts, &[], MIB);
        assert_eq!(j.verdict, Verdict::Leak, "{j:?}");
        let fit = j.fit.unwrap();
        assert!((fit.slope - 65536.0).abs() < 0.03 * 65536.0, "{fit:?}");
        assert!(fit.lo <= 65536.0 && 65536.0 <= fit.hi, "{fit:?}");
    }
}

#[test]
fn an_fd_leak_with_concurrency_jitter_is_one_per_request() {
    let pts = series(7, 300, 3000.0, |x, r| {
        20.0 + x.floor() + r.random_range(0..8) as f64
    });
    let j = judge(&pts, &[12.0; 4], 4.0);
    assert_eq!(j.verdict, Verdict::Leak, "{j:?}");
    assert!((j.fit.unwrap().slope - 1.0).abs() < 0.02, "{:?}", j.fit);
}

#[test]
fn a_slow_leak_in_heavy_noise_is_still_found() {
    let pts = series(3, 800, 10_000.0, |x, r| {
        30.0 * MIB + 200.0 * x + normal(r, 200.0 * 1024.0)
    });
    let j = judge(&pts, &[], MIB);
    assert_eq!(j.verdict, Verdict::Leak, "{j:?}");
    let s = j.fit.unwrap().slope;
    assert!((s - 200.0).abs() < 20.0, "{s}");
}

#[test]
fn a_cache_warming_up_is_bounded_never_a_leak() {
    for seed in 0..10 {
        // Fills towards 10 MiB; nine tenths full after ~1,850 of 5,000 requests.
        let pts = series(seed, 500, 5000.0, |x, r| {
            8.0 * MIB + 10.0 * MIB * (1.0 - (-x / 800.0).exp()) + normal(r, 200.0 * 1024.0)
        });
        let j = judge(&pts, &[8.0 * MIB; 5], MIB);
        assert_eq!(j.verdict, Verdict::Bounded, "seed {seed}: {j:?}");
        let plateau = j.plateau.unwrap();
        assert!(
            (plateau - 18.0 * MIB).abs() < 0.05 * 18.0 * MIB,
            "{plateau}"
        );
        let from = j.plateau_from.unwrap();
        assert!((1000.0..3000.0).contains(&from), "{from}");
    }
}

#[test]
fn growth_that_stops_dead_is_bounded() {
    let pts = series(11, 400, 4000.0, |x, r| {
        2.0 * MIB + x.min(1500.0) * 4096.0 + normal(r, 64.0 * 1024.0)
    });
    let j = judge(&pts, &[], MIB);
    assert_eq!(j.verdict, Verdict::Bounded, "{j:?}");
}

#[test]
fn noise_and_allocator_steps_are_stable() {
    for seed in 0..10 {
        // Allocator-like steps: now and then the level moves to one of a
        // few states (caches filled, purged) and stays a while. Bounded, not
        // a random walk: a random walk does drift, and would rightly grow.
        let mut level = 50.0 * MIB;
        let pts = series(seed, 400, 4000.0, |_, r| {
            if r.random_range(0..40) == 0 {
                level = 50.0 * MIB + 2.0 * MIB * r.random_range(0..3) as f64;
            }
            level + normal(r, MIB)
        });
        let j = judge(&pts, &[], MIB);
        assert_ne!(j.verdict, Verdict::Leak, "seed {seed}: {j:?}");
        let flat = series(seed, 400, 4000.0, |_, r| 50.0 * MIB + normal(r, MIB));
        assert_eq!(
            judge(&flat, &[], MIB).verdict,
            Verdict::Stable,
            "seed {seed}"
        );
    }
}

#[test]
fn a_level_that_rose_with_the_load_and_stayed_is_bounded() {
    let pts = series(5, 200, 2000.0, |_, r| 69.0 * MIB + normal(r, MIB));
    let j = judge(&pts, &[5.0 * MIB, 5.1 * MIB, 4.9 * MIB], MIB);
    assert_eq!(j.verdict, Verdict::Bounded, "{j:?}");
    assert!(j.reason.contains("baseline"), "{}", j.reason);
    // Without a baseline there is nothing to have risen from.
    assert_eq!(judge(&pts, &[], MIB).verdict, Verdict::Stable);
}

#[test]
fn growth_under_the_floor_is_stable() {
    let pts = series(2, 300, 3000.0, |x, r| 10.0 + x * 0.001 + normal(r, 0.01));
    let j = judge(&pts, &[], 4.0);
    assert_eq!(j.verdict, Verdict::Stable, "{j:?}");
    assert!(j.reason.contains("under the noise floor"), "{}", j.reason);
}

#[test]
fn too_few_samples_or_no_progress_is_inconclusive() {
    let pts = series(1, 5, 100.0, |x, _| x);
    assert_eq!(judge(&pts, &[], 1.0).verdict, Verdict::Inconclusive);
    let stuck: Vec<(f64, f64)> = (0..50).map(|i| (7.0, i as f64)).collect();
    assert_eq!(judge(&stuck, &[], 1.0).verdict, Verdict::Inconclusive);
}

#[test]
fn the_slope_interval_covers_the_true_slope_about_95_percent_of_the_time() {
    let mut covered = 0;
    for seed in 0..200 {
        let pts = series(1000 + seed, 120, 1200.0, |x, r| 3.0 * x + normal(r, 300.0));
        let fit = theil_sen(&pts).unwrap();
        covered += usize::from(fit.lo <= 3.0 && 3.0 <= fit.hi);
    }
    assert!((180..=200).contains(&covered), "{covered} of 200");
}
