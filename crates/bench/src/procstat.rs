//! Process statistics from `/proc` (Linux only, no `libc`): peak and current resident set
//! size, and CPU time of the process and of its threads by name.
//!
//! CPU times in `/proc/*/stat` are in clock ticks of `USER_HZ`, which is 100 on every Linux
//! architecture the project runs on (proc(5): "measured in clock ticks (divide by
//! sysconf(_SC_CLK_TCK))"; the kernel exports `USER_HZ` = 100 to user space on x86 and arm).

use std::time::Duration;

/// Clock ticks per second of `/proc/*/stat` times (`USER_HZ`).
pub const USER_HZ: u64 = 100;

/// A snapshot of this process's memory and CPU use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcStats {
    /// Peak resident set size (`VmHWM`), KiB.
    pub peak_rss_kib: u64,
    /// Current resident set size (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// User CPU time of the whole process (all threads, live and exited).
    pub user: Duration,
    /// System CPU time of the whole process.
    pub system: Duration,
}

impl ProcStats {
    /// Reads `/proc/self/status` and `/proc/self/stat`. Fields that cannot be read are 0.
    pub fn read() -> ProcStats {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let (user, system) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| cpu_of_stat(&s))
            .unwrap_or_default();
        ProcStats {
            peak_rss_kib: kib("VmHWM:"),
            rss_kib: kib("VmRSS:"),
            user,
            system,
        }
    }

    /// User plus system CPU time.
    pub fn cpu(&self) -> Duration {
        self.user + self.system
    }
}

/// `(utime, stime)` of a `/proc/*/stat` line. The command name (field 2) is in parentheses
/// and may itself contain spaces and parentheses, so fields are counted after the last `)`.
pub fn cpu_of_stat(stat: &str) -> Option<(Duration, Duration)> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let ticks = |i: usize| -> Option<Duration> {
        let t: u64 = fields.get(i)?.parse().ok()?;
        Some(Duration::from_millis(t * 1000 / USER_HZ))
    };
    Some((ticks(11)?, ticks(12)?))
}

/// The command name (field 2) of a `/proc/*/stat` line.
pub fn name_of_stat(stat: &str) -> Option<&str> {
    let start = stat.find('(')?;
    let end = stat.rfind(')')?;
    stat.get(start + 1..end)
}

/// CPU time of this process's live threads whose name starts with `prefix` (`""`: every
/// live thread); thread names are truncated to 15 bytes by the kernel. Uses the nanosecond
/// run time of `/proc/self/task/*/schedstat` when the kernel has it, else the 10 ms ticks of
/// `stat`.
pub fn thread_cpu(prefix: &str) -> Duration {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            if !name_of_stat(&stat).is_some_and(|n| n.starts_with(prefix)) {
                return None;
            }
            let precise = std::fs::read_to_string(e.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .map(Duration::from_nanos);
            precise.or_else(|| cpu_of_stat(&stat).map(|(u, s)| u + s))
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_awkward_names_parse() {
        let line = "1234 (engine (x) 1) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 3 0 100 1000 200";
        assert_eq!(name_of_stat(line), Some("engine (x) 1"));
        assert_eq!(
            cpu_of_stat(line),
            Some((Duration::from_millis(2500), Duration::from_millis(370)))
        );
        assert_eq!(cpu_of_stat("garbage"), None);
    }

    #[test]
    fn own_process_is_readable() {
        // Burn a little CPU so the counters are not all zero on a fast machine.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let s = ProcStats::read();
        assert!(
            s.peak_rss_kib > 0 && s.rss_kib > 0 && s.peak_rss_kib >= s.rss_kib,
            "{s:?}"
        );
        assert!(s.cpu() > Duration::ZERO, "{s:?}");
        assert!(thread_cpu("") > Duration::ZERO);
        assert_eq!(thread_cpu("no thread has this name"), Duration::ZERO);
    }
}
