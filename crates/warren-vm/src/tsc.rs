//! The host's TSC frequency, for the guest's `tsc_early_khz=`. Without it one TCG boot in
//! three hung calibrating the TSC (see architecture.md). Sources, best first: the kernel's
//! sysfs value (present on some kernels), `/proc/cpuinfo`'s "cpu MHz" when the CPU reports
//! `tsc_known_freq` (then that figure is the TSC's), and a 20 ms measurement against
//! `CLOCK_MONOTONIC_RAW`.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The host TSC frequency in kHz, computed once per process. `None` off x86_64.
pub fn host_tsc_khz() -> Option<u64> {
    static KHZ: OnceLock<Option<u64>> = OnceLock::new();
    *KHZ.get_or_init(|| {
        let khz = from_sysfs().or_else(from_cpuinfo).or_else(measure);
        tracing::debug!(?khz, "host TSC frequency");
        khz
    })
}

fn from_sysfs() -> Option<u64> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/tsc_freq_khz").ok()?;
    text.trim().parse().ok().filter(|&k| k > 0)
}

fn from_cpuinfo() -> Option<u64> {
    parse_cpuinfo(&std::fs::read_to_string("/proc/cpuinfo").ok()?)
}

/// "cpu MHz : 2596.128" → 2596128, only when the flags include `tsc_known_freq`.
pub(crate) fn parse_cpuinfo(text: &str) -> Option<u64> {
    let first_cpu = text.split("\n\n").next()?;
    let field = |name: &str| {
        first_cpu.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim())
        })
    };
    let flags = field("flags")?;
    if !flags.split_whitespace().any(|f| f == "tsc_known_freq") {
        return None;
    }
    let mhz = field("cpu MHz")?;
    let (int, frac) = mhz.split_once('.').unwrap_or((mhz, "0"));
    let frac: String = frac.chars().chain(std::iter::repeat('0')).take(3).collect();
    Some(int.parse::<u64>().ok()? * 1000 + frac.parse::<u64>().ok()?)
}

#[cfg(target_arch = "x86_64")]
fn measure() -> Option<u64> {
    // SAFETY: RDTSC has no memory effects; every x86_64 CPU implements it.
    let read = || unsafe { core::arch::x86_64::_rdtsc() };
    let start = Instant::now();
    let t0 = read();
    std::thread::sleep(Duration::from_millis(20));
    let t1 = read();
    let nanos = start.elapsed().as_nanos();
    let khz = u128::from(t1.wrapping_sub(t0)) * 1_000_000 / nanos.max(1);
    u64::try_from(khz).ok().filter(|&k| k > 0)
}

#[cfg(not(target_arch = "x86_64"))]
fn measure() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_needs_known_frequency() {
        let known = "processor\t: 0\ncpu MHz\t\t: 2596.128\nflags\t\t: fpu tsc tsc_known_freq\n\n";
        assert_eq!(parse_cpuinfo(known), Some(2_596_128));
        let unknown = "processor\t: 0\ncpu MHz\t\t: 1800.5\nflags\t\t: fpu tsc\n";
        assert_eq!(parse_cpuinfo(unknown), None);
    }

    #[test]
    fn host_value_is_plausible() {
        let khz = host_tsc_khz().expect("x86_64 host");
        assert!((100_000..10_000_000).contains(&khz), "{khz} kHz");
    }
}
