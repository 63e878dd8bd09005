//! A cheap monotonic clock for timeouts and freshness counted in seconds.

/// Milliseconds since an arbitrary start; never 0 (0 means "unset" to callers).
///
/// On Linux the kernel's coarse monotonic clock: it advances once per tick (a few ms, plenty
/// for timeouts counted in seconds) and reading it costs no TSC read with its barriers. It is
/// read several times per request.
#[cfg(target_os = "linux")]
pub fn now_ms() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    t.tv_sec as u64 * 1_000 + t.tv_nsec as u64 / 1_000_000 + 1
}

/// Milliseconds since an arbitrary process-wide start; never 0 (0 means "unset" to callers).
#[cfg(not(target_os = "linux"))]
pub fn now_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(std::time::Instant::now);
    start.elapsed().as_millis() as u64 + 1
}

#[cfg(test)]
mod tests {
    #[test]
    fn never_zero_and_never_goes_back() {
        let a = super::now_ms();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let b = super::now_ms();
        assert!(a > 0 && b >= a + 10, "{a} then {b}");
    }
}
