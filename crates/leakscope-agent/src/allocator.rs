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

/// Allocation counters around jemalloc.
///
/// jemalloc's own request counters (`stats.arenas.*.nrequests`) only learn
/// about allocations served from a thread cache when that cache is flushed:
/// measured here, 200,000 allocate-free pairs on one thread moved them by 95.
/// An allocation *rate* built on that would be fiction, so the agent counts
/// itself.
///
/// Cost decides the shape (`benches/alloc_counting.rs`, against bare
/// jemalloc per 64-byte pair): four atomic adds per pair tripled jemalloc's
/// fast path. So each thread counts in plain thread-local cells and
/// publishes to shared atomics every [`FLUSH_EVENTS`] allocations or frees
/// or [`FLUSH_BYTES`] bytes. The cells have no destructor, so reaching them
/// is one thread-pointer-relative load, with no "registered? destroyed?"
/// state to check on every call; the flush at thread exit, which keeps
/// every count, is a second thread-local's destructor, registered on the
/// thread's first flush, off the fast path. A reader is behind by at most
/// that much per running thread.
#[cfg(feature = "jemalloc")]
pub mod counting {
    use std::alloc::{GlobalAlloc, Layout};
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

    /// Allocations (or frees) a thread may hold back before publishing.
    pub const FLUSH_EVENTS: u64 = 64;
    /// Bytes (allocated or freed) a thread may hold back before publishing.
    pub const FLUSH_BYTES: u64 = 256 * 1024;

    static ALLOCS: AtomicU64 = AtomicU64::new(0);
    static FREES: AtomicU64 = AtomicU64::new(0);
    static ALLOC_BYTES: AtomicU64 = AtomicU64::new(0);
    static FREE_BYTES: AtomicU64 = AtomicU64::new(0);

    /// One thread's held-back counts. No `Drop`: see the module's doc.
    struct Local {
        allocs: Cell<u64>,
        frees: Cell<u64>,
        alloc_bytes: Cell<u64>,
        free_bytes: Cell<u64>,
        /// Events held back before a flush: [`FLUSH_EVENTS`], and 1 once
        /// the exit flush has run, so the frees of later thread-local
        /// destructors are published as they happen, not lost.
        flush_at: Cell<u64>,
    }

    impl Local {
        /// One event of `size` bytes into `events` and `bytes` (this
        /// thread's allocation or free cells); publishes when either
        /// reaches its limit.
        #[inline(always)]
        fn count(&self, events: &Cell<u64>, bytes: &Cell<u64>, size: usize) {
            let n = events.get() + 1;
            let b = bytes.get() + size as u64;
            events.set(n);
            bytes.set(b);
            if n >= self.flush_at.get() || b >= FLUSH_BYTES {
                self.flush();
            }
        }

        #[cold]
        #[inline(never)]
        fn flush(&self) {
            ALLOCS.fetch_add(self.allocs.replace(0), Relaxed);
            FREES.fetch_add(self.frees.replace(0), Relaxed);
            ALLOC_BYTES.fetch_add(self.alloc_bytes.replace(0), Relaxed);
            FREE_BYTES.fetch_add(self.free_bytes.replace(0), Relaxed);
            // The exit flush, registered once per thread (later touches
            // only read its state). Fails only while the thread's
            // thread-locals are being destroyed, when the counts are
            // published here anyway.
            let _ = EXIT_FLUSH.try_with(|_| ());
        }
    }

    /// Publishes the thread's counts when the thread exits.
    struct ExitFlush;

    impl Drop for ExitFlush {
        fn drop(&mut self) {
            // LOCAL has no destructor, so it is still there.
            LOCAL.with(|l| {
                l.flush_at.set(1);
                l.flush();
            });
        }
    }

    thread_local! {
        // const-initialised and without a destructor: no lazy
        // initialisation that would allocate, and no state to check.
        static LOCAL: Local = const {
            Local {
                allocs: Cell::new(0),
                frees: Cell::new(0),
                alloc_bytes: Cell::new(0),
                free_bytes: Cell::new(0),
                flush_at: Cell::new(FLUSH_EVENTS),
            }
        };
        // Its destructor is registered on first use; on glibc that goes
        // through __cxa_thread_atexit_impl, whose bookkeeping uses libc's
        // malloc, not this allocator.
        static EXIT_FLUSH: ExitFlush = const { ExitFlush };
    }

    #[inline]
    fn on_alloc(size: usize) {
        LOCAL.with(|l| l.count(&l.allocs, &l.alloc_bytes, size));
    }

    #[inline]
    fn on_free(size: usize) {
        LOCAL.with(|l| l.count(&l.frees, &l.free_bytes, size));
    }

    /// Publishes the calling thread's held-back counts now.
    pub fn flush_current_thread() {
        LOCAL.with(Local::flush);
    }

    /// Cumulative (allocations, deallocations, bytes allocated, bytes freed),
    /// in requested sizes, as published so far.
    pub fn totals() -> (u64, u64, u64, u64) {
        flush_current_thread();
        (
            ALLOCS.load(Relaxed),
            FREES.load(Relaxed),
            ALLOC_BYTES.load(Relaxed),
            FREE_BYTES.load(Relaxed),
        )
    }

    /// Allocation groups for leakscope-test's per-test heap attribution,
    /// compiled in only with the `alloc-groups` feature (a test build):
    /// a production build's allocator has no group code at all.
    mod groups {
        #[cfg(feature = "alloc-groups")]
        pub use leakscope_allocgroup::{
            on_alloc as alloc_hook, on_dealloc as dealloc, on_realloc as realloc,
        };

        #[cfg(feature = "alloc-groups")]
        #[inline]
        pub fn alloc(p: *mut u8, size: usize) {
            leakscope_allocgroup::mark_hooked();
            alloc_hook(p, size);
        }

        #[cfg(not(feature = "alloc-groups"))]
        #[inline]
        pub fn alloc(_: *mut u8, _: usize) {}
        #[cfg(not(feature = "alloc-groups"))]
        #[inline]
        pub fn dealloc(_: *mut u8) {}
        #[cfg(not(feature = "alloc-groups"))]
        #[inline]
        pub fn realloc(_: *mut u8, _: *mut u8, _: usize) {}
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
                groups::alloc(p, layout.size());
            }
            p
        }

        #[inline]
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            let p = unsafe { self.0.alloc_zeroed(layout) };
            if !p.is_null() {
                on_alloc(layout.size());
                groups::alloc(p, layout.size());
            }
            p
        }

        #[inline]
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            on_free(layout.size());
            groups::dealloc(ptr);
            unsafe { self.0.dealloc(ptr, layout) }
        }

        #[inline]
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let p = unsafe { self.0.realloc(ptr, layout, new_size) };
            if !p.is_null() {
                on_free(layout.size());
                on_alloc(new_size);
                groups::realloc(ptr, p, new_size);
            }
            p
        }
    }
}

#[cfg(all(test, feature = "jemalloc"))]
mod tests {
    use super::counting::{totals, FLUSH_EVENTS};

    /// A thread that ends with counts held back (fewer than a flush's
    /// worth since its last one) still has them published: the exit flush.
    #[test]
    fn a_threads_last_counts_are_published_when_it_exits() {
        let n = 10 * FLUSH_EVENTS + FLUSH_EVENTS / 2;
        let (allocs, frees, _, _) = totals();
        std::thread::spawn(move || {
            for i in 0..n {
                drop(std::hint::black_box(Box::new(i)));
            }
        })
        .join()
        .unwrap();
        let (allocs_after, frees_after, _, _) = totals();
        // Other threads only add; the spawned thread's n pairs must all be in.
        assert!(
            allocs_after - allocs >= n,
            "{} allocations",
            allocs_after - allocs
        );
        assert!(frees_after - frees >= n, "{} frees", frees_after - frees);
    }
}
