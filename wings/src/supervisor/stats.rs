//! Live usage: every two seconds each running server's memory and CPU (its cgroups when
//! isolated, else its main process from `/proc`, read with the `procfs` crate and converted
//! with the kernel's own clock tick, `sysconf(_SC_CLK_TCK)`), and every thirty its
//! directory's size. Only the newest report per server waits for the panel ([`LatestStats`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use proto::node::v1::{Limits, ServerStats};

use super::launch::Launch;
use super::{DEFAULT_LIMITS, Supervisor};
use crate::beneath;

/// How often usage is reported.
const EVERY: Duration = Duration::from_secs(2);
/// Directory sizes are measured every this many reports.
const DISK_EVERY: u64 = 15;

/// The newest usage report per server, waiting to be sent: a bounded queue that keeps the
/// newest (one entry per server; a newer report replaces the one not yet sent).
#[derive(Default)]
pub struct LatestStats {
    waiting: Mutex<BTreeMap<String, ServerStats>>,
    ready: tokio::sync::Notify,
}

impl LatestStats {
    /// Keeps `stats` as its server's newest report.
    pub fn put(&self, stats: ServerStats) {
        self.lock().insert(stats.server_id.clone(), stats);
        self.ready.notify_one();
    }

    /// Takes every waiting report.
    pub fn take(&self) -> Vec<ServerStats> {
        std::mem::take(&mut *self.lock()).into_values().collect()
    }

    /// How many reports wait.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Resolves when a report was put since the last call.
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, ServerStats>> {
        // The map is always left whole.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<L: Launch> Supervisor<L> {
    /// Reports usage until Wings stops (see the module's documentation).
    pub(super) async fn report_stats(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(EVERY);
        let mut cpu_before: HashMap<String, u64> = HashMap::new();
        let mut disk: HashMap<String, u64> = HashMap::new();
        let mut round = 0u64;
        loop {
            ticker.tick().await;
            let running: Vec<(String, u32, Limits)> = self
                .lock()
                .iter()
                .filter_map(|(id, entry)| {
                    let limits = entry.slot.spec.as_ref().and_then(|s| s.limits);
                    let pid = entry.slot.run().pid()?;
                    Some((id.clone(), pid, limits.unwrap_or(DEFAULT_LIMITS)))
                })
                .collect();
            cpu_before.retain(|id, _| running.iter().any(|(r, _, _)| r == id));
            if round.is_multiple_of(DISK_EVERY) {
                let dirs: Vec<(String, PathBuf)> = running
                    .iter()
                    .map(|(id, _, _)| (id.clone(), self.server_dir(id)))
                    .collect();
                if let Ok(sizes) = tokio::task::spawn_blocking(move || {
                    dirs.into_iter()
                        .map(|(id, dir)| (id, dir_size(&dir).unwrap_or(0)))
                        .collect::<Vec<_>>()
                })
                .await
                {
                    disk = sizes.into_iter().collect();
                }
            }
            round += 1;
            for (id, pid, limits) in running {
                let (memory, cpu_ns) = match &self.isolation {
                    Some(cgroups) => cgroups.usage(&id),
                    None => process_usage(pid),
                };
                let cpu_percent = cpu_before.insert(id.clone(), cpu_ns).map_or(0.0, |before| {
                    cpu_ns.saturating_sub(before) as f64 / EVERY.as_nanos() as f64 * 100.0
                });
                self.stats.put(ServerStats {
                    server_id: id.clone(),
                    memory_bytes: memory,
                    memory_limit_bytes: limits.memory_bytes,
                    cpu_percent,
                    disk_bytes: disk.get(&id).copied().unwrap_or(0),
                    disk_limit_bytes: limits.disk_bytes,
                    at_unix_ms: crate::unix_ms(),
                });
            }
        }
    }
}

/// Resident memory (bytes) and CPU time used so far (ns) of one process; zeros when it is
/// gone.
fn process_usage(pid: u32) -> (u64, u64) {
    let Ok(process) = procfs::process::Process::new(pid as i32) else {
        return (0, 0);
    };
    let rss_kib = process.status().ok().and_then(|s| s.vmrss).unwrap_or(0);
    let ticks = process.stat().map_or(0, |s| s.utime + s.stime);
    (
        rss_kib * 1024,
        ticks_to_ns(ticks, procfs::ticks_per_second()),
    )
}

/// Clock ticks as nanoseconds, at `per_second` ticks a second.
fn ticks_to_ns(ticks: u64, per_second: u64) -> u64 {
    if per_second == 0 {
        return 0;
    }
    (u128::from(ticks) * 1_000_000_000 / u128::from(per_second))
        .try_into()
        .unwrap_or(u64::MAX)
}

/// The bytes of files under `dir`, walked by descriptor (links not followed); an error when
/// the tree cannot be measured (deeper than [`beneath::MAX_DEPTH`]). A missing directory
/// holds nothing. Blocking.
pub(super) fn dir_size(dir: &Path) -> std::io::Result<u64> {
    use std::os::fd::AsFd;
    match beneath::open_root(dir) {
        Ok(root) => beneath::disk_usage(root.as_fd()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// Why a server with `limits` may not start from `dir`, if it may not: over its disk quota,
/// or a tree that cannot be measured (which would otherwise hide what is under it). Blocking.
pub(super) fn over_quota(dir: &Path, limits: &Limits) -> Option<String> {
    if limits.disk_bytes == 0 {
        return None;
    }
    match dir_size(dir) {
        Ok(used) if used > limits.disk_bytes => Some(format!(
            "disk_quota: the server's directory holds {} MiB, over its {} MiB",
            used >> 20,
            limits.disk_bytes >> 20
        )),
        Ok(_) => None,
        Err(e) => Some(format!(
            "disk_quota: the server's directory cannot be measured ({e})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_follows_the_kernels_clock_tick() {
        assert_eq!(ticks_to_ns(150, 100), 1_500_000_000);
        assert_eq!(ticks_to_ns(250, 250), 1_000_000_000);
        assert_eq!(ticks_to_ns(7, 0), 0);
        // This process has used some CPU by now, and has a resident set.
        let busy = (0..2_000_000u64).fold(0u64, |a, b| a.wrapping_add(b * b));
        assert_ne!(busy, 1);
        let (rss, _) = process_usage(std::process::id());
        assert!(rss > 0, "a live process has resident memory");
        assert_eq!(process_usage(u32::MAX >> 1), (0, 0), "no such process");
    }
}
