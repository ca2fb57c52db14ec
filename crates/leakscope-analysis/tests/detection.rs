//! What a STABLE or BOUNDED verdict rules out: the same run's noise (what
//! is left once its fitted slope is taken out) over a leak just above the
//! detection limit reads LEAK; over one just below it, not. Series are
//! generated (noise from a fixed-seed generator), and the limit is read
//! from the verdict, not set by the test.

use leakscope_analysis::trend::{judge, Verdict};

/// Deterministic noise in [-1, 1).
fn noise(seed: u64) -> impl FnMut() -> f64 {
    let mut s = seed;
    move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }
}

/// `n` samples over `work` units, level `f(x)` plus noise of `amp`.
fn series(n: usize, work: f64, amp: f64, seed: u64, f: impl Fn(f64) -> f64) -> Vec<(f64, f64)> {
    let mut r = noise(seed);
    (0..n)
        .map(|i| {
            let x = work * i as f64 / (n - 1) as f64;
            (x, f(x) + amp * r())
        })
        .collect()
}

/// The run's noise over a leak of `rate`: its own slope taken out first.
fn with_leak(s: &[(f64, f64)], fitted: f64, rate: f64) -> Vec<(f64, f64)> {
    s.iter()
        .map(|&(x, y)| (x, y - fitted * x + rate * x))
        .collect()
}

fn check_limit(s: &[(f64, f64)], baseline: &[f64], floor: f64) -> f64 {
    let j = judge(s, baseline, floor);
    assert!(
        matches!(j.verdict, Verdict::Stable | Verdict::Bounded),
        "{:?}: {}",
        j.verdict,
        j.reason
    );
    let limit = j.detection_limit.expect("a limit for STABLE and BOUNDED");
    assert!(limit > 0.0);
    let fitted = j.fit.unwrap().slope;
    let above = judge(&with_leak(s, fitted, limit * 1.02), baseline, floor);
    assert_eq!(above.verdict, Verdict::Leak, "{limit}: {}", above.reason);
    let below = judge(&with_leak(s, fitted, limit * 0.98), baseline, floor);
    assert_ne!(below.verdict, Verdict::Leak, "{limit}: {}", below.reason);
    limit
}

#[test]
fn a_quiet_stable_series_is_limited_by_the_floor_over_the_work() {
    // The case: 900 requests, a 4 MiB floor, RSS noise of 64 KiB.
    let s = series(120, 900.0, 65536.0, 1, |_| 50e6);
    let limit = check_limit(&s, &[50e6; 8], 4.0 * 1048576.0);
    let by_floor = 4.0 * 1048576.0 / 900.0;
    assert!(
        (limit - by_floor).abs() < 0.1 * by_floor,
        "{limit} vs {by_floor}"
    );
}

#[test]
fn a_noisy_stable_series_is_limited_by_its_interval() {
    // Noise far above the floor: the interval, not the floor, decides.
    let s = series(60, 1000.0, 200.0, 7, |_| 1000.0);
    let limit = check_limit(&s, &[], 1.0);
    assert!(limit > 1.0 / 1000.0 * 10.0, "{limit}");
}

#[test]
fn a_bounded_series_has_a_limit_too() {
    let s = series(150, 20_000.0, 2.0, 3, |x| {
        100.0 + 400.0 * (1.0 - (-x / 2000.0).exp())
    });
    check_limit(&s, &[100.0; 8], 16.0);
}

#[test]
fn more_work_lowers_the_limit() {
    let short = judge(&series(100, 1000.0, 5.0, 9, |_| 10.0), &[], 8.0);
    let long = judge(&series(100, 10_000.0, 5.0, 9, |_| 10.0), &[], 8.0);
    let (a, b) = (
        short.detection_limit.unwrap(),
        long.detection_limit.unwrap(),
    );
    assert!(b < a / 5.0, "{a} then {b}");
}

#[test]
fn a_leak_under_the_floor_is_not_subtracted_from_the_limit() {
    // The case: 2 KiB per request over 900 requests is under RSS's
    // 4 MiB floor; the run rules out leaks above 4 MiB / 900, whatever
    // part of that the service already leaks.
    let s = series(90, 900.0, 8192.0, 11, |x| 50e6 + 2048.0 * x);
    let limit = check_limit(&s, &[50e6; 8], 4.0 * 1048576.0);
    let by_floor = 4.0 * 1048576.0 / 900.0;
    assert!((limit - by_floor).abs() < 0.1 * by_floor, "{limit}");
}

#[test]
fn a_leak_has_no_limit_to_state() {
    let s = series(100, 1000.0, 1.0, 5, |x| 10.0 + x);
    let j = judge(&s, &[], 8.0);
    assert_eq!(j.verdict, Verdict::Leak);
    assert_eq!(j.detection_limit, None);
}
