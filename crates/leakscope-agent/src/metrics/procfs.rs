//! `/proc/self` reads for the process metrics, as client_golang's process
//! collector (through prometheus/procfs) makes them.

/// One read of the process; a field is `None` when its file could not be
/// read or parsed.
#[derive(Debug, Default)]
pub(super) struct ProcSelf {
    pub cpu_seconds: Option<f64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub resident_bytes: Option<u64>,
    pub start_time_seconds: Option<f64>,
    pub threads: Option<u64>,
}

/// The fields of a `stat` line after the command name (which may hold
/// spaces and parentheses, hence the last `)`); index 0 is field 3, state.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().collect())
}

/// Field `n` (1-based, as proc(5) numbers them) of a parsed stat line.
fn field(fields: &[&str], n: usize) -> Option<u64> {
    fields.get(n.checked_sub(3)?)?.parse().ok()
}

/// USER_HZ from the auxiliary vector (client_golang's procfs assumes 100).
fn clock_ticks() -> Option<f64> {
    Some(rustix::param::clock_ticks_per_second() as f64).filter(|t| *t > 0.0)
}

/// `None` off Linux (no /proc/self/stat).
pub(super) fn read_self() -> Option<ProcSelf> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let f = stat_fields(&stat)?;
    let hz = clock_ticks();
    let page = rustix::param::page_size() as u64;
    let ticks = |n| field(&f, n);
    Some(ProcSelf {
        cpu_seconds: match (ticks(14), ticks(15), hz) {
            (Some(u), Some(s), Some(hz)) => Some((u + s) as f64 / hz),
            _ => None,
        },
        open_fds: std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64),
        max_fds: max_open_files(),
        virtual_bytes: ticks(23),
        resident_bytes: ticks(24).map(|pages| pages * page),
        start_time_seconds: match (ticks(22), boot_time(), hz) {
            (Some(start), Some(boot), Some(hz)) => Some(boot as f64 + start as f64 / hz),
            _ => None,
        },
        threads: ticks(20),
    })
}

/// The soft `Max open files` of /proc/self/limits; `None` when unlimited
/// (no finite value to export) or unreadable.
fn max_open_files() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    soft.parse().ok()
}

/// `btime` of /proc/stat: boot time in seconds since the epoch.
fn boot_time() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// User + system CPU seconds of this process's threads named `comm`;
/// `None` when no thread has that name.
pub(super) fn thread_cpu_seconds(comm: &str) -> Option<f64> {
    let hz = clock_ticks()?;
    let mut ticks = None;
    for entry in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let dir = entry.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if name.trim_end() != comm {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        let Some(f) = stat_fields(&stat) else {
            continue;
        };
        if let (Some(u), Some(s)) = (field(&f, 14), field(&f, 15)) {
            *ticks.get_or_insert(0u64) += u + s;
        }
    }
    ticks.map(|t| t as f64 / hz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_a_command_name_with_spaces_and_parentheses() {
        let line = "42 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22";
        let f = stat_fields(line).unwrap();
        assert_eq!(f[0], "S");
        assert_eq!(field(&f, 14), Some(11));
        assert_eq!(field(&f, 24), Some(21));
        assert_eq!(field(&f, 2), None);
    }
}
