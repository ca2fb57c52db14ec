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

/// Byte counters for the whole process, read from jemalloc's own.
///
/// jemalloc keeps, per thread, the bytes that thread has allocated and
/// freed (`thread.allocatedp` / `thread.deallocatedp`, size-class bytes),
/// updated on its fast path whatever we do. The process's figures are their
/// sum, so counting costs the service nothing per call beyond one check
/// that the calling thread's counters are known. Its arena-wide counters
/// would not do: `stats.arenas.*.nrequests` learns of allocations served
/// from a thread cache only when the cache is flushed (200,000
/// allocate-free pairs on one thread moved it by 95).
///
/// Cost decides the shape (`benches/alloc_counting.rs`, against bare
/// jemalloc per 64-byte pair): four atomic adds per pair tripled jemalloc's
/// fast path, and per-thread cells published in batches still cost 2.4×.
/// What is left on the fast path is one load of a const thread-local and a
/// branch never taken after a thread's first call.
///
/// A thread's first call (an allocation or a free) registers its two
/// counters' addresses in [`REGISTRY`]; a pthread key's destructor folds
/// their last values into the registry's totals and removes them when the
/// thread exits. The counters live in the thread's static TLS block, which
/// stays until the thread is gone, after every destructor, so every address
/// in the registry is valid while it is there. Calls a thread makes after
/// its exit hook ran (from later destructors) are folded one by one, under
/// the lock. Nothing is missed, and nothing is counted twice.
#[cfg(feature = "jemalloc")]
pub mod counting {
    use std::alloc::{GlobalAlloc, Layout};
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::sync::Mutex;

    /// Where a thread stands with the registry.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum State {
        /// No call yet: the next one registers the thread.
        New,
        /// In the registry: the reader sums its counters.
        Registered,
        /// Out of it (its exit hook ran, or could not be set): each call
        /// folds what it moved into the registry's totals.
        Folding,
    }

    /// One thread's cumulative counters, kept by jemalloc.
    #[derive(Clone, Copy)]
    struct Counters {
        allocated: *const u64,
        deallocated: *const u64,
    }

    impl Counters {
        /// The calling thread's, or `None` when jemalloc was built without
        /// statistics.
        fn of_this_thread() -> Option<Counters> {
            use tikv_jemalloc_ctl::raw;
            // SAFETY: both names are documented `uint64_t *` controls;
            // reading them allocates nothing.
            let allocated = unsafe { raw::read::<*mut u64>(b"thread.allocatedp\0") }.ok()?;
            let deallocated = unsafe { raw::read::<*mut u64>(b"thread.deallocatedp\0") }.ok()?;
            Some(Counters {
                allocated,
                deallocated,
            })
        }

        /// Reads both. jemalloc writes them with plain stores from their
        /// own thread; an aligned 8-byte load sees a whole value.
        fn read(self) -> (u64, u64) {
            // SAFETY: the addresses are valid while the thread has not been
            // retired (see the module's doc), and `AtomicU64` has the
            // layout of `u64`.
            unsafe {
                (
                    AtomicU64::from_ptr(self.allocated.cast_mut()).load(Relaxed),
                    AtomicU64::from_ptr(self.deallocated.cast_mut()).load(Relaxed),
                )
            }
        }
    }

    // SAFETY: the pointers are only dereferenced under the rule above.
    unsafe impl Send for Counters {}

    struct Registry {
        live: Vec<Counters>,
        /// Bytes allocated and freed by threads no longer in `live`.
        gone: (u64, u64),
    }

    static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
        live: Vec::new(),
        gone: (0, 0),
    });

    fn registry() -> std::sync::MutexGuard<'static, Registry> {
        // A panic cannot leave the registry half-changed: every change is
        // one push, one swap_remove or one add.
        REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
    }

    thread_local! {
        // const-initialised and without a destructor: reaching it is one
        // thread-pointer-relative load, with no lazy state to check.
        static STATE: Cell<State> = const { Cell::new(State::New) };
        /// What this thread's counters read when they were last folded
        /// into the registry's totals (`Folding` only).
        static FOLDED: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    }

    /// The exit hook: a pthread key whose destructor takes the thread out
    /// of the registry, set when the thread registers.
    ///
    /// A key rather than a Rust thread-local with a destructor: glibc runs
    /// key destructors after the thread-locals', and runs them again for a
    /// key set while they run. A thread-local's destructor registered once
    /// the thread-locals are gone (a thread whose first call comes from a
    /// key destructor, as C code's may) would never run, and its thread's
    /// addresses would stay in the registry after it. `None` if no key can
    /// be had: threads then fold, call by call.
    fn exit_key() -> Option<libc::pthread_key_t> {
        static KEY: std::sync::OnceLock<Option<libc::pthread_key_t>> = std::sync::OnceLock::new();
        *KEY.get_or_init(|| {
            let mut key = 0;
            // SAFETY: a fresh key; `on_exit` has the destructor's signature.
            let made = unsafe { libc::pthread_key_create(&mut key, Some(on_exit)) };
            (made == 0).then_some(key)
        })
    }

    /// The key's destructor: glibc calls it at thread exit, the value
    /// (any non-null) already cleared.
    unsafe extern "C" fn on_exit(_: *mut libc::c_void) {
        let Some(mine) = Counters::of_this_thread() else {
            return;
        };
        let now = mine.read();
        let mut r = registry();
        if let Some(i) = r.live.iter().position(|c| c.allocated == mine.allocated) {
            r.live.swap_remove(i);
            r.gone.0 += now.0;
            r.gone.1 += now.1;
        }
        drop(r);
        FOLDED.with(|f| f.set(now));
        STATE.with(|s| s.set(State::Folding));
    }

    /// Arms the exit hook for this thread; false if it cannot be.
    fn arm_exit_hook() -> bool {
        let Some(key) = exit_key() else {
            return false;
        };
        // SAFETY: a live key; the value is only a non-null marker.
        unsafe {
            libc::pthread_setspecific(key, std::ptr::NonNull::<u8>::dangling().as_ptr().cast()) == 0
        }
    }

    /// Checked before every call: one load and a branch. Before, so that
    /// the call itself stays a tail call on the fast path.
    #[inline(always)]
    fn registered() -> bool {
        STATE.with(Cell::get) == State::Registered
    }

    /// Every call of the wrapper: straight through on a registered thread
    /// (a tail call), through [`off_registry`] otherwise.
    #[inline(always)]
    fn counted<R>(call: impl FnOnce() -> R) -> R {
        if registered() {
            call()
        } else {
            off_registry(call)
        }
    }

    /// A call on a thread not (or no longer) in the registry: the call,
    /// then its bookkeeping.
    #[cold]
    #[inline(never)]
    fn off_registry<R>(call: impl FnOnce() -> R) -> R {
        let r = call();
        slow_path();
        r
    }

    #[cold]
    #[inline(never)]
    fn slow_path() {
        let Some(mine) = Counters::of_this_thread() else {
            return;
        };
        match STATE.with(Cell::get) {
            State::Registered => {}
            // The exit hook must be set before the thread is listed: an
            // address left in the registry after its thread is gone would
            // be read after free. Without one the thread folds instead.
            State::New if arm_exit_hook() => {
                STATE.with(|s| s.set(State::Registered));
                // The push may allocate: this thread is already marked.
                registry().live.push(mine);
            }
            State::New | State::Folding => fold(mine),
        }
    }

    /// Adds what this thread's counters moved since the last fold.
    fn fold(mine: Counters) {
        STATE.with(|s| s.set(State::Folding));
        let now = mine.read();
        let last = FOLDED.with(|f| f.replace(now));
        let mut r = registry();
        // A counter below its last reading started again (jemalloc's data
        // for the thread retired and made anew): all of it is new.
        let moved = |now: u64, last: u64| now.checked_sub(last).unwrap_or(now);
        r.gone.0 += moved(now.0, last.0);
        r.gone.1 += moved(now.1, last.1);
    }

    /// Cumulative (bytes allocated, bytes freed) by every thread, in
    /// jemalloc's size classes; `None` when jemalloc keeps no statistics.
    pub fn totals() -> Option<(u64, u64)> {
        Counters::of_this_thread()?;
        if !registered() {
            off_registry(|| ());
        }
        let r = registry();
        Some(r.live.iter().fold(r.gone, |(a, d), c| {
            let (ca, cd) = c.read();
            (a + ca, d + cd)
        }))
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

    // SAFETY: every call forwards to the inner allocator unchanged; the
    // bookkeeping after it touches thread-locals and, on a thread's first
    // call, a mutex-guarded list whose growth re-enters only the fast path.
    unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
        #[inline]
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let p = counted(|| unsafe { self.0.alloc(layout) });
            groups::alloc(p, layout.size());
            p
        }

        #[inline]
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            let p = counted(|| unsafe { self.0.alloc_zeroed(layout) });
            groups::alloc(p, layout.size());
            p
        }

        #[inline]
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            groups::dealloc(ptr);
            counted(|| unsafe { self.0.dealloc(ptr, layout) })
        }

        #[inline]
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let p = counted(|| unsafe { self.0.realloc(ptr, layout, new_size) });
            if !p.is_null() {
                groups::realloc(ptr, p, new_size);
            }
            p
        }
    }
}

#[cfg(all(test, feature = "jemalloc"))]
mod tests {
    use super::counting::totals;

    const LATE: usize = 64 << 20;

    /// A pthread key's destructor: glibc runs these after every Rust
    /// thread-local's, so this free comes after the thread left the
    /// registry.
    unsafe extern "C" fn free_late(p: *mut libc::c_void) {
        drop(unsafe { Box::from_raw(p.cast::<Vec<u8>>()) });
    }

    /// What a thread allocated and freed is still in the totals after it
    /// exits, frees made after its exit hook included.
    #[test]
    fn a_threads_bytes_outlive_it() {
        let mut key = 0;
        // SAFETY: a fresh key with a destructor of the right signature.
        assert_eq!(
            unsafe { libc::pthread_key_create(&mut key, Some(free_late)) },
            0
        );
        const N: u64 = 1_000;
        let (allocated, freed) = totals().expect("jemalloc keeps statistics");
        std::thread::spawn(move || {
            for i in 0..N {
                drop(std::hint::black_box(vec![i as u8; 1024]));
            }
            // Zeroed: 64 MiB of address space, not of memory.
            let late = Box::into_raw(Box::new(vec![0u8; LATE]));
            // SAFETY: the key is live; free_late takes the box back.
            assert_eq!(unsafe { libc::pthread_setspecific(key, late.cast()) }, 0);
        })
        .join()
        .unwrap();
        let (allocated_after, freed_after) = totals().unwrap();
        // Other threads only add, far less than LATE in this test binary.
        let need = N * 1024 + LATE as u64;
        let (a, f) = (allocated_after - allocated, freed_after - freed);
        assert!(a >= need, "{a} allocated, expected at least {need}");
        assert!(
            f >= need,
            "{f} freed, expected at least {need} (the late free lost?)"
        );
    }
}
