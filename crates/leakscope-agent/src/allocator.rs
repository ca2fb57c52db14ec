//! The process's global allocator, chosen by cargo feature.
//!
//! The allocator is the agent's business rather than the host's because the
//! heap endpoints only mean something when they describe the allocator in
//! use: jemalloc's stats and sampled profiles, or dhat's exact accounting.
//! Two global allocators cannot coexist, so the features exclude each other.

#[cfg(all(feature = "jemalloc", feature = "dhat-heap"))]
compile_error!(
    "leakscope-agent: the `jemalloc` and `dhat-heap` features each install the global \
     allocator; enable one. A dhat build turns the defaults off, e.g. \
     `cargo build -p download-server --no-default-features --features dhat-heap`."
);

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: counting::Counting<tikv_jemallocator::Jemalloc> =
    counting::Counting(tikv_jemallocator::Jemalloc);

// Only the compile_error! when both are on, not a cascade of clashes.
#[cfg(all(feature = "dhat-heap", not(feature = "jemalloc")))]
#[global_allocator]
static GLOBAL: dhat::Alloc = dhat::Alloc;

macro_rules! baked_conf {
    () => {
        "prof:true,prof_active:true,lg_prof_sample:19"
    };
}

/// The profiling configuration compiled into the binary.
///
/// Heap profiling has to be switched on before the first allocation, which is
/// before `main`, so an environment variable the operator must remember is the
/// usual failure. jemalloc reads this symbol at start-up; `MALLOC_CONF` is
/// read after it and still overrides any key. One sample per 512 KiB
/// (`lg_prof_sample:19`) costs little and still catches every site that leaks
/// a few hundred KiB; the host can change the rate at run time
/// ([`crate::AgentBuilder::heap_sample_interval_lg`]).
pub const BAKED_MALLOC_CONF: &str = baked_conf!();

/// C sees `const char *malloc_conf`: a thin pointer to a NUL-terminated string.
#[cfg(feature = "jemalloc")]
#[repr(transparent)]
pub struct ConfPtr(*const u8);

// SAFETY: the pointer targets a string literal, immutable for the program's life.
#[cfg(feature = "jemalloc")]
unsafe impl Sync for ConfPtr {}

#[cfg(feature = "jemalloc")]
#[export_name = "malloc_conf"]
#[used]
pub static MALLOC_CONF: ConfPtr = ConfPtr(concat!(baked_conf!(), "\0").as_bytes().as_ptr());

/// Which allocator this build installed, for the index endpoint and errors.
pub const fn name() -> &'static str {
    if cfg!(feature = "jemalloc") {
        "jemalloc"
    } else if cfg!(feature = "dhat-heap") {
        "dhat"
    } else {
        "system"
    }
}

/// Reads the symbol through a volatile load so the linker keeps it: the agent
/// lives in an rlib, and an unreferenced static there can be dropped, which
/// would silently turn heap profiling off.
#[cfg(feature = "jemalloc")]
pub(crate) fn baked_conf_linked() -> bool {
    // SAFETY: MALLOC_CONF is a valid static; a volatile read of a pointer-sized
    // value from it is always sound.
    let p = unsafe { std::ptr::read_volatile(&MALLOC_CONF.0) };
    !p.is_null()
}

/// Exact allocation counters around jemalloc.
///
/// jemalloc's own request counters (`stats.arenas.*.nrequests`) only learn
/// about allocations served from a thread cache when that cache is flushed:
/// measured here, 200,000 allocate-free pairs on one thread moved them by 95.
/// An allocation *rate* built on that would be fiction, so the agent counts
/// itself. Counters are sharded by thread and cache-padded, so a count is one
/// uncontended atomic add; the cost is in the benchmark figures.
#[cfg(feature = "jemalloc")]
pub mod counting {
    use std::alloc::{GlobalAlloc, Layout};
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

    const SHARDS: usize = 32;

    #[repr(align(128))]
    struct Shard {
        allocs: AtomicU64,
        frees: AtomicU64,
        alloc_bytes: AtomicU64,
        free_bytes: AtomicU64,
    }

    #[allow(clippy::declare_interior_mutable_const)]
    const ZERO: Shard = Shard {
        allocs: AtomicU64::new(0),
        frees: AtomicU64::new(0),
        alloc_bytes: AtomicU64::new(0),
        free_bytes: AtomicU64::new(0),
    };
    static COUNTERS: [Shard; SHARDS] = [ZERO; SHARDS];
    static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

    thread_local! {
        // const-initialised and without Drop: safe to touch from inside the
        // allocator (no lazy registration that would itself allocate).
        static MY_SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
    }

    #[inline]
    fn shard() -> &'static Shard {
        let i = MY_SHARD
            .try_with(|c| {
                let mut i = c.get();
                if i == usize::MAX {
                    i = NEXT_SHARD.fetch_add(1, Relaxed) % SHARDS;
                    c.set(i);
                }
                i
            })
            // During thread teardown TLS is gone; shard 0 is still correct.
            .unwrap_or(0);
        &COUNTERS[i]
    }

    #[inline]
    fn on_alloc(size: usize) {
        let s = shard();
        s.allocs.fetch_add(1, Relaxed);
        s.alloc_bytes.fetch_add(size as u64, Relaxed);
    }

    #[inline]
    fn on_free(size: usize) {
        let s = shard();
        s.frees.fetch_add(1, Relaxed);
        s.free_bytes.fetch_add(size as u64, Relaxed);
    }

    /// Cumulative (allocations, deallocations, bytes allocated, bytes freed),
    /// in requested sizes.
    pub fn totals() -> (u64, u64, u64, u64) {
        COUNTERS.iter().fold((0, 0, 0, 0), |t, s| {
            (
                t.0 + s.allocs.load(Relaxed),
                t.1 + s.frees.load(Relaxed),
                t.2 + s.alloc_bytes.load(Relaxed),
                t.3 + s.free_bytes.load(Relaxed),
            )
        })
    }

    pub struct Counting<A>(pub A);

    // SAFETY: every call forwards to the inner allocator unchanged; counting
    // touches only atomics and a const thread-local.
    unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
        #[inline]
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let p = unsafe { self.0.alloc(layout) };
            if !p.is_null() {
                on_alloc(layout.size());
            }
            p
        }

        #[inline]
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            let p = unsafe { self.0.alloc_zeroed(layout) };
            if !p.is_null() {
                on_alloc(layout.size());
            }
            p
        }

        #[inline]
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            on_free(layout.size());
            unsafe { self.0.dealloc(ptr, layout) }
        }

        #[inline]
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let p = unsafe { self.0.realloc(ptr, layout, new_size) };
            if !p.is_null() {
                on_free(layout.size());
                on_alloc(new_size);
            }
            p
        }
    }
}
