//! The serving root: turning a URL path into a file that is provably inside it.
//!
//! Two layers, so that neither has to be perfect alone:
//!
//! 1. [`RelPath::from_url`] decodes the URL path exactly once and rejects
//!    anything that is not a plain relative path (`..`, `.`, empty segments,
//!    backslashes, NUL, malformed escapes). A double-encoded `%252e%252e` stays
//!    the literal name `%2e%2e` and cannot traverse.
//! 2. [`ServeRoot`] opens files with `openat2(RESOLVE_BENEATH)` relative to a
//!    directory fd held open for the server's life, so the *kernel* refuses
//!    any resolution — including through symlinks swapped in after a check —
//!    that leaves the root. Where `openat2` is unavailable (kernels before 5.6,
//!    some seccomp sandboxes) the fallback opens first and then checks what was
//!    actually opened via `/proc/self/fd`, which is equally free of
//!    check-then-use races.
//!
//! Invariant: every byte the server sends from disk comes from a file opened
//! by [`ServeRoot::open_file`].

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, StatxFlags};

use crate::open_files::{Kept, OpenFiles};
use rustix::io::Errno;

/// Why a URL path or an open was refused; each maps to one status code.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("malformed percent-encoding")]
    BadEncoding,
    #[error("path contains a forbidden character")]
    ForbiddenChar,
    #[error("path contains a '.', '..' or empty segment")]
    BadSegment,
    #[error("path escapes the serving root")]
    Escapes,
    #[error("not found")]
    NotFound,
    #[error("not a regular file")]
    NotRegular,
    #[error("not a directory")]
    NotDirectory,
    #[error("permission denied")]
    PermissionDenied,
    #[error("I/O error: {0}")]
    Io(#[source] io::Error),
}

/// A validated path relative to the root: zero or more plain segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelPath {
    bytes: Vec<u8>,
}

impl RelPath {
    /// Decodes the part of a request path after the route prefix. The empty
    /// string is the root itself (meaningful for directory routes only).
    pub fn from_url(raw: &str) -> Result<Self, PathError> {
        let decoded = percent_decode_strict(raw.as_bytes())?;
        if decoded.is_empty() {
            return Ok(Self { bytes: decoded });
        }
        if decoded.iter().any(|&b| b == 0 || b == b'\\') {
            return Err(PathError::ForbiddenChar);
        }
        if decoded
            .split(|&b| b == b'/')
            .any(|seg| seg.is_empty() || seg == b"." || seg == b"..")
        {
            // Covers leading '/' (an absolute path) and '//' too.
            return Err(PathError::BadSegment);
        }
        Ok(Self { bytes: decoded })
    }

    /// A path produced by walking the filesystem beneath the root (normal
    /// components only), for re-opening it through [`ServeRoot::open_file`].
    pub fn from_fs(rel: &Path) -> Self {
        Self {
            bytes: rel.as_os_str().as_bytes().to_vec(),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn is_root(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn as_path(&self) -> &Path {
        if self.bytes.is_empty() {
            Path::new(".")
        } else {
            Path::new(OsStr::from_bytes(&self.bytes))
        }
    }

    /// The last segment, for `Content-Disposition`.
    pub fn file_name(&self) -> &[u8] {
        self.bytes.rsplit(|&b| b == b'/').next().unwrap_or_default()
    }
}

/// RFC 3986 percent-decoding that refuses `%` not followed by two hex digits,
/// which `percent_encoding` would pass through silently.
fn percent_decode_strict(raw: &[u8]) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'%' => {
                let hex = raw.get(i + 1..i + 3).ok_or(PathError::BadEncoding)?;
                let text = std::str::from_utf8(hex).map_err(|_| PathError::BadEncoding)?;
                if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(PathError::BadEncoding);
                }
                out.push(u8::from_str_radix(text, 16).map_err(|_| PathError::BadEncoding)?);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// The directory files are served from.
#[derive(Debug)]
pub struct ServeRoot {
    dir: OwnedFd,
    canonical: PathBuf,
    use_openat2: bool,
    /// `RESOLVE_CACHED` works here (Linux 5.12+), so
    /// [`ServeRoot::open_file_cached`] can try an open on an async worker.
    resolve_cached: bool,
    /// Files opened beneath the root, kept open per path.
    open_files: Option<OpenFiles>,
}

/// What a download needs of a file's metadata, from the open file or from
/// a `statx` of its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    pub len: u64,
    pub modified: SystemTime,
    pub dev: u64,
    pub ino: u64,
}

impl From<&std::fs::Metadata> for FileStat {
    fn from(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            len: meta.len(),
            modified: meta.modified().unwrap_or(UNIX_EPOCH),
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

impl ServeRoot {
    pub fn open(path: &Path) -> io::Result<Self> {
        let canonical = path.canonicalize()?;
        let dir = rustix::fs::open(
            &canonical,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let mut root = Self {
            dir,
            canonical,
            use_openat2: true,
            resolve_cached: true,
            open_files: None,
        };
        // Probe once: ENOSYS (old kernel) or EPERM (seccomp) select the fallback.
        if let Err(e) = root.open_raw(Path::new("."), OFlags::DIRECTORY) {
            if matches!(Errno::from_io_error(&e), Some(Errno::NOSYS | Errno::PERM)) {
                tracing::warn!("openat2 unavailable ({e}); using the /proc/self/fd check");
                root.use_openat2 = false;
            }
        }
        // Kernels before 5.12 refuse the flag with EINVAL. The root itself
        // was just resolved, so EAGAIN cannot come from a cold cache.
        root.resolve_cached = root.use_openat2
            && root
                .openat2(Path::new("."), OFlags::DIRECTORY, ResolveFlags::CACHED)
                .is_ok();
        Ok(root)
    }

    /// Forces the fallback path, so tests can cover it on kernels with openat2.
    #[doc(hidden)]
    pub fn without_openat2(mut self) -> Self {
        self.use_openat2 = false;
        self.resolve_cached = false;
        self
    }

    pub fn path(&self) -> &Path {
        &self.canonical
    }

    /// Keeps up to `capacity` files open per path ([`OpenFiles`]); 0 keeps
    /// none.
    pub fn with_open_files(mut self, capacity: usize) -> Self {
        self.open_files = OpenFiles::new(capacity);
        self
    }

    /// Closes the kept files that went unused or were evicted.
    pub fn prune(&self) {
        if let Some(open) = &self.open_files {
            open.prune();
        }
    }

    /// Keeps `kept`, opened by [`ServeRoot::open_file`] for `rel`.
    pub fn keep(&self, rel: &RelPath, kept: &Kept) {
        if let Some(open) = &self.open_files {
            open.insert(rel, kept);
        }
    }

    /// The metadata of what `rel` names now, by `statx` of the path,
    /// following a final symlink as opening does. The walk is not confined
    /// to the root, so it only ever confirms that the path still leads to a
    /// file opened beneath it ([`OpenFiles`]), never decides what is served.
    pub fn stat_path(&self, rel: &RelPath) -> io::Result<FileStat> {
        let st = rustix::fs::statx(
            self.dir.as_fd(),
            rel.as_path(),
            AtFlags::empty(),
            StatxFlags::BASIC_STATS,
        )?;
        let (secs, nanos) = (st.stx_mtime.tv_sec, st.stx_mtime.tv_nsec);
        // As std reads it: the seconds may be before the epoch, the
        // nanoseconds always count forward.
        let modified = if secs >= 0 {
            UNIX_EPOCH + Duration::new(secs as u64, nanos)
        } else {
            UNIX_EPOCH
                .checked_sub(Duration::from_secs(secs.unsigned_abs()))
                .map_or(UNIX_EPOCH, |t| t + Duration::from_nanos(nanos.into()))
        };
        Ok(FileStat {
            len: st.stx_size,
            modified,
            dev: rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor),
            ino: st.stx_ino,
        })
    }

    /// Opens a regular file beneath the root (blocking: call from the blocking
    /// pool). Never blocks on a FIFO, never acquires a controlling terminal.
    pub fn open_file(&self, rel: &RelPath) -> Result<(File, std::fs::Metadata), PathError> {
        if rel.is_root() {
            return Err(PathError::NotRegular);
        }
        let fd = self
            .open_raw(rel.as_path(), OFlags::NONBLOCK | OFlags::NOCTTY)
            .map_err(map_open_error)?;
        let file = File::from(fd);
        let meta = file.metadata().map_err(PathError::Io)?;
        if !meta.is_file() {
            return Err(PathError::NotRegular);
        }
        Ok((file, meta))
    }

    /// [`ServeRoot::open_file`] without waiting on the disk, for an async
    /// worker: the file kept open for `rel`, if it still names it, else an
    /// open that fails rather than read a directory block
    /// (`RESOLVE_CACHED`). `Ok(None)` when the dentries are not cached or
    /// the kernel lacks the flag: then open on the blocking pool (and
    /// [`ServeRoot::keep`] the file). The fstat that follows an open reads
    /// the inode the open just loaded, so it cannot wait either.
    pub fn open_file_cached(&self, rel: &RelPath) -> Result<Option<Kept>, PathError> {
        if rel.is_root() {
            return Err(PathError::NotRegular);
        }
        if let Some(hit) = self.open_files.as_ref().and_then(|o| o.get(self, rel)) {
            return Ok(Some(hit));
        }
        if !self.resolve_cached {
            return Ok(None);
        }
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
        let fd = match self.openat2(rel.as_path(), flags, ResolveFlags::CACHED) {
            Ok(fd) => fd,
            Err(e) if Errno::from_io_error(&e) == Some(Errno::AGAIN) => return Ok(None),
            Err(e) => return Err(map_open_error(e)),
        };
        let file = File::from(fd);
        let meta = file.metadata().map_err(PathError::Io)?;
        if !meta.is_file() {
            return Err(PathError::NotRegular);
        }
        let kept = Kept::new(rel, Arc::new(file), FileStat::from(&meta));
        self.keep(rel, &kept);
        Ok(Some(kept))
    }

    /// Checks that `rel` is a directory beneath the root and returns its real
    /// path, for walking it.
    pub fn open_dir(&self, rel: &RelPath) -> Result<PathBuf, PathError> {
        let fd = self
            .open_raw(rel.as_path(), OFlags::DIRECTORY)
            .map_err(map_open_error)?;
        let real = fd_path(&fd).map_err(PathError::Io)?;
        if !self.contains(&real) {
            return Err(PathError::Escapes);
        }
        Ok(real)
    }

    fn contains(&self, real: &Path) -> bool {
        real == self.canonical || real.starts_with(&self.canonical)
    }

    /// openat2 beneath the root: the kernel refuses any resolution that
    /// leaves it, and magic links.
    fn openat2(&self, rel: &Path, flags: OFlags, extra: ResolveFlags) -> io::Result<OwnedFd> {
        Ok(rustix::fs::openat2(
            self.dir.as_fd(),
            rel,
            flags,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS | extra,
        )?)
    }

    fn open_raw(&self, rel: &Path, extra: OFlags) -> io::Result<OwnedFd> {
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | extra;
        if self.use_openat2 {
            return self.openat2(rel, flags, ResolveFlags::empty());
        }
        let fd = rustix::fs::openat(self.dir.as_fd(), rel, flags, Mode::empty())?;
        // Check what was opened, not what the path said before opening.
        if !self.contains(&fd_path(&fd)?) {
            return Err(io::Error::from(Errno::XDEV));
        }
        Ok(fd)
    }
}

fn fd_path(fd: &OwnedFd) -> io::Result<PathBuf> {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

fn map_open_error(e: io::Error) -> PathError {
    match Errno::from_io_error(&e) {
        Some(Errno::NOENT) => PathError::NotFound,
        Some(Errno::NOTDIR) => PathError::NotDirectory,
        // EXDEV: RESOLVE_BENEATH refused to leave the root; ELOOP: a symlink
        // loop or a magic link.
        Some(Errno::XDEV | Errno::LOOP) => PathError::Escapes,
        Some(Errno::ACCESS | Errno::PERM) => PathError::PermissionDenied,
        Some(Errno::NAMETOOLONG) => PathError::NotFound,
        _ => PathError::Io(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_once() {
        let p = RelPath::from_url("a%20b/c%C3%A9.txt").unwrap();
        assert_eq!(p.as_path(), Path::new("a b/cé.txt"));
        assert_eq!(p.file_name(), "cé.txt".as_bytes());
        // Double-encoding stays literal.
        let p = RelPath::from_url("%252e%252e/x").unwrap();
        assert_eq!(p.as_path(), Path::new("%2e%2e/x"));
    }

    #[test]
    fn rejects_non_plain_paths() {
        for raw in [
            "..",
            "a/../b",
            "%2e%2e/x",
            "%2E%2E",
            ".",
            "a/./b",
            "/etc/passwd",
            "%2fetc",
            "a//b",
            "a/",
            "a%5cb",
            "a\\b",
            "a%00b",
            "%",
            "%4",
            "%zz",
            "%+1",
        ] {
            assert!(RelPath::from_url(raw).is_err(), "{raw:?} was accepted");
        }
        assert!(RelPath::from_url("").unwrap().is_root());
    }

    #[test]
    fn fallback_also_refuses_symlink_escape() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(dir.path().join("secret"), b"s").unwrap();
        std::fs::write(root.join("ok"), b"o").unwrap();
        std::os::unix::fs::symlink("../secret", root.join("out")).unwrap();
        std::os::unix::fs::symlink("ok", root.join("in")).unwrap();
        for r in [
            ServeRoot::open(&root).unwrap(),
            ServeRoot::open(&root).unwrap().without_openat2(),
        ] {
            let open = |p: &str| r.open_file(&RelPath::from_url(p).unwrap());
            assert!(matches!(open("out"), Err(PathError::Escapes)));
            assert!(open("in").is_ok());
            assert!(matches!(open("missing"), Err(PathError::NotFound)));
        }
    }

    /// The inline open is held to the same root as the blocking one: the
    /// escape is refused whether or not its dentries are cached.
    #[test]
    fn cached_open_refuses_what_the_blocking_open_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(dir.path().join("secret"), b"s").unwrap();
        std::fs::write(root.join("ok"), b"o").unwrap();
        std::os::unix::fs::symlink("../secret", root.join("out")).unwrap();
        let r = ServeRoot::open(&root).unwrap();
        assert!(r.resolve_cached, "this kernel has RESOLVE_CACHED");
        let open = |p: &str| r.open_file_cached(&RelPath::from_url(p).unwrap());
        // Resolved once, so the dentries are cached.
        r.open_file(&RelPath::from_url("ok").unwrap()).unwrap();
        let kept = open("ok").unwrap().expect("a cached path opens inline");
        assert_eq!(kept.stat.len, 1);
        for _ in 0..2 {
            // Twice: the first lookup may only populate the cache.
            let _ = open("out");
        }
        assert!(
            matches!(open("out"), Err(PathError::Escapes) | Ok(None)),
            "an escaping symlink opened inline"
        );
        assert!(matches!(open("sub"), Err(PathError::NotRegular)));
        // The fallback for kernels without openat2 has no inline open.
        let r = r.without_openat2();
        assert!(matches!(open_with(&r, "ok"), Ok(None)));
    }

    fn open_with(r: &ServeRoot, p: &str) -> Result<Option<Kept>, PathError> {
        r.open_file_cached(&RelPath::from_url(p).unwrap())
    }
}
