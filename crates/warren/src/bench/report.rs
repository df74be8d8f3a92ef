//! The bench's results: collected durations, their percentiles, the targets from the issue,
//! and the two renderings (a table for people, JSON for tools).

use std::time::Duration;

use serde_json::{Value, json};

/// Targets the live path is held to (the naive path has none).
const TARGET_FREEZE_P50_MS: f64 = 100.0;
const TARGET_RESTORE_P50_MS: f64 = 100.0;
const TARGET_RESTORE_P99_MS: f64 = 250.0;
const TARGET_PSS_MIB: f64 = 48.0;
const TARGET_FORK8_S: f64 = 1.5;

/// Samples of one timed operation; failed runs are counted, not timed.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub samples: Vec<Duration>,
    pub failed: u32,
}

impl Summary {
    pub fn push(&mut self, d: Duration) {
        self.samples.push(d);
    }

    /// Nearest-rank percentile `p` (0..=100) in milliseconds.
    pub fn percentile_ms(&self, p: usize) -> Option<f64> {
        let mut ms: Vec<f64> = self.samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        if ms.is_empty() {
            return None;
        }
        ms.sort_by(f64::total_cmp);
        let rank = (p * ms.len()).div_ceil(100);
        Some(ms[rank.clamp(1, ms.len()) - 1])
    }

    fn to_json(&self) -> Value {
        json!({
            "samples_ms": self.samples.iter().map(|d| d.as_secs_f64() * 1e3).collect::<Vec<_>>(),
            "p50_ms": self.percentile_ms(50),
            "p99_ms": self.percentile_ms(99),
            "failed": self.failed,
        })
    }
}

/// How long the source was frozen, per path, for one guest memory state.
#[derive(Debug, Default, Clone)]
pub struct Freeze {
    pub live: Vec<Duration>,
    pub naive_default: Option<Duration>,
    pub naive_raised: Option<Duration>,
}

impl Freeze {
    fn live_summary(&self) -> Summary {
        Summary {
            samples: self.live.clone(),
            failed: 0,
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "live": self.live_summary().to_json(),
            "naive_default_bandwidth_ms": self.naive_default.map(ms),
            "naive_raised_bandwidth_ms": self.naive_raised.map(ms),
        })
    }
}

/// One fork of 8: wall time (only if all 8 came up) and idle PSS per clone.
#[derive(Debug, Default, Clone)]
pub struct Fork {
    pub wall: Option<Duration>,
    pub failed: u32,
    pub pss_mib: Option<f64>,
    /// How many clones the PSS mean is over.
    pub measured: usize,
}

impl Fork {
    fn to_json(&self) -> Value {
        json!({
            "wall_s": self.wall.map(|d| d.as_secs_f64()),
            "failed": self.failed,
            "pss_mib_per_clone": self.pss_mib,
            "pss_clones_measured": self.measured,
        })
    }
}

/// Everything one bench run measured.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub memory_mib: u64,
    pub vcpus: u32,
    pub runs: u32,
    pub snapshots: u32,
    /// QEMU's default `max-bandwidth`, bytes/s.
    pub default_bandwidth: u64,
    pub freeze_idle: Freeze,
    pub freeze_dirty: Freeze,
    /// The same two states for a source that was started from a snapshot (live path only).
    pub freeze_restored_idle: Freeze,
    pub freeze_restored_dirty: Freeze,
    pub restore_live: Summary,
    pub restore_naive: Summary,
    /// Live restores finished on a standby VM (QEMU already started).
    pub restore_standby: Summary,
    pub fork_live: Fork,
    pub fork_naive: Fork,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl Report {
    pub fn to_json(&self) -> Value {
        json!({
            "accel": "tcg",
            "memory_mib": self.memory_mib,
            "vcpus": self.vcpus,
            "runs": self.runs,
            "snapshots": self.snapshots,
            "naive_default_bandwidth_bytes_per_s": self.default_bandwidth,
            "freeze": {
                "idle": self.freeze_idle.to_json(),
                "dirty_256mib": self.freeze_dirty.to_json(),
                "restored_source_idle": self.freeze_restored_idle.to_json(),
                "restored_source_dirty_256mib": self.freeze_restored_dirty.to_json(),
            },
            "restore_to_agent": {
                "live": self.restore_live.to_json(),
                "naive": self.restore_naive.to_json(),
                "live_standby": self.restore_standby.to_json(),
            },
            "fork8": { "live": self.fork_live.to_json(), "naive": self.fork_naive.to_json() },
            "targets": {
                "freeze_p50_ms": TARGET_FREEZE_P50_MS,
                "restore_p50_ms": TARGET_RESTORE_P50_MS,
                "restore_p99_ms": TARGET_RESTORE_P99_MS,
                "pss_mib": TARGET_PSS_MIB,
                "fork8_s": TARGET_FORK8_S,
            },
        })
    }

    /// The table: one row per figure, live path, naive path, target, and whether it is met.
    pub fn table(&self) -> String {
        let mut rows: Vec<[String; 5]> = Vec::new();
        let mut row = |name: &str, live: Option<f64>, naive: String, target: f64, unit: &str| {
            let verdict = match live {
                Some(v) if v <= target => "ok",
                Some(_) => "MISSED",
                None => "no data",
            };
            rows.push([
                name.to_owned(),
                fmt(live, unit),
                naive,
                format!("≤ {target} {unit}"),
                verdict.to_owned(),
            ]);
        };
        for (label, f) in [
            ("idle", &self.freeze_idle),
            ("256 MiB dirty", &self.freeze_dirty),
            ("restored, idle", &self.freeze_restored_idle),
            ("restored, dirty", &self.freeze_restored_dirty),
        ] {
            let naive = format!(
                "{} / {}",
                fmt(f.naive_default.map(ms), "ms"),
                fmt(f.naive_raised.map(ms), "ms")
            );
            let p50 = f.live_summary().percentile_ms(50);
            row(
                &format!("(a) freeze p50, {label}"),
                p50,
                naive,
                TARGET_FREEZE_P50_MS,
                "ms",
            );
        }
        let (l, n) = (&self.restore_live, &self.restore_naive);
        let p50_naive = fmt(n.percentile_ms(50), "ms");
        let p99_naive = fmt(n.percentile_ms(99), "ms");
        row(
            "(b) create p50",
            l.percentile_ms(50),
            p50_naive,
            TARGET_RESTORE_P50_MS,
            "ms",
        );
        row(
            "(b) create p99",
            l.percentile_ms(99),
            p99_naive,
            TARGET_RESTORE_P99_MS,
            "ms",
        );
        let s = &self.restore_standby;
        row(
            "(b) create p50, standby VM",
            s.percentile_ms(50),
            "—".to_owned(),
            TARGET_RESTORE_P50_MS,
            "ms",
        );
        row(
            "(b) create p99, standby VM",
            s.percentile_ms(99),
            "—".to_owned(),
            TARGET_RESTORE_P99_MS,
            "ms",
        );
        let (fl, fnv) = (&self.fork_live, &self.fork_naive);
        row(
            "(c) PSS per idle clone",
            fl.pss_mib,
            fmt(fnv.pss_mib, "MiB"),
            TARGET_PSS_MIB,
            "MiB",
        );
        let wall = |f: &Fork| f.wall.map(|d| d.as_secs_f64());
        row(
            "(d) fork 8",
            wall(fl),
            fmt(wall(fnv), "s"),
            TARGET_FORK8_S,
            "s",
        );

        let header = ["figure", "live", "naive QEMU", "target (live)", ""];
        let widths: Vec<usize> = (0..5)
            .map(|i| {
                rows.iter()
                    .map(|r| r[i].chars().count())
                    .chain([header[i].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: [&str; 5]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
                .collect();
            padded.join("  ").trim_end().to_owned()
        };
        let mut out = vec![line(header)];
        for r in &rows {
            out.push(line([r[0].as_str(), &r[1], &r[2], &r[3], &r[4]]));
        }
        out.push(String::new());
        let notes = [
            format!(
                "{} MiB guests, {} vCPUs, TCG. Freeze: {} live snapshot(s) per state; naive = \
                 stop + migrate to a file + cont, default ({} MiB/s) / raised bandwidth cap.",
                self.memory_mib,
                self.vcpus,
                self.snapshots,
                self.default_bandwidth >> 20
            ),
            format!(
                "Create: {} runs per path, overlay creation included; failed runs: live {}, \
                 naive {}, standby {}. Fork 8 failed clones: live {}, naive {}.",
                self.runs, l.failed, n.failed, s.failed, fl.failed, fnv.failed
            ),
            "Standby VM: QEMU started, its device state loaded and its guest warmed up (run \
                until the agent answered, then paused) beforehand, as `warren serve` keeps one \
                per recently used snapshot; timed from resuming the guest to the agent's answer."
                .to_owned(),
        ];
        for note in &notes {
            out.extend(wrap(note, NOTE_WIDTH));
        }
        out.join("\n")
    }
}

/// Width of the notes under the table, so that the table pasted into a README stays within
/// its line length.
const NOTE_WIDTH: usize = 92;

/// Splits `text` into lines of at most `width` characters at spaces (a longer word gets a
/// line of its own).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

fn fmt(v: Option<f64>, unit: &str) -> String {
    match v {
        Some(v) if unit == "s" => format!("{v:.2} s"),
        Some(v) => format!("{v:.1} {unit}"),
        None => "—".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_wrap_at_spaces_within_the_width() {
        let lines = wrap("aaa bbb ccc dddddddddd e", 7);
        assert_eq!(lines, ["aaa bbb", "ccc", "dddddddddd", "e"]);
        assert!(wrap("", 7).is_empty());
    }

    #[test]
    fn nearest_rank_percentiles() {
        let mut s = Summary::default();
        assert_eq!(s.percentile_ms(50), None);
        for ms in [30, 10, 20, 40] {
            s.push(Duration::from_millis(ms));
        }
        assert_eq!(s.percentile_ms(50), Some(20.0));
        assert_eq!(s.percentile_ms(99), Some(40.0));
        assert_eq!(s.percentile_ms(0), Some(10.0));
    }

    #[test]
    fn table_judges_the_live_figures_against_the_targets() {
        let mut r = Report::default();
        r.restore_live.push(Duration::from_millis(80));
        r.restore_live.push(Duration::from_millis(300));
        r.fork_live.pss_mib = Some(60.0);
        let table = r.table();
        let line = |prefix: &str| {
            table
                .lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_default()
                .to_owned()
        };
        assert!(line("(b) create p50").ends_with("ok"), "{table}");
        assert!(line("(b) create p99").ends_with("MISSED"), "{table}");
        assert!(line("(c) PSS").ends_with("MISSED"), "{table}");
        assert!(line("(d) fork 8").ends_with("no data"), "{table}");
        let json = r.to_json();
        assert_eq!(json["restore_to_agent"]["live"]["p99_ms"], 300.0);
    }
}
