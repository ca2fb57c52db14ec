//! An open-file cache, like nginx's `open_file_cache` but never stale.
//!
//! Opening a file beneath the root (`openat2` walks the path under
//! `RESOLVE_BENEATH`) and closing it are the two costliest system calls of
//! a small download: measured, 16% of the server's CPU at 4 KiB. The cache
//! keeps each path's open file, and on every request checks with one
//! `statx` of the path that it still names the same inode. The kept
//! descriptor holds that inode, so its number cannot be reused while it is
//! cached: equal device and inode numbers mean the same file. The length
//! and modification time (so the validators) come from that `statx`, never
//! from the cache, so a file rewritten in place is served as it is now, and
//! a file replaced by a rename is opened afresh.
//!
//! What a hit serves was opened beneath the root by [`ServeRoot`]; the
//! `statx` only confirms the path still leads to it. The held descriptor
//! also pins the path's dentries, so on a hit the `statx` finds them cached
//! and does not wait on the disk.
//!
//! Each entry also keeps the file's response headers
//! ([`Representation`]), reused while the `statx` reads the same.
//!
//! Bounds: at most `capacity` descriptors (by default a quarter of
//! RLIMIT_NOFILE, at most 1,024, so connections keep the rest), each
//! dropped after [`IDLE`] unused, which is also how soon a deleted file's
//! space is given back once nobody asks for it (plus the server's 30 s
//! prune period).

use std::fs::File;
use std::sync::Arc;
use std::time::Duration;

use crate::representation::Representation;
use crate::root::{FileStat, RelPath, ServeRoot};

/// How long an unused entry keeps its descriptor (nginx's `inactive`).
pub const IDLE: Duration = Duration::from_secs(20);

/// Most descriptors the cache holds by default, whatever RLIMIT_NOFILE.
const MAX_DEFAULT: usize = 1024;

/// A file opened beneath the root, with its metadata as of now and the
/// headers that go with it.
#[derive(Debug, Clone)]
pub struct Kept {
    pub file: Arc<File>,
    pub stat: FileStat,
    pub representation: Arc<Representation>,
}

impl Kept {
    /// `file`, just opened for `rel`, as `stat` describes it.
    pub fn new(rel: &RelPath, file: Arc<File>, stat: FileStat) -> Self {
        let representation = Arc::new(Representation::new(rel.file_name(), &stat));
        Self {
            file,
            stat,
            representation,
        }
    }
}

#[derive(Clone)]
struct Entry {
    file: Arc<File>,
    dev: u64,
    ino: u64,
    representation: Arc<Representation>,
}

pub struct OpenFiles {
    cache: moka::sync::Cache<Vec<u8>, Entry>,
}

impl std::fmt::Debug for OpenFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenFiles")
            .field("held", &self.cache.entry_count())
            .finish()
    }
}

impl OpenFiles {
    /// A cache of at most `capacity` descriptors; `None` when 0 (off).
    pub fn new(capacity: usize) -> Option<Self> {
        (capacity > 0).then(|| Self {
            cache: moka::sync::Cache::builder()
                .max_capacity(capacity as u64)
                .time_to_idle(IDLE)
                .build(),
        })
    }

    /// A quarter of the soft RLIMIT_NOFILE, at most [`MAX_DEFAULT`].
    pub fn default_capacity() -> usize {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        let soft = limit.current.unwrap_or(u64::MAX);
        (soft / 4).min(MAX_DEFAULT as u64) as usize
    }

    /// The cached file of `rel`, its metadata now and its headers, if
    /// `rel` still names it; a stale entry is dropped. A file changed in
    /// place gets its headers worked out afresh, and kept.
    pub fn get(&self, root: &ServeRoot, rel: &RelPath) -> Option<Kept> {
        let entry = self.cache.get(rel.as_bytes())?;
        let stat = match root.stat_path(rel) {
            Ok(stat) if stat.dev == entry.dev && stat.ino == entry.ino => stat,
            _ => {
                self.cache.invalidate(rel.as_bytes());
                return None;
            }
        };
        if entry.representation.describes(&stat) {
            return Some(Kept {
                file: entry.file,
                stat,
                representation: entry.representation,
            });
        }
        let kept = Kept::new(rel, entry.file, stat);
        self.insert(rel, &kept);
        Some(kept)
    }

    /// Keeps `kept`, just opened beneath the root, for `rel`.
    pub fn insert(&self, rel: &RelPath, kept: &Kept) {
        self.cache.insert(
            rel.as_bytes().to_vec(),
            Entry {
                file: Arc::clone(&kept.file),
                dev: kept.stat.dev,
                ino: kept.stat.ino,
                representation: Arc::clone(&kept.representation),
            },
        );
    }

    /// Closes what expired or was evicted: the cache does its upkeep only
    /// when used, and an idle server must still give descriptors back.
    pub fn prune(&self) {
        self.cache.run_pending_tasks();
    }

    /// Descriptors held now, after upkeep (the tests' view of eviction).
    #[cfg(test)]
    fn len(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn setup() -> (tempfile::TempDir, ServeRoot, OpenFiles) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), b"first").unwrap();
        let root = ServeRoot::open(dir.path()).unwrap();
        (dir, root, OpenFiles::new(4).unwrap())
    }

    fn open_and_keep(root: &ServeRoot, cache: &OpenFiles, rel: &RelPath) -> Arc<File> {
        let (file, meta) = root.open_file(rel).unwrap();
        let kept = Kept::new(rel, Arc::new(file), FileStat::from(&meta));
        cache.insert(rel, &kept);
        kept.file
    }

    /// A hit is the same open file, with the length as it is now.
    #[test]
    fn a_file_written_in_place_is_a_hit_with_its_new_length() {
        let (dir, root, cache) = setup();
        let rel = RelPath::from_url("a").unwrap();
        assert!(cache.get(&root, &rel).is_none());
        let kept = open_and_keep(&root, &cache, &rel);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("a"))
            .unwrap();
        f.write_all(b" and more").unwrap();
        let hit = cache.get(&root, &rel).expect("a hit");
        assert!(Arc::ptr_eq(&hit.file, &kept));
        assert_eq!(hit.stat.len, b"first and more".len() as u64);
        // The headers are the file's as it is now, and kept for the next.
        assert_eq!(hit.representation.len, hit.stat.len);
        let again = cache.get(&root, &rel).expect("a hit");
        assert!(Arc::ptr_eq(&again.representation, &hit.representation));
    }

    /// A rename over the path, or its removal, is a miss: the old file is
    /// never served for the path again.
    #[test]
    fn a_replaced_or_removed_file_is_a_miss() {
        let (dir, root, cache) = setup();
        let rel = RelPath::from_url("a").unwrap();
        open_and_keep(&root, &cache, &rel);
        std::fs::write(dir.path().join("b"), b"second").unwrap();
        std::fs::rename(dir.path().join("b"), dir.path().join("a")).unwrap();
        assert!(
            cache.get(&root, &rel).is_none(),
            "the replaced file was served"
        );
        open_and_keep(&root, &cache, &rel);
        std::fs::remove_file(dir.path().join("a")).unwrap();
        assert!(
            cache.get(&root, &rel).is_none(),
            "a removed file was served"
        );
        assert!(cache.is_empty(), "a stale entry kept its descriptor");
    }

    /// The cache holds no more descriptors than its capacity.
    #[test]
    fn capacity_bounds_the_descriptors_held() {
        let (dir, root, cache) = setup();
        for i in 0..20 {
            let name = format!("f{i}");
            std::fs::write(dir.path().join(&name), b"x").unwrap();
            open_and_keep(&root, &cache, &RelPath::from_url(&name).unwrap());
        }
        assert!(cache.len() <= 4, "{} held", cache.len());
        assert!(OpenFiles::new(0).is_none());
    }
}
