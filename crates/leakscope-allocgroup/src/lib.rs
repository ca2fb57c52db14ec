//! Allocation groups: which heap a group of threads allocated and has not
//! freed, and the stack that allocated each piece.
//!
//! A test harness that runs tests in parallel cannot judge one test's heap
//! from process-wide figures: a sibling allocating 100 MiB at the same time
//! would fail a clean test. So a test opens a [`Group`] and enters it on every
//! thread that does its work (its own thread and its runtime's workers).
//! Each allocation made while a thread is in a group is recorded with its
//! group, size and raw stack; a free anywhere in the process removes the
//! record. What a group still holds is then exactly what its threads
//! allocated and nobody freed.
//!
//! The global allocator must call [`on_alloc`], [`on_dealloc`] and
//! [`on_realloc`]: wrap any allocator in [`Tracking`], or let one that
//! already wraps (leakscope-agent's counting allocator, feature
//! `alloc-groups`) forward to them.
//!
//! Invariants:
//! - Nothing is recorded while no thread is in a group, and a free costs one
//!   atomic load while nothing is recorded: a process that never opens a
//!   group pays that and a thread-local read per allocation.
//! - The bookkeeping's own allocations are never recorded: a thread-local
//!   flag marks the hook as running, and nested allocations pass through.
//! - Memory that existed before a group was entered and is only resized in
//!   it stays unrecorded: a group answers for what it allocated.
//! - Dropping a group forgets its records; a later free of one is a no-op.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{
    AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed,
};
use std::sync::{Mutex, MutexGuard};

/// Frames kept per allocation: enough to pass the unwinder, this hook (deep
/// in an unoptimised build), the allocator, `alloc`'s
/// wrappers and a collection's growth path and still reach the caller.
pub const FRAMES: usize = 64;

const SHARDS: usize = 64;

/// One live allocation made in a group.
#[derive(Clone, Copy)]
struct Record {
    group: u32,
    size: usize,
    frames: [usize; FRAMES],
    depth: u8,
}

/// Pointers are unique and already well spread once their low bits (the
/// alignment) are dropped; SipHash would cost more than the rest of the hook.
#[derive(Default)]
struct PtrHasher(u64);

impl Hasher for PtrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01B3);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = ((n as u64) >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type Shard = Mutex<Option<HashMap<usize, Record, BuildHasherDefault<PtrHasher>>>>;

static TABLE: [Shard; SHARDS] = [const { Mutex::new(None) }; SHARDS];

/// Running totals per group, found without a lookup: a group's id carries
/// its slot in its low bits. The last slot is never owned: a group made
/// while all others are taken has no totals ([`Group::totals`] is `None`).
const SLOT_BITS: u32 = 10;
const SLOTS: usize = 1 << SLOT_BITS;
const NO_SLOT: usize = SLOTS - 1;

struct Totals {
    /// The group that owns the slot, 0 when free.
    owner: AtomicU32,
    live: AtomicI64,
    peak: AtomicI64,
    allocated: AtomicU64,
}

static TOTALS: [Totals; SLOTS] = [const {
    Totals {
        owner: AtomicU32::new(0),
        live: AtomicI64::new(0),
        peak: AtomicI64::new(0),
        allocated: AtomicU64::new(0),
    }
}; SLOTS];

/// The totals of `group`, unless its slot has passed to another group.
fn totals_of(group: u32) -> Option<&'static Totals> {
    let slot = group as usize & (SLOTS - 1);
    let t = &TOTALS[slot];
    (slot != NO_SLOT && t.owner.load(Relaxed) == group).then_some(t)
}
static RECORDED: AtomicUsize = AtomicUsize::new(0);
static NEXT_GROUP: AtomicU32 = AtomicU32::new(1);
static HOOKED: AtomicBool = AtomicBool::new(false);

thread_local! {
    static CURRENT: Cell<u32> = const { Cell::new(0) };
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
}

fn shard(
    ptr: usize,
) -> MutexGuard<'static, Option<HashMap<usize, Record, BuildHasherDefault<PtrHasher>>>> {
    let mut h = PtrHasher::default();
    h.write_usize(ptr);
    let i = (h.finish() >> 58) as usize % SHARDS;
    TABLE[i].lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `f` with the re-entrancy flag set; `None` when the hook is already
/// running on this thread (or its thread-locals are gone).
fn guarded<R>(f: impl FnOnce() -> R) -> Option<R> {
    let entered = IN_HOOK
        .try_with(|h| {
            if h.get() {
                false
            } else {
                h.set(true);
                true
            }
        })
        .unwrap_or(false);
    if !entered {
        return None;
    }
    let r = f();
    let _ = IN_HOOK.try_with(|h| h.set(false));
    Some(r)
}

fn current_group() -> u32 {
    CURRENT.try_with(Cell::get).unwrap_or(0)
}

/// Whether a global allocator calls these hooks: without that a group sees
/// nothing, and a checker must say so rather than report an empty heap.
pub fn hooked() -> bool {
    HOOKED.load(Relaxed)
}

/// The allocator calls this once it exists; [`Tracking`] does.
#[inline]
pub fn mark_hooked() {
    // Read first: a store on every allocation would bounce the line
    // between cores.
    if !HOOKED.load(Relaxed) {
        HOOKED.store(true, Relaxed);
    }
}

/// Records a live allocation; `allocated` is how many of its bytes are
/// new (all of them, or a resize's growth).
fn record(
    ptr: usize,
    size: usize,
    allocated: usize,
    group: u32,
    frames: Option<([usize; FRAMES], u8)>,
) {
    if let Some(t) = totals_of(group) {
        let live = t.live.fetch_add(size as i64, Relaxed) + size as i64;
        t.peak.fetch_max(live, Relaxed);
        t.allocated.fetch_add(allocated as u64, Relaxed);
    }
    let (frames, depth) = frames.unwrap_or_else(capture);
    let rec = Record {
        group,
        size,
        frames,
        depth,
    };
    let mut s = shard(ptr);
    if s.get_or_insert_with(HashMap::default)
        .insert(ptr, rec)
        .is_none()
    {
        RECORDED.fetch_add(1, Relaxed);
    }
}

fn forget(ptr: usize) -> Option<Record> {
    let mut s = shard(ptr);
    let rec = s.as_mut()?.remove(&ptr)?;
    RECORDED.fetch_sub(1, Relaxed);
    if let Some(t) = totals_of(rec.group) {
        t.live.fetch_sub(rec.size as i64, Relaxed);
    }
    Some(rec)
}

fn capture() -> ([usize; FRAMES], u8) {
    let mut frames = [0usize; FRAMES];
    let mut depth = 0usize;
    // SAFETY: the hook is re-entrancy guarded; the unwinder's own
    // allocations pass through untracked. No other thread's trace runs
    // concurrently through this call's state.
    unsafe {
        backtrace::trace_unsynchronized(|f| {
            frames[depth] = f.ip() as usize;
            depth += 1;
            depth < FRAMES
        });
    }
    (frames, depth as u8)
}

/// An allocation of `size` bytes at `ptr` was made.
#[inline]
pub fn on_alloc(ptr: *mut u8, size: usize) {
    let group = current_group();
    if group != 0 && !ptr.is_null() {
        guarded(|| record(ptr as usize, size, size, group, None));
    }
}

/// The allocation at `ptr` was freed.
#[inline]
pub fn on_dealloc(ptr: *mut u8) {
    if RECORDED.load(Relaxed) != 0 {
        guarded(|| forget(ptr as usize));
    }
}

/// `old` was resized to `size` bytes at `new`. A recorded allocation stays
/// recorded under its group. When it grew, it is recorded under the stack
/// that grew it, as memray and heaptrack do: a `Vec` that keeps growing is
/// found where it is pushed to, not where it was first made.
#[inline]
pub fn on_realloc(old: *mut u8, new: *mut u8, size: usize) {
    if RECORDED.load(Relaxed) == 0 || new.is_null() {
        return;
    }
    guarded(|| {
        if let Some(rec) = forget(old as usize) {
            let stack = (size <= rec.size).then_some((rec.frames, rec.depth));
            record(
                new as usize,
                size,
                size.saturating_sub(rec.size),
                rec.group,
                stack,
            );
        }
    });
}

/// A set of threads whose allocations are answered for together.
#[derive(Debug)]
pub struct Group(u32);

impl Group {
    /// A new, empty group, with a slot for its totals when one is free.
    pub fn new() -> Self {
        let generation = NEXT_GROUP.fetch_add(1, Relaxed).max(1) << SLOT_BITS;
        for (slot, t) in TOTALS.iter().enumerate().take(NO_SLOT) {
            let id = generation | slot as u32;
            if t.owner.compare_exchange(0, id, Relaxed, Relaxed).is_ok() {
                return Group(id);
            }
        }
        Group(generation | NO_SLOT as u32)
    }

    /// The group's running totals: live bytes, the most it held at once
    /// since the last [`Group::reset_peak`], and all bytes it ever
    /// allocated (dhat's `curr_bytes`, `max_bytes` and `total_bytes`).
    /// `None` when more groups than slots existed at once.
    pub fn totals(&self) -> Option<GroupTotals> {
        let t = totals_of(self.0)?;
        Some(GroupTotals {
            live: t.live.load(Relaxed).max(0) as u64,
            peak: t.peak.load(Relaxed).max(0) as u64,
            allocated: t.allocated.load(Relaxed),
        })
    }

    /// Starts a new peak from what the group holds now.
    pub fn reset_peak(&self) {
        if let Some(t) = totals_of(self.0) {
            t.peak.store(t.live.load(Relaxed), Relaxed);
        }
    }

    /// Puts the calling thread in this group until the returned guard is
    /// dropped (or, for a thread that ends in the group, for good).
    pub fn enter(&self) -> Entered {
        let before = CURRENT.try_with(|c| c.replace(self.0)).unwrap_or(0);
        Entered { before }
    }

    /// Puts the calling thread in this group for the rest of its life: for
    /// threads a runtime starts on the group's behalf.
    pub fn enter_for_good(&self) {
        let _ = CURRENT.try_with(|c| c.set(self.0));
    }

    /// What the group holds now: live bytes and allocations.
    pub fn live(&self) -> Live {
        let mut live = Live::default();
        self.each(|r| {
            live.bytes += r.size as u64;
            live.allocations += 1;
        });
        live
    }

    /// Every live allocation of the group, with its raw stack (innermost
    /// frame first).
    pub fn allocations(&self) -> Vec<Allocation> {
        let mut out = Vec::new();
        self.each(|r| {
            out.push(Allocation {
                size: r.size,
                frames: r.frames[..usize::from(r.depth)].to_vec(),
            })
        });
        out
    }

    fn each(&self, mut f: impl FnMut(&Record)) {
        // The caller may allocate in `f`: keep that out of the tables.
        let _ = guarded(|| {
            for s in &TABLE {
                let s = s.lock().unwrap_or_else(|p| p.into_inner());
                for r in s.iter().flat_map(|m| m.values()) {
                    if r.group == self.0 {
                        f(r);
                    }
                }
            }
        });
    }
}

impl Default for Group {
    fn default() -> Self {
        Group::new()
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(t) = totals_of(self.0) {
            t.live.store(0, Relaxed);
            t.peak.store(0, Relaxed);
            t.allocated.store(0, Relaxed);
            t.owner.store(0, Relaxed);
        }
        let _ = guarded(|| {
            for s in &TABLE {
                let mut s = s.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(m) = s.as_mut() {
                    let before = m.len();
                    m.retain(|_, r| r.group != self.0);
                    RECORDED.fetch_sub(before - m.len(), Relaxed);
                }
            }
        });
    }
}

/// Restores the thread's previous group when dropped.
#[must_use = "the thread leaves the group when this is dropped"]
pub struct Entered {
    before: u32,
}

impl Drop for Entered {
    fn drop(&mut self) {
        let _ = CURRENT.try_with(|c| c.set(self.before));
    }
}

/// A group's running totals, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupTotals {
    /// Held now.
    pub live: u64,
    /// The most held at once since the last [`Group::reset_peak`].
    pub peak: u64,
    /// Allocated in all, freed or not.
    pub allocated: u64,
}

/// Totals of what a group holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Live {
    pub bytes: u64,
    pub allocations: u64,
}

/// One live allocation and the instruction pointers of the stack that
/// made it, innermost first.
#[derive(Debug, Clone)]
pub struct Allocation {
    pub size: usize,
    pub frames: Vec<usize>,
}

/// A global allocator that records group allocations around `A`:
///
/// ```ignore
/// #[global_allocator]
/// static ALLOC: leakscope_allocgroup::Tracking<std::alloc::System> =
///     leakscope_allocgroup::Tracking(std::alloc::System);
/// ```
pub struct Tracking<A>(pub A);

// SAFETY: every call forwards to the inner allocator unchanged; the hooks
// only read and write their own tables.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Tracking<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        mark_hooked();
        let p = unsafe { self.0.alloc(layout) };
        on_alloc(p, layout.size());
        p
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { self.0.alloc_zeroed(layout) };
        on_alloc(p, layout.size());
        p
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        on_dealloc(ptr);
        unsafe { self.0.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { self.0.realloc(ptr, layout, new_size) };
        on_realloc(ptr, p, new_size);
        p
    }
}

/// Runs `f` with the calling thread outside any group: for bookkeeping a
/// checker does on a thread that is in one, which is not the test's heap.
pub fn outside<R>(f: impl FnOnce() -> R) -> R {
    let before = CURRENT.try_with(|c| c.replace(0)).unwrap_or(0);
    let r = f();
    let _ = CURRENT.try_with(|c| c.set(before));
    r
}

impl Tracking<std::alloc::System> {
    /// The system allocator, tracked.
    pub const fn system() -> Self {
        Tracking(std::alloc::System)
    }
}
