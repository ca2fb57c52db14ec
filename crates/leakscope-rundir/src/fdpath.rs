//! How fd paths group: the sampler counts by these keys and the analysis
//! matches paths to them, so both spell the rule through this one place.
//!
//! Why: a service that leaks one fd per request to a new file each time
//! (`req-1.log`, `req-2.log`, …) has thousands of paths each open once, and
//! the top-paths list names none of them. Two keys group them:
//! - the **pattern**: every maximal run of ASCII digits is `*`, directory
//!   names too (`/tmp/app-logs-123/req-45.log` → `/tmp/app-logs-*/req-*.log`);
//! - the **directory**: the pattern of the parent directory with a
//!   trailing `/`, standing for every file in it (`/tmp/app-logs-*/`), for
//!   names without digits (`/tmp/.tmpAbCdEf`). A file path never ends with
//!   `/`, so the two kinds of key cannot collide.

use std::borrow::Cow;

/// `path` with every maximal run of ASCII digits replaced by one `*`.
/// Allocates only when the path has a digit.
pub fn pattern(path: &str) -> Cow<'_, str> {
    if !path.bytes().any(|b| b.is_ascii_digit()) {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    let mut in_digits = false;
    for c in path.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('*');
            }
            in_digits = true;
        } else {
            out.push(c);
            in_digits = false;
        }
    }
    Cow::Owned(out)
}

/// The directory key of an absolute `path`: its parent's pattern with a
/// trailing `/`; `None` for a path with no parent directory.
pub fn directory(path: &str) -> Option<String> {
    let cut = path.rfind('/')?;
    (cut > 0 || path.starts_with('/')).then(|| format!("{}/", pattern(&path[..cut])))
}

/// Whether a grouped key is a directory key.
pub fn is_directory(key: &str) -> bool {
    key.ends_with('/')
}

/// Whether `path` falls under the directory key `dir`.
pub fn in_directory(path: &str, dir: &str) -> bool {
    directory(path).is_some_and(|d| d == dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digit_runs_become_one_star_each() {
        assert_eq!(
            pattern("/tmp/app-logs-123/req-45.log"),
            "/tmp/app-logs-*/req-*.log"
        );
        assert_eq!(pattern("/data/2024/01/x1y22z"), "/data/*/*/x*y*z");
        assert_eq!(pattern("7"), "*");
        assert_eq!(pattern("/tmp/ü9ü/٣"), "/tmp/ü*ü/٣");
        let p = "/var/log/app.log";
        assert!(matches!(pattern(p), Cow::Borrowed(s) if s == p));
    }

    #[test]
    fn a_directory_key_is_the_parents_pattern_with_a_slash() {
        assert_eq!(
            directory("/tmp/app-logs-123/req-45.log").as_deref(),
            Some("/tmp/app-logs-*/")
        );
        assert_eq!(directory("/tmp/.tmpAbCdEf").as_deref(), Some("/tmp/"));
        assert_eq!(directory("/x").as_deref(), Some("/"));
        assert_eq!(directory("relative"), None);
        assert!(is_directory("/tmp/") && !is_directory("/tmp/a"));
        assert!(in_directory("/tmp/.tmpAb", "/tmp/"));
        assert!(!in_directory("/tmp/a/b", "/tmp/"));
    }
}
