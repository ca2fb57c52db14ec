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
/// Cost decides the shape: four atomic adds per allocate-free pair tripled
/// jemalloc's fast path (17 → 59 ns, `benches/alloc_counting.rs`). So each
/// thread counts in plain thread-local cells and publishes to shared atomics
/// every [`FLUSH_EVENTS`] events or [`FLUSH_BYTES`] bytes, and when the
/// thread exits (the thread-local's destructor), so nothing is ever lost:
/// a reader is behind by at most that much per running thread.
#[cfg(feature = "jemalloc")]
pub mod counting {
    use std::alloc::{GlobalAlloc, Layout};
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

    /// Events a thread may hold back before publishing.
    pub const FLUSH_EVENTS: u32 = 64;
    /// Bytes (allocated or freed) a thread may hold back before publishing.
    pub const FLUSH_BYTES: u64 = 256 * 1024;

    static ALLOCS: AtomicU64 = AtomicU64::new(0);
    static FREES: AtomicU64 = AtomicU64::new(0);
    static ALLOC_BYTES: AtomicU64 = AtomicU64::new(0);
    static FREE_BYTES: AtomicU64 = AtomicU64::new(0);

    struct Local {
        allocs: Cell<u64>,
        frees: Cell<u64>,
        alloc_bytes: Cell<u64>,
        free_bytes: Cell<u64>,
        events: Cell<u32>,
    }

    impl Local {
        fn flush(&self) {
            ALLOCS.fetch_add(self.allocs.replace(0), Relaxed);
            FREES.fetch_add(self.frees.replace(0), Relaxed);
            ALLOC_BYTES.fetch_add(self.alloc_bytes.replace(0), Relaxed);
            FREE_BYTES.fetch_add(self.free_bytes.replace(0), Relaxed);
            self.events.set(0);
        }

        #[inline]
        fn maybe_flush(&self) {
            let events = self.events.get() + 1;
            self.events.set(events);
            if events >= FLUSH_EVENTS
                || self.alloc_bytes.get() >= FLUSH_BYTES
                || self.free_bytes.get() >= FLUSH_BYTES
            {
                self.flush();
            }
        }
    }

    impl Drop for Local {
        fn drop(&mut self) {
            self.flush();
        }
    }

    thread_local! {
        // const-initialised: no lazy initialisation that would allocate. The
        // destructor is registered on first use; on glibc that goes through
        // __cxa_thread_atexit_impl, which does not re-enter this allocator.
        static LOCAL: Local = const {
            Local {
                allocs: Cell::new(0),
                frees: Cell::new(0),
                alloc_bytes: Cell::new(0),
                free_bytes: Cell::new(0),
                events: Cell::new(0),
            }
        };
    }

    #[inline]
    fn on_alloc(size: usize) {
        let counted = LOCAL.try_with(|l| {
            l.allocs.set(l.allocs.get() + 1);
            l.alloc_bytes.set(l.alloc_bytes.get() + size as u64);
            l.maybe_flush();
        });
        if counted.is_err() {
            // The thread's locals are gone (it is exiting): count directly.
            ALLOCS.fetch_add(1, Relaxed);
            ALLOC_BYTES.fetch_add(size as u64, Relaxed);
        }
    }

    #[inline]
    fn on_free(size: usize) {
        let counted = LOCAL.try_with(|l| {
            l.frees.set(l.frees.get() + 1);
            l.free_bytes.set(l.free_bytes.get() + size as u64);
            l.maybe_flush();
        });
        if counted.is_err() {
            FREES.fetch_add(1, Relaxed);
            FREE_BYTES.fetch_add(size as u64, Relaxed);
        }
    }

    /// Publishes the calling thread's held-back counts now.
    pub fn flush_current_thread() {
        let _ = LOCAL.try_with(Local::flush);
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
