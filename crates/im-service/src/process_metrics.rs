//! The standard Prometheus process metrics (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_open_fds`, …), read from
//! `/proc/self` at each scrape, and the limits they are judged against
//! (`im_process_cpu_limit_cores`, `im_process_memory_limit_bytes`), so an
//! alert can say "70 % of the CPU this process may use" without knowing the
//! container it runs in.
//!
//! On a system without `/proc` the metrics are absent, not zero: a zero
//! would read as an idle process.

use procfs::Current;
use procfs::process::{LimitValue, Process};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Where cgroup v2 is mounted; `/proc/self/cgroup` names this process's
/// group below it (`0::/system.slice/im-service.service` under systemd, `0::/`
/// in a container with its own cgroup namespace).
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

#[derive(Debug, Default)]
pub struct ProcessCollector;

/// One reading of `/proc/self`.
struct Reading {
    cpu_seconds: f64,
    resident_bytes: u64,
    virtual_bytes: u64,
    start_time_seconds: u64,
    threads: i64,
    open_fds: Option<usize>,
    max_fds: Option<u64>,
}

fn read_process() -> Option<Reading> {
    let process = Process::myself().ok()?;
    let stat = process.stat().ok()?;
    let ticks = procfs::ticks_per_second() as f64;
    let boot_time = procfs::boot_time_secs().ok()?;
    let max_fds = process.limits().ok().and_then(|limits| match limits.max_open_files.soft_limit {
        LimitValue::Value(max) => Some(max),
        LimitValue::Unlimited => None,
    });
    Some(Reading {
        cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
        resident_bytes: stat.rss * procfs::page_size(),
        virtual_bytes: stat.vsize,
        start_time_seconds: boot_time + (stat.starttime as f64 / ticks) as u64,
        threads: stat.num_threads,
        open_fds: process.fd_count().ok(),
        max_fds,
    })
}

/// CPUs this process may use: the standard library already reads the
/// cgroup's quota and the affinity mask.
fn cpu_limit_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The smallest `memory.max` on the way from this process's cgroup up to the
/// root (a limit of a parent slice binds too), else the machine's memory.
fn memory_limit_bytes() -> Option<u64> {
    cgroup_memory_limit().or_else(|| procfs::Meminfo::current().ok().map(|info| info.mem_total))
}

fn cgroup_memory_limit() -> Option<u64> {
    let groups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let own = groups.lines().find_map(|line| line.strip_prefix("0::"))?;
    let mut dir = std::path::PathBuf::from(format!("{CGROUP_ROOT}{}", own.trim_end_matches('/')));
    let mut limit: Option<u64> = None;
    loop {
        // "max" (no limit) and a missing file (the root) do not parse.
        let here = std::fs::read_to_string(dir.join("memory.max")).ok().and_then(|text| text.trim().parse().ok());
        limit = match (limit, here) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if dir.as_os_str() == CGROUP_ROOT || !dir.pop() {
            return limit;
        }
    }
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn bytes(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        gauge(&mut encoder, "im_process_cpu_limit_cores", "CPUs this process may use", cpu_limit_cores() as i64)?;
        if let Some(limit) = memory_limit_bytes() {
            gauge(&mut encoder, "im_process_memory_limit_bytes", "Memory this process may use", bytes(limit))?;
        }
        let Some(reading) = read_process() else { return Ok(()) };
        let cpu = ConstCounter::new(reading.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        gauge(&mut encoder, "process_resident_memory_bytes", "Resident memory size", bytes(reading.resident_bytes))?;
        gauge(&mut encoder, "process_virtual_memory_bytes", "Virtual memory size", bytes(reading.virtual_bytes))?;
        gauge(
            &mut encoder,
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch",
            bytes(reading.start_time_seconds),
        )?;
        gauge(&mut encoder, "process_threads", "Threads of the process", reading.threads)?;
        if let Some(open) = reading.open_fds {
            gauge(&mut encoder, "process_open_fds", "Open file descriptors", open as i64)?;
        }
        if let Some(max) = reading.max_fds {
            gauge(&mut encoder, "process_max_fds", "Limit of open file descriptors", bytes(max))?;
        }
        Ok(())
    }
}
