//! File paths with their numbers taken out, so fds opened one per request
//! to a new file each time group into one row.
//!
//! Why: a service that leaks one fd per request to `req-1.log`, `req-2.log`,
//! … has thousands of paths each open once, and the top-paths list names
//! none of them. With every maximal run of ASCII digits replaced by `*`
//! (directory names too: `/tmp/app-logs-123/req-45.log` is
//! `/tmp/app-logs-*/req-*.log`) they are one growing row.

use std::collections::HashMap;

use leakscope_rundir::fdpath;

/// The `keep` patterns with the most fds, most first (ties by pattern),
/// then the `keep` directories with the most ([`fdpath::directory`]: files
/// whose names have no digits to group by), from fd counts per path.
pub fn top_patterns<'a>(
    files: impl IntoIterator<Item = (&'a str, u64)>,
    keep: usize,
) -> Vec<(String, u64)> {
    let mut patterns: HashMap<String, u64> = HashMap::new();
    let mut dirs: HashMap<String, u64> = HashMap::new();
    for (path, n) in files {
        *patterns
            .entry(fdpath::pattern(path).into_owned())
            .or_default() += n;
        if let Some(d) = fdpath::directory(path) {
            *dirs.entry(d).or_default() += n;
        }
    }
    let mut rows = top(patterns, keep);
    rows.extend(top(dirs, keep));
    rows
}

/// The `keep` largest counts, most first, ties broken by name so that a
/// sample is the same whatever the hash order.
pub fn top(counts: HashMap<String, u64>, keep: usize) -> Vec<(String, u64)> {
    let mut rows: Vec<(String, u64)> = counts.into_iter().collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rows.truncate(keep);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_request_files_group_into_one_row() {
        let files: Vec<(String, u64)> = (0..50)
            .map(|i| (format!("/tmp/app-logs-{}/req-{i}.log", i % 3), 1))
            .chain([("/srv/static/index.html".to_string(), 4)])
            .collect();
        let top = top_patterns(files.iter().map(|(p, n)| (p.as_str(), *n)), 10);
        assert_eq!(
            top,
            vec![
                ("/tmp/app-logs-*/req-*.log".to_string(), 50),
                ("/srv/static/index.html".to_string(), 4),
                ("/tmp/app-logs-*/".to_string(), 50),
                ("/srv/static/".to_string(), 4),
            ]
        );
    }

    #[test]
    fn keeps_only_the_largest_with_ties_by_name() {
        let files = [("/a1", 2), ("/b", 2), ("/c", 1), ("/a22", 3), ("/d/x", 1)];
        assert_eq!(
            top_patterns(files, 2),
            vec![
                ("/a*".to_string(), 5),
                ("/b".to_string(), 2),
                ("/".to_string(), 8),
                ("/d/".to_string(), 1)
            ]
        );
    }

    #[test]
    fn random_names_group_by_their_directory() {
        let files = [
            ("/tmp/.tmpAbCdEf", 1),
            ("/tmp/.tmpQwErTy", 1),
            ("/srv/a", 3),
        ];
        let rows = top_patterns(files, 10);
        assert!(rows.contains(&("/tmp/".to_string(), 2)), "{rows:?}");
    }
}
