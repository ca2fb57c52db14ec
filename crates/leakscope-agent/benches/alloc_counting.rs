//! The price of exact allocation counts: jemalloc with and without the
//! agent's counting wrapper, and the system allocator for scale, measured
//! side by side in one run (called directly, not as the global allocator).
//!
//! `cargo xtask bench` (or `cargo bench -p leakscope-agent`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use leakscope_agent::Counting;
use tikv_jemallocator::Jemalloc;

/// How a program reaches its global allocator: `__rust_alloc` and
/// `__rust_dealloc` are shims the compiler emits, called, not inlined, at
/// every allocation site. Without them the bare allocator would be inlined
/// into the loop and the wrapped one not, and the figure would compare
/// inlining decisions, not what the wrapper adds.
#[inline(never)]
unsafe fn rust_alloc<A: GlobalAlloc>(a: &A, layout: Layout) -> *mut u8 {
    unsafe { a.alloc(layout) }
}

#[inline(never)]
unsafe fn rust_dealloc<A: GlobalAlloc>(a: &A, p: *mut u8, layout: Layout) {
    unsafe { a.dealloc(p, layout) }
}

fn pair<A: GlobalAlloc>(a: &A, layout: Layout) {
    // SAFETY: a non-zero layout; the block is freed with the same layout.
    unsafe {
        let p = rust_alloc(a, layout);
        black_box(p);
        rust_dealloc(a, p, layout);
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("alloc+free");
    for size in [64usize, 4096, 65536] {
        let layout = Layout::from_size_align(size, 8).unwrap();
        g.bench_with_input(BenchmarkId::new("jemalloc", size), &layout, |b, l| {
            b.iter(|| pair(&Jemalloc, *l))
        });
        g.bench_with_input(
            BenchmarkId::new("jemalloc+counting", size),
            &layout,
            |b, l| b.iter(|| pair(&Counting(Jemalloc), *l)),
        );
        g.bench_with_input(BenchmarkId::new("system", size), &layout, |b, l| {
            b.iter(|| pair(&System, *l))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
