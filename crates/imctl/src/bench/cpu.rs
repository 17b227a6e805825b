//! CPU time of a process from Linux `/proc/<pid>/stat` (utime + stime).

use std::sync::OnceLock;

use anyhow::{Context, bail};

/// Which process to sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    /// The load generator itself.
    Current,
    Pid(u32),
}

impl Process {
    fn stat_path(self) -> String {
        match self {
            Process::Current => "/proc/self/stat".to_owned(),
            Process::Pid(pid) => format!("/proc/{pid}/stat"),
        }
    }
}

/// utime + stime of `process`, in clock ticks.
pub fn read_ticks(process: Process) -> anyhow::Result<u64> {
    let path = process.stat_path();
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    parse_stat_ticks(&text).with_context(|| format!("cannot parse {path}"))
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The command
/// name (field 2) is in parentheses and may itself hold spaces and ')', so
/// fields are counted after the last ')'.
pub fn parse_stat_ticks(stat: &str) -> anyhow::Result<u64> {
    let Some((_, after_comm)) = stat.rsplit_once(')') else { bail!("no command name in parentheses") };
    // After the name come field 3 (state), 4, ...: utime is field 14, index 11 here.
    let mut fields = after_comm.split_ascii_whitespace().skip(11);
    let mut next = |name: &str| -> anyhow::Result<u64> {
        let raw = fields.next().with_context(|| format!("no {name} field"))?;
        raw.parse().with_context(|| format!("{name} is not a number: {raw:?}"))
    };
    let utime = next("utime")?;
    let stime = next("stime")?;
    Ok(utime + stime)
}

/// Clock ticks per second (`getconf CLK_TCK`, asked once; 100 on Linux when unknown).
pub fn ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .filter(|out| out.status.success())
            .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
            .filter(|&ticks| ticks > 0)
            .unwrap_or(100)
    })
}

/// Seconds of CPU between two samples in ticks.
pub fn seconds_between(before: u64, after: u64) -> f64 {
    after.saturating_sub(before) as f64 / ticks_per_second() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_utime_and_stime_even_with_odd_command_names() {
        let stat = "4242 (im (serv) ice) S 1 4242 4242 0 -1 4194560 1234 0 0 0 350 125 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_stat_ticks(stat).unwrap(), 475);
    }

    #[test]
    fn rejects_truncated_lines() {
        assert!(parse_stat_ticks("1 (x) S 1 2 3").is_err());
        assert!(parse_stat_ticks("garbage").is_err());
    }

    #[test]
    fn reads_its_own_cpu_time() {
        let before = read_ticks(Process::Current).unwrap();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(read_ticks(Process::Current).unwrap() >= before);
        assert!(ticks_per_second() > 0);
    }
}
