//! Measurements over the recorded requests (windows, percentiles, recovery) and the printed
//! report: per scenario a table per window and a verdict per criterion, then a summary.

use crate::load::{Kind, Sample};
use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

/// A time window of a scenario, in seconds since its start; requests belong to the window
/// in which they were due to start.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub name: &'static str,
    pub from: f64,
    pub to: f64,
}

impl Window {
    pub fn new(name: &'static str, from: f64, to: f64) -> Self {
        Self { name, from, to }
    }

    pub fn contains(&self, s: &Sample) -> bool {
        s.start >= self.from && s.start < self.to
    }
}

/// Requests by status and their latencies.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub count: usize,
    pub failed: usize,
    pub by_status: BTreeMap<String, usize>,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

pub fn stats<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Stats {
    let mut s = Stats::default();
    let mut lat = Vec::new();
    for x in samples {
        s.count += 1;
        if !x.outcome.ok() {
            s.failed += 1;
        }
        *s.by_status.entry(x.outcome.label()).or_default() += 1;
        lat.push(x.latency);
    }
    lat.sort_by(f64::total_cmp);
    s.p50 = percentile(&lat, 0.50);
    s.p99 = percentile(&lat, 0.99);
    s.max = lat.last().copied().unwrap_or(0.0);
    s
}

/// Nearest-rank percentile of sorted values (0 when empty).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub fn in_window<'a>(samples: &'a [Sample], w: &Window) -> impl Iterator<Item = &'a Sample> {
    let w = *w;
    samples.iter().filter(move |s| w.contains(s))
}

/// Seconds from `from` until the first full second (sliding in 100 ms steps, up to `until`)
/// in which requests were started and none failed — and, with `within`, each answered
/// within that many seconds.
pub fn recovered_in(samples: &[Sample], from: f64, until: f64, within: Option<f64>) -> Option<f64> {
    let steps = ((until - from - 1.0) / 0.1).floor();
    if steps < 0.0 {
        return None;
    }
    (0..=steps as u32).find_map(|k| {
        let t = from + f64::from(k) * 0.1;
        let w = Window::new("", t, t + 1.0);
        let s = stats(in_window(samples, &w));
        let slow = within.is_some_and(|lim| s.max > lim);
        (s.count > 0 && s.failed == 0 && !slow).then_some(t - from)
    })
}

pub fn ms(secs: f64) -> String {
    let ms = secs * 1000.0;
    if ms >= 1000.0 {
        format!("{:.2}s", secs)
    } else if ms >= 10.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{ms:.1}ms")
    }
}

pub fn secs(d: f64) -> String {
    format!("{d:.1} s")
}

/// A criterion and its verdict.
#[derive(Debug, Clone)]
pub struct Criterion {
    pub name: String,
    pub pass: bool,
    pub detail: String,
}

impl Criterion {
    pub fn new(name: impl Into<String>, pass: bool, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            pass,
            detail: detail.into(),
        }
    }
}

/// What a scenario reports.
#[derive(Debug, Default)]
pub struct Report {
    pub windows: Vec<Window>,
    /// Lines printed after the table (detection, recovery, other measurements).
    pub notes: Vec<String>,
    pub criteria: Vec<Criterion>,
    /// Requests to show in the tables (some scenarios split them by kind).
    pub tables: Vec<(String, Vec<Sample>)>,
    /// Wall-clock time of t = 0 (to find the moments in the service logs).
    pub t0: String,
}

impl Report {
    pub fn note(&mut self, s: impl Into<String>) {
        self.notes.push(s.into());
    }

    pub fn check(&mut self, name: impl Into<String>, pass: bool, detail: impl Into<String>) {
        self.criteria.push(Criterion::new(name, pass, detail));
    }

    pub fn passed(&self) -> bool {
        self.criteria.iter().all(|c| c.pass)
    }
}

/// The table of one set of requests over the windows.
pub fn table(title: &str, samples: &[Sample], windows: &[Window]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "  {title}");
    let _ = writeln!(
        out,
        "    {:<8} {:>13} {:>6} {:>6}  {:<44} {:>8} {:>8} {:>8}",
        "window", "span (s)", "reqs", "failed", "by status", "p50", "p99", "max"
    );
    for w in windows {
        let s = stats(in_window(samples, w));
        let by = s
            .by_status
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(
            out,
            "    {:<8} {:>13} {:>6} {:>6}  {:<44} {:>8} {:>8} {:>8}",
            w.name,
            format!("{:.1}-{:.1}", w.from, w.to),
            s.count,
            s.failed,
            by,
            ms(s.p50),
            ms(s.p99),
            ms(s.max)
        );
    }
    out
}

pub fn kind_label(k: Kind) -> &'static str {
    match k {
        Kind::Read => "reads",
        Kind::Write => "sign-ups",
        Kind::Login => "owner sign-ins",
        Kind::Attack => "attacker sign-ins",
    }
}

/// The per-scenario block.
pub fn print_scenario(name: &str, title: &str, r: &Report, took: Duration) {
    let mut out = String::new();
    let _ = writeln!(out, "\n== {name}: {title} ({:.0} s)", took.as_secs_f64());
    if !r.t0.is_empty() {
        let _ = writeln!(out, "  times in s since {} UTC", r.t0);
    }
    for (t, samples) in &r.tables {
        out.push_str(&table(t, samples, &r.windows));
    }
    for n in &r.notes {
        let _ = writeln!(out, "  {n}");
    }
    for c in &r.criteria {
        let _ = writeln!(
            out,
            "  {}  {} — {}",
            if c.pass { "PASS" } else { "FAIL" },
            c.name,
            c.detail
        );
    }
    print!("{out}");
}

/// One line of the summary.
#[derive(Debug)]
pub struct Summary {
    pub name: String,
    pub verdict: &'static str,
    pub took: Duration,
    pub detail: String,
}

pub fn print_summary(rows: &[Summary], logs: &std::path::Path) {
    let mut out = String::new();
    let _ = writeln!(out, "\n== summary");
    let _ = writeln!(
        out,
        "  {:<18} {:<6} {:>6}  failed criteria",
        "scenario", "result", "time"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "  {:<18} {:<6} {:>5.0}s  {}",
            r.name,
            r.verdict,
            r.took.as_secs_f64(),
            r.detail
        );
    }
    let failed = rows.iter().filter(|r| r.verdict != "PASS").count();
    let _ = writeln!(
        out,
        "  {} of {} scenarios passed; service logs under {}",
        rows.len() - failed,
        rows.len(),
        logs.display()
    );
    // The plain closing line test runners print, for whoever reads the log's end.
    let _ = writeln!(
        out,
        "faults: {} passed, {failed} failed",
        rows.len() - failed
    );
    print!("{out}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Outcome;

    fn s(start: f64, latency: f64, status: u16) -> Sample {
        Sample {
            kind: Kind::Read,
            start,
            latency,
            outcome: Outcome::Status(status),
        }
    }

    #[test]
    fn percentiles_and_recovery() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        let samples: Vec<Sample> = (0..50)
            .map(|i| {
                let t = f64::from(i) * 0.1;
                s(t, 0.01, if t < 2.05 { 503 } else { 200 })
            })
            .collect();
        let r = recovered_in(&samples, 1.0, 5.0, None).unwrap();
        assert!((r - 1.1).abs() < 1e-6, "{r}");
        assert_eq!(recovered_in(&samples[..20], 0.0, 2.0, None), None);
    }
}
