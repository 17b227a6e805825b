//! The standard Prometheus process metrics (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_open_fds`, …), read from
//! `/proc/self` at each scrape, and the limits they are judged against
//! (`im_process_cpu_limit_cores`, `im_process_memory_limit_bytes`), so an
//! alert can say "70 % of the CPU this process may use" without knowing the
//! container it runs in.
//!
//! On a system without `/proc` the metrics are absent, not zero: a zero
//! would read as an idle process.

use std::path::{Path, PathBuf};

use procfs::Current;
use procfs::process::{LimitValue, Process};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Where the cgroup hierarchies are mounted (v2: itself; v1: one directory
/// per controller, such as `memory` or `cpu,cpuacct`).
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

/// CPUs this process may use: the tightest CPU quota of its cgroups (1.5
/// for a 1500m Kubernetes limit), else the cores it may run on.
fn cpu_limit_cores() -> f64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let quota = cgroup_limit(
        ("cpu.max", |text| {
            let (quota, period) = text.split_once(' ')?;
            Some(quota.parse::<f64>().ok()? / period.trim().parse::<f64>().ok()?)
        }),
        ("cpu", |dir| {
            let quota: f64 = read_trimmed(&dir.join("cpu.cfs_quota_us"))?.parse().ok()?;
            let period: f64 = read_trimmed(&dir.join("cpu.cfs_period_us"))?.parse().ok()?;
            (quota > 0.0 && period > 0.0).then(|| quota / period)
        }),
    );
    quota.map_or(cores, |quota| quota.min(cores))
}

/// The tightest memory limit of this process's cgroups, else (and at most)
/// the machine's memory.
fn memory_limit_bytes() -> Option<u64> {
    let machine = procfs::Meminfo::current().ok().map(|info| info.mem_total);
    let cgroup = cgroup_limit(
        ("memory.max", |text| text.parse().ok()),
        ("memory", |dir| read_trimmed(&dir.join("memory.limit_in_bytes"))?.parse().ok()),
    )
    .map(|limit| limit as u64);
    match (cgroup, machine) {
        (Some(cgroup), Some(machine)) => Some(cgroup.min(machine)),
        (cgroup, machine) => cgroup.or(machine),
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|text| text.trim().to_owned())
}

/// The smallest limit on the way from this process's cgroup up to the root
/// (a parent slice's limit binds too). cgroup v2: `v2.0` in each directory
/// of the unified hierarchy, parsed by `v2.1` ("max" — no limit — does not
/// parse). cgroup v1: the hierarchy of controller `v1.0`, each directory read
/// by `v1.1`. `/proc/self/cgroup` names the path: `0::/system.slice/x.service`
/// (v2), `4:memory:/…` or `2:cpu,cpuacct:/…` (v1); `/` in a container with
/// its own cgroup namespace.
/// Reads one cgroup directory's limit.
type LimitReader<'a> = Box<dyn Fn(&Path) -> Option<f64> + 'a>;

fn cgroup_limit(v2: (&str, fn(&str) -> Option<f64>), v1: (&str, fn(&Path) -> Option<f64>)) -> Option<f64> {
    let groups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let (v2_file, parse_v2) = v2;
    let (controller, read_v1) = v1;
    let (root, own, read): (PathBuf, &str, LimitReader<'_>) =
        if let Some(own) = groups.lines().find_map(|line| line.strip_prefix("0::")) {
            let read = move |dir: &Path| read_trimmed(&dir.join(v2_file)).and_then(|text| parse_v2(&text));
            (PathBuf::from(CGROUP_ROOT), own, Box::new(read))
        } else {
            let own = groups.lines().find_map(|line| {
                let (controllers, path) = line.split_once(':')?.1.split_once(':')?;
                controllers.split(',').any(|c| c == controller).then_some(path)
            })?;
            let mount = std::fs::read_dir(CGROUP_ROOT).ok()?.flatten().find_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                name.split(',').any(|c| c == controller).then(|| entry.path())
            })?;
            (mount, own, Box::new(read_v1))
        };
    let mut dir = root.join(own.trim_start_matches('/'));
    let mut limit: Option<f64> = None;
    loop {
        if let Some(here) = read(&dir) {
            limit = Some(limit.map_or(here, |limit| limit.min(here)));
        }
        if dir == root || !dir.pop() {
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
        let cores = ConstGauge::new(cpu_limit_cores());
        cores.encode(encoder.encode_descriptor(
            "im_process_cpu_limit_cores",
            "CPUs this process may use",
            None,
            cores.metric_type(),
        )?)?;
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
