//! What a file's response headers say about it, worked out once per
//! version of the file.
//!
//! The entity tag, Last-Modified, Content-Type and Content-Disposition of a
//! file depend only on its name, length, modification time and inode. At
//! 4 KiB, formatting them per request (with the MIME lookup) was 5% of the
//! server's CPU; kept with the open file ([`crate::open_files`]) they are
//! reused while the file's `statx` reads the same, and worked out afresh
//! the moment it does not.

use std::time::SystemTime;

use http::HeaderValue;

use crate::conditional::Validators;
use crate::response::content_disposition;
use crate::root::FileStat;

#[derive(Debug)]
pub struct Representation {
    pub len: u64,
    modified: SystemTime,
    ino: u64,
    pub validators: Validators,
    pub content_type: HeaderValue,
    pub disposition: HeaderValue,
}

impl Representation {
    /// The headers of the file `name` (its last path segment) as `stat`
    /// describes it.
    pub fn new(name: &[u8], stat: &FileStat) -> Self {
        let content_type = mime_guess::from_path(String::from_utf8_lossy(name).as_ref())
            .first_raw()
            .unwrap_or("application/octet-stream");
        Self {
            len: stat.len,
            modified: stat.modified,
            ino: stat.ino,
            validators: Validators::new(stat.len, stat.modified, stat.ino),
            content_type: HeaderValue::from_static(content_type),
            disposition: content_disposition(name),
        }
    }

    /// Whether these headers still describe a file that reads `stat`: the
    /// same length, modification time and inode give the same headers.
    pub fn describes(&self, stat: &FileStat) -> bool {
        self.len == stat.len && self.modified == stat.modified && self.ino == stat.ino
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn stat(len: u64, nanos: u32) -> FileStat {
        FileStat {
            len,
            modified: UNIX_EPOCH + Duration::new(1_700_000_000, nanos),
            dev: 1,
            ino: 7,
        }
    }

    #[test]
    fn headers_follow_the_name_and_any_change_of_the_file() {
        let r = Representation::new(b"report.pdf", &stat(10, 0));
        assert_eq!(r.content_type, "application/pdf");
        assert_eq!(r.disposition, "attachment; filename=\"report.pdf\"");
        assert!(r.describes(&stat(10, 0)));
        // A rewrite within the same second keeps Last-Modified but not the
        // entity tag, and is a new representation.
        assert!(!r.describes(&stat(10, 1)));
        assert!(!r.describes(&stat(11, 0)));
        let other = Representation::new(b"report.pdf", &stat(10, 1));
        assert_ne!(r.validators.etag_header(), other.validators.etag_header());
        let unknown = Representation::new(b"blob", &stat(1, 0));
        assert_eq!(unknown.content_type, "application/octet-stream");
    }
}
