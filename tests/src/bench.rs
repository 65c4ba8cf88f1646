//! Shared bits of the load binaries: the heading that says what machine a table came from,
//! and percentiles.

/// `"<title>: N cores, loopback, release build"`.
pub fn heading(title: &str) -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    format!("{title}: {cores} cores, loopback, {profile} build")
}

/// The `p`th percentile (0–100) of an ascending slice; 0 when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
