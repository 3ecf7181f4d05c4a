//! The fault scenarios. Each runs on a freshly started platform: load on the gateway
//! before, during and after one fault, then its criteria.

use crate::{
    load::{self, Kind, Load, LoadSpec, Outcome, Recorder, Sample, Users},
    platform::{Admin, Options, Platform, Settings, Svc, handled_calls},
    report::{Report, Window, in_window, kind_label, ms, recovered_in, secs, stats},
};
use anyhow::{Context as _, bail};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use plt_testkit::{FaultProxy, Mode};
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};
use uuid::Uuid;

/// Latency bound for answers while a dependency is down (after the first second).
const FAST: f64 = 0.050;
/// Recovery bound after a fault ends.
const RECOVERY: f64 = 5.0;
/// An answer slower than this does not count towards recovery.
const SLOW: f64 = 1.0;

/// Names, in the order they run.
pub const NAMES: [&str; 10] = [
    "rolling-restart",
    "sigkill",
    "registry-down",
    "db-refused",
    "db-silent",
    "redis-down",
    "redis-silent",
    "identity-down",
    "key-rotation",
    "password-spraying",
];

/// The run's parameters.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub settings: Settings,
    pub quick: bool,
    /// Requests per second of the load.
    pub rate: f64,
}

impl Ctx {
    /// `quick` seconds with --quick, else `full` (the full durations).
    fn secs(&self, quick: f64, full: f64) -> f64 {
        if self.quick { quick } else { full }
    }

    fn before(&self) -> f64 {
        self.secs(3.0, 10.0)
    }

    fn after(&self) -> f64 {
        self.secs(6.0, 20.0)
    }

    fn fault(&self, name: &str) -> f64 {
        match name {
            "registry-down" => self.secs(8.0, 60.0),
            "db-refused" | "db-silent" | "password-spraying" => self.secs(5.0, 10.0),
            "redis-down" | "redis-silent" | "identity-down" => self.secs(5.0, 30.0),
            _ => 0.0,
        }
    }
}

pub fn title(ctx: &Ctx, name: &str) -> String {
    let f = ctx.fault(name);
    match name {
        "rolling-restart" => "two identity instances, each SIGTERMed and replaced in turn".into(),
        "sigkill" => "one of two identity instances SIGKILLed".into(),
        "registry-down" => format!("etcd stopped for {f:.0} s, then restarted on its data"),
        "db-refused" => format!("PostgreSQL refuses connections for {f:.0} s (proxy Refuse)"),
        "db-silent" => format!("PostgreSQL silent for {f:.0} s (proxy drops packets)"),
        "redis-down" => format!("Redis refuses connections for {f:.0} s (proxy Refuse)"),
        "redis-silent" => format!("Redis silent for {f:.0} s (proxy drops packets)"),
        "identity-down" => format!("all identity instances SIGKILLed for {f:.0} s, then started"),
        "key-rotation" => "auth-service keys rotate under load".into(),
        "password-spraying" => {
            format!("failed sign-ins from 127.0.0.2 as fast as possible for {f:.0} s")
        }
        _ => name.into(),
    }
}

fn options(name: &str) -> Options {
    Options {
        identity_instances: match name {
            "rolling-restart" | "sigkill" | "identity-down" => 2,
            _ => 1,
        },
        // Password spraying meets the gateway's real limits; everything else must never be
        // rate-limited by the suite's own load.
        raise_rate_limits: name != "password-spraying",
    }
}

/// Runs one scenario on its own platform and tears the platform down, whatever happened.
pub async fn run(ctx: &Ctx, name: &str) -> anyhow::Result<Report> {
    let opts = options(name);
    let mut p = Platform::new(&ctx.settings, name, opts).await?;
    let result = match p.boot(opts).await {
        Ok(()) => match name {
            "rolling-restart" => rolling_restart(ctx, &mut p).await,
            "sigkill" => sigkill(ctx, &mut p).await,
            "registry-down" => registry_down(ctx, &mut p).await,
            "db-refused" => db_fault(ctx, &mut p, Mode::Refuse).await,
            "db-silent" => db_fault(ctx, &mut p, Mode::Silent).await,
            "redis-down" => redis_fault(ctx, &mut p, Mode::Refuse).await,
            "redis-silent" => redis_fault(ctx, &mut p, Mode::Silent).await,
            "identity-down" => identity_down(ctx, &mut p).await,
            "key-rotation" => key_rotation(ctx, &mut p).await,
            "password-spraying" => password_spraying(ctx, &mut p).await,
            other => Err(anyhow::anyhow!("unknown scenario {other}")),
        },
        Err(e) => Err(e.context("starting the platform")),
    };
    p.shutdown().await;
    result
}

/// Switches a fault proxy, saying so.
fn switch(proxy: &FaultProxy, name: &str, mode: Mode) {
    println!("    [{name}] proxy -> {}", mode.name());
    proxy.set(mode);
}

async fn sleep(secs: f64) {
    tokio::time::sleep(Duration::from_secs_f64(secs.max(0.0))).await;
}

/// Retries `f` until Ok or 15 s have passed (the platform settling after its start).
async fn settle<T, F, Fut>(what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Outcome>>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(o) if Instant::now() > deadline => bail!("{what}: {}", o.label()),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The load of a scenario: the admin's token, a few users, the generator.
struct Session {
    rec: Recorder,
    users: Users,
    load: Load,
    http: reqwest::Client,
    token: String,
    gateway: SocketAddr,
}

impl Session {
    async fn start(ctx: &Ctx, p: &Platform) -> anyhow::Result<Self> {
        let http = load::client(None)?;
        let gateway = p.gateway();
        let admin = p.admin()?.clone();
        let token = settle("the admin's sign-in", || {
            load::login(&http, gateway, &admin.email, &admin.password, None)
        })
        .await?;
        let users = Users::default();
        users.add(admin.id);
        let tag = format!(
            "{}-{}",
            ctx.settings.tag,
            &Uuid::new_v4().simple().to_string()[..6]
        );
        const SEEDS: u64 = 5;
        for n in 0..SEEDS {
            let (email, password) = load::new_user(&tag, n);
            let id = settle("a seed user's sign-up", || {
                load::sign_up(&http, gateway, &email, &password)
            })
            .await?;
            users.add(id);
        }
        // The admin's token must work for reads before the clock starts.
        settle("the first read", || async {
            match load::get_user(&http, gateway, &token, admin.id).await {
                Outcome::Status(200) => Ok(()),
                o => Err(o),
            }
        })
        .await?;
        let rec = Recorder::new();
        let load = Load::start(
            LoadSpec {
                gateway,
                rate: ctx.rate,
                write_every: 20,
                token: token.clone(),
                tag,
            },
            http.clone(),
            users.clone(),
            rec.clone(),
            SEEDS,
        );
        Ok(Self {
            rec,
            users,
            load,
            http,
            token,
            gateway,
        })
    }

    /// Stops the load and checks that every acknowledged write can be read back.
    async fn finish(self, r: &mut Report) -> Vec<Sample> {
        self.load.stop().await;
        let ids = self.users.all();
        let problems = unreadable(&self.http, self.gateway, &self.token, &ids).await;
        r.check(
            "no acknowledged write lost",
            problems.is_empty(),
            if problems.is_empty() {
                format!("all {} acknowledged users read back (200)", ids.len())
            } else {
                format!(
                    "{} of {} not readable: {}",
                    problems.len(),
                    ids.len(),
                    abbreviate(&problems, 5)
                )
            },
        );
        self.rec.samples()
    }
}

/// Users that cannot be read back (a few attempts each, unless 404: lost).
async fn unreadable(
    http: &reqwest::Client,
    gateway: SocketAddr,
    token: &str,
    ids: &[Uuid],
) -> Vec<String> {
    let sem = Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = tokio::task::JoinSet::new();
    for &id in ids {
        let (http, token, sem) = (http.clone(), token.to_owned(), sem.clone());
        tasks.spawn(async move {
            let _permit = sem.acquire().await;
            let mut last = Outcome::Status(0);
            for attempt in 0..3 {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                last = load::get_user(&http, gateway, &token, id).await;
                if matches!(last, Outcome::Status(200 | 404)) {
                    break;
                }
            }
            match last {
                Outcome::Status(200) => None,
                o => Some(format!("{id}: {}", o.label())),
            }
        });
    }
    let mut out = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Ok(Some(p)) = r {
            out.push(p);
        }
    }
    out
}

fn abbreviate(items: &[String], n: usize) -> String {
    let mut s = items.iter().take(n).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > n {
        s.push_str(&format!(", … ({} more)", items.len() - n));
    }
    s
}

fn by_status<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> String {
    let st = stats(samples);
    if st.count == 0 {
        return "none".into();
    }
    st.by_status
        .iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn failures<'a>(samples: &'a [Sample], w: &Window) -> Vec<&'a Sample> {
    in_window(samples, w).filter(|s| !s.outcome.ok()).collect()
}

fn zero_failures(r: &mut Report, what: &str, samples: &[Sample], w: &Window) {
    let failed = failures(samples, w);
    let total = in_window(samples, w).count();
    r.check(
        format!("0 failed requests {what}"),
        failed.is_empty(),
        if failed.is_empty() {
            format!("{total} requests, none failed")
        } else {
            format!(
                "{} of {total} failed ({}), first due at {:.2} s",
                failed.len(),
                by_status(failed.iter().copied()),
                failed[0].start
            )
        },
    );
}

fn recovery(r: &mut Report, samples: &[Sample], from: f64, until: f64, extra: Option<String>) {
    let (note, strict) = recovery_note(r, samples, from, until);
    let mut detail = note;
    if let Some(e) = &extra {
        detail.push_str(&format!("; {e}"));
    }
    r.check(
        format!("recovery within {RECOVERY:.0} s of the fault's end, without a restart"),
        strict.is_some_and(|t| t <= RECOVERY) && extra.is_none(),
        detail,
    );
}

/// Notes the recovery: the first full second without failures (the criterion's definition),
/// and the first in which, further, every answer came within `SLOW` (answers that succeed
/// only after seconds are not a recovered service). Returns the note and the latter.
fn recovery_note(
    r: &mut Report,
    samples: &[Sample],
    from: f64,
    until: f64,
) -> (String, Option<f64>) {
    let show = |t: Option<f64>| t.map(secs).unwrap_or_else(|| "never".into());
    let plain = recovered_in(samples, from, until, None);
    let strict = recovered_in(samples, from, until, Some(SLOW));
    let note = format!(
        "recovered in: {} (first full second without failures); {} (… and every answer within {})",
        show(plain),
        show(strict),
        ms(SLOW)
    );
    r.note(note.clone());
    (note, strict)
}

/// `p99` of the reads due in the fault window after its first second. Sign-ups are shown
/// beside it but not judged: each spends an Argon2id hash (tens of milliseconds by design),
/// so their p99 is above the bound without any fault.
fn fast_answers(r: &mut Report, samples: &[Sample], f0: f64, f1: f64) {
    let w = Window::new("", f0 + 1.0, f1);
    let of = |kind: Kind| stats(in_window(samples, &w).filter(move |x| x.kind == kind));
    let reads = of(Kind::Read);
    let writes = of(Kind::Write);
    let before =
        stats(in_window(samples, &Window::new("", 0.0, f0)).filter(|x| x.kind == Kind::Write));
    r.check(
        format!(
            "reads' p99 ≤ {} during the fault after its first second",
            ms(FAST)
        ),
        reads.count > 0 && reads.p99 <= FAST,
        format!(
            "reads due {:.1}-{:.1} s: p99 {} (p50 {}, max {}) over {}; sign-ups (not judged): p99 {} over {} (before the fault: {})",
            w.from,
            w.to,
            ms(reads.p99),
            ms(reads.p50),
            ms(reads.max),
            reads.count,
            ms(writes.p99),
            writes.count,
            ms(before.p99)
        ),
    );
}

/// The recorded requests split by kind, for the tables.
fn by_kind(samples: Vec<Sample>) -> Vec<(String, Vec<Sample>)> {
    [Kind::Read, Kind::Write, Kind::Login, Kind::Attack]
        .into_iter()
        .map(|k| {
            let v: Vec<Sample> = samples.iter().filter(|x| x.kind == k).cloned().collect();
            (kind_label(k).to_owned(), v)
        })
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

/// Failures within the fault window are 503 only; also notes when the first 503 came.
fn only_503(r: &mut Report, samples: &[Sample], w: &Window) {
    let failed = failures(samples, w);
    let bad: Vec<&Sample> = failed
        .iter()
        .copied()
        .filter(|s| s.outcome != Outcome::Status(503))
        .collect();
    let first_503 = in_window(samples, w)
        .filter(|s| s.outcome == Outcome::Status(503))
        .map(Sample::end)
        .min_by(f64::total_cmp);
    r.note(match first_503 {
        Some(t) => format!("detected after: {} (first 503 answered)", secs(t - w.from)),
        None => "detected after: — (no 503 answered during the fault)".into(),
    });
    r.check(
        "failures during the fault are 503 (never 500, never a hang)",
        bad.is_empty(),
        format!(
            "{} of {} requests failed: {}",
            failed.len(),
            in_window(samples, w).count(),
            by_status(failed.iter().copied())
        ),
    );
}

fn standard_windows(end: f64, f0: f64, f1: f64) -> Vec<Window> {
    vec![
        Window::new("before", 0.0, f0),
        Window::new("during", f0, f1),
        Window::new("after", f1, end.max(f1)),
    ]
}

fn crashed_note(p: &mut Platform) -> Option<String> {
    let crashed = p.crashed();
    (!crashed.is_empty()).then(|| format!("restart needed: {}", crashed.join(", ")))
}

// ---------------------------------------------------------------------------------------

async fn rolling_restart(ctx: &Ctx, p: &mut Platform) -> anyhow::Result<Report> {
    let mut r = Report::default();
    let s = Session::start(ctx, p).await?;
    r.t0 = s.rec.started_at();
    sleep(ctx.before()).await;
    let f0 = s.rec.now();
    for name in p.names(Svc::Identity) {
        let t = Instant::now();
        let status = p.stop(&name, "TERM", Duration::from_secs(40)).await?;
        let stopped = t.elapsed();
        let new = p.spawn(Svc::Identity, &[]).await?;
        r.note(format!(
            "{name}: SIGTERM → exited ({status}) in {}; {new} ready and registered {} later",
            ms(stopped.as_secs_f64()),
            ms(t.elapsed().as_secs_f64() - stopped.as_secs_f64())
        ));
    }
    let f1 = s.rec.now();
    sleep(ctx.after()).await;
    let end = s.rec.now();
    let samples = s.finish(&mut r).await;
    r.windows = standard_windows(end, f0, f1);
    recovery_note(&mut r, &samples, f1, end);
    zero_failures(
        &mut r,
        "(whole run)",
        &samples,
        &Window::new("", 0.0, f64::MAX),
    );
    r.tables.extend(by_kind(samples));
    Ok(r)
}

async fn sigkill(ctx: &Ctx, p: &mut Platform) -> anyhow::Result<Report> {
    let mut r = Report::default();
    let s = Session::start(ctx, p).await?;
    r.t0 = s.rec.started_at();
    sleep(ctx.before()).await;
    let victim = p
        .names(Svc::Identity)
        .first()
        .cloned()
        .context("no identity")?;
    let tk = s.rec.now();
    p.stop(&victim, "KILL", Duration::from_secs(10)).await?;
    r.note(format!("{victim} SIGKILLed at {tk:.2} s"));
    sleep(ctx.after()).await;
    let end = s.rec.now();
    let samples = s.finish(&mut r).await;
    recovery_note(&mut r, &samples, tk, end);
    let in_flight = samples
        .iter()
        .filter(|x| x.start < tk && x.end() > tk)
        .count();
    let failed: Vec<&Sample> = samples.iter().filter(|x| !x.outcome.ok()).collect();
    let late: Vec<&Sample> = failed
        .iter()
        .copied()
        .filter(|x| x.start > tk + 1.0)
        .collect();
    r.check(
        "failures ≤ requests in flight at the kill",
        failed.len() <= in_flight,
        format!(
            "{} failed ({}), {in_flight} in flight at the kill",
            failed.len(),
            by_status(failed.iter().copied())
        ),
    );
    r.check(
        "no failed request started > 1 s after the kill",
        late.is_empty(),
        if late.is_empty() {
            "none".to_owned()
        } else {
            format!(
                "{} ({}), the last due at {:.2} s",
                late.len(),
                by_status(late.iter().copied()),
                late.last().map(|x| x.start).unwrap_or_default()
            )
        },
    );
    r.windows = standard_windows(end, tk, tk + 1.0);
    r.tables.extend(by_kind(samples));
    Ok(r)
}

async fn registry_down(ctx: &Ctx, p: &mut Platform) -> anyhow::Result<Report> {
    let mut r = Report::default();
    let s = Session::start(ctx, p).await?;
    r.t0 = s.rec.started_at();
    sleep(ctx.before()).await;
    let f0 = s.rec.now();
    p.etcd.stop().await?;
    sleep(ctx.fault("registry-down") - (s.rec.now() - f0)).await;
    p.etcd.restart().await?;
    let f1 = s.rec.now();
    r.note(format!(
        "etcd stopped at {f0:.1} s, answering again at {f1:.1} s"
    ));
    // Watch the registrations come back (or not) while the load goes on.
    let after = ctx.after().max(12.0);
    let mut first_complete: Option<f64> = None;
    let mut missing_polls = 0;
    let mut polls = 0;
    while s.rec.now() < f1 + after {
        polls += 1;
        match p.unregistered().await {
            Ok(m) if m.is_empty() => {
                first_complete.get_or_insert(s.rec.now() - f1);
            }
            _ => missing_polls += 1,
        }
        sleep(0.5).await;
    }
    let missing = p
        .unregistered()
        .await
        .unwrap_or_else(|e| vec![format!("etcd: {e}")]);
    r.note(format!(
        "registrations after the restart: {} of {polls} polls (every 0.5 s) found an instance missing; all present first at {}",
        missing_polls,
        first_complete.map(secs).unwrap_or_else(|| "never".into())
    ));
    let end = s.rec.now();
    let samples = s.finish(&mut r).await;
    recovery_note(&mut r, &samples, f1, end);
    zero_failures(
        &mut r,
        "while etcd is down",
        &samples,
        &Window::new("", f0, f1),
    );
    zero_failures(
        &mut r,
        "after the restart",
        &samples,
        &Window::new("", f1, f64::MAX),
    );
    r.check(
        format!("every instance registered in etcd {after:.0} s after its restart"),
        missing.is_empty(),
        if missing.is_empty() {
            format!("all {} instances present", p.procs.len())
        } else {
            format!("missing: {}", missing.join(", "))
        },
    );
    r.windows = standard_windows(end, f0, f1);
    r.tables.extend(by_kind(samples));
    Ok(r)
}

async fn db_fault(ctx: &Ctx, p: &mut Platform, mode: Mode) -> anyhow::Result<Report> {
    let mut r = Report::default();
    let name = if mode == Mode::Refuse {
        "db-refused"
    } else {
        "db-silent"
    };
    let s = Session::start(ctx, p).await?;
    r.t0 = s.rec.started_at();
    sleep(ctx.before()).await;
    let f0 = s.rec.now();
    switch(&p.pg, "postgres", mode);
    sleep(ctx.fault(name)).await;
    switch(&p.pg, "postgres", Mode::Pass);
    let f1 = s.rec.now();
    sleep(ctx.after()).await;
    let end = s.rec.now();
    let crashed = crashed_note(p);
    let samples = s.finish(&mut r).await;
    let during = Window::new("during", f0, f1);
    only_503(&mut r, &samples, &during);
    fast_answers(&mut r, &samples, f0, f1);
    recovery(&mut r, &samples, f1, end, crashed);
    r.windows = standard_windows(end, f0, f1);
    r.tables.extend(by_kind(samples));
    Ok(r)
}

async fn redis_fault(ctx: &Ctx, p: &mut Platform, mode: Mode) -> anyhow::Result<Report> {
    let mut r = Report::default();
    let name = if mode == Mode::Refuse {
        "redis-down"
    } else {
        "redis-silent"
    };
    let s = Session::start(ctx, p).await?;
    r.t0 = s.rec.started_at();
    sleep(ctx.before()).await;
    let f0 = s.rec.now();
    switch(&p.redis, "redis", mode);
    sleep(ctx.fault(name)).await;
    switch(&p.redis, "redis", Mode::Pass);
    let f1 = s.rec.now();
    sleep(ctx.after()).await;
    let end = s.rec.now();
    let crashed = crashed_note(p);
    if let Ok(m) = p.metrics(p.gateway()).await {
        let fallbacks: f64 = m
            .lines()
            .filter(|l| l.starts_with("gateway_ratelimit_fallback_total"))
            .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
            .sum();
        r.note(format!("gateway_ratelimit_fallback_total: {fallbacks}"));
    }
    let samples = s.finish(&mut r).await;
    zero_failures(
        &mut r,
        "from the fault on",
        &samples,
        &Window::new("", f0, f64::MAX),
    );
    fast_answers(&mut r, &samples, f0, f1);
    recovery(&mut r, &samples, f1, end, crashed);
    r.windows = standard_windows(end, f0, f1);
    r.tables.extend(by_kind(samples));
    Ok(r)
}

async fn identity_down(ctx: &Ctx, p: &mut Platform) -> anyhow::Result<Report> {
    let mut r = Report::default();
    let s = Session::start(ctx, p).await?;
    r.t0 = s.rec.started_at();
    sleep(ctx.before()).await;
    let instances = p.names(Svc::Identity);
    let f0 = s.rec.now();
    for name in &instances {
        let pid = p.process(name)?.pid().context("no pid")?;
        crate::platform::send_signal(pid, "KILL").await?;
    }
    for name in &instances {
        p.stop(name, "KILL", Duration::from_secs(10)).await?;
    }
    sleep(ctx.fault("identity-down") - (s.rec.now() - f0)).await;
    let restart = s.rec.now();
    let mut new = Vec::new();
    for _ in &instances {
        new.push(p.start_process(Svc::Identity, &[])?);
    }
    for name in &new {
        p.wait_ready(name).await?;
    }
    let back = s.rec.now();
    let addrs: Vec<SocketAddr> = new
        .iter()
        .map(|n| p.process(n).map(|x| x.addr))
        .collect::<anyhow::Result<_>>()?;
    let c0 = handled_by(p, &addrs).await?;
    let m0 = s.rec.now();
    sleep(2.0 - (s.rec.now() - m0)).await;
    let c1 = handled_by(p, &addrs).await?;
    let m1 = s.rec.now();
    r.note(format!(
        "killed {} at {f0:.1} s; restart at {restart:.1} s; back (ready, registered) at {back:.1} s",
        instances.join(", ")
    ));
    sleep(ctx.after() - (s.rec.now() - back)).await;
    let end = s.rec.now();
    let crashed = crashed_note(p);
    let samples = s.finish(&mut r).await;
    let outage = Window::new("during", f0, restart);
    only_503(&mut r, &samples, &outage);
    fast_answers(&mut r, &samples, f0, restart);
    let sent = samples
        .iter()
        .filter(|x| x.kind.needs_identity() && x.start >= m0 && x.start < m1)
        .count();
    let reached = c1 - c0;
    r.check(
        "no retry storm: calls reaching identity ≤ 1.2 × requests sent (2 s after it is back)",
        reached <= 1.2 * sent as f64,
        format!(
            "{reached:.0} calls reached the restarted instances in {:.1}-{:.1} s; the load sent {sent} requests needing identity then (ratio {:.2})",
            m0,
            m1,
            if sent > 0 { reached / sent as f64 } else { f64::INFINITY }
        ),
    );
    recovery(&mut r, &samples, back, end, crashed);
    r.windows = standard_windows(end, f0, back);
    r.tables.extend(by_kind(samples));
    Ok(r)
}

/// Calls handled by the instances at `addrs`, from their `/metrics`.
async fn handled_by(p: &Platform, addrs: &[SocketAddr]) -> anyhow::Result<f64> {
    let mut sum = 0.0;
    for a in addrs {
        sum += handled_calls(&p.metrics(*a).await?);
    }
    Ok(sum)
}

/// The `kid` in a JWT's header.
fn kid(token: &str) -> Option<String> {
    let header = URL_SAFE_NO_PAD.decode(token.split('.').next()?).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&header).ok()?;
    v["kid"].as_str().map(str::to_owned)
}

async fn key_rotation(ctx: &Ctx, p: &mut Platform) -> anyhow::Result<Report> {
    let mut r = Report::default();
    let s = Session::start(ctx, p).await?;
    r.t0 = s.rec.started_at();
    let admin: Admin = p.admin()?.clone();
    let old_kid = kid(&s.token);
    // The rightful user signs in twice a second and reads with each new token.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let logins = {
        let (http, rec, gateway, stop) = (s.http.clone(), s.rec.clone(), s.gateway, stop.clone());
        tokio::spawn(async move {
            let mut kids: Vec<(f64, Option<String>)> = Vec::new();
            let mut next = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::time::sleep_until(next.into()).await;
                let due = next;
                next += Duration::from_millis(500);
                match load::login(&http, gateway, &admin.email, &admin.password, None).await {
                    Ok(token) => {
                        rec.record(Kind::Login, due, Outcome::Status(200));
                        kids.push((rec.at(due), kid(&token)));
                        let read = Instant::now();
                        let o = load::get_user(&http, gateway, &token, admin.id).await;
                        rec.record(Kind::Read, read, o);
                    }
                    Err(o) => rec.record(Kind::Login, due, o),
                }
            }
            kids
        })
    };
    sleep(ctx.before()).await;
    let r0 = s.rec.now();
    let out = p.run_command("auth", &["keys", "rotate"]).await;
    let r1 = s.rec.now();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = logins.await;
            s.finish(&mut r).await;
            return Err(e);
        }
    };
    let new_kid = out
        .lines()
        .find_map(|l| l.strip_prefix("rotated: ")?.strip_suffix(" signs now"))
        .map(str::to_owned);
    r.note(format!(
        "keys rotate ran {r0:.1}-{r1:.1} s: old kid {}, new kid {}",
        old_kid.as_deref().unwrap_or("?"),
        new_kid.as_deref().unwrap_or("? (not printed)")
    ));
    sleep(ctx.after()).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let kids = logins.await.unwrap_or_default();
    let end = s.rec.now();
    let samples = s.finish(&mut r).await;
    zero_failures(
        &mut r,
        "(whole run)",
        &samples,
        &Window::new("", 0.0, f64::MAX),
    );
    let late: Vec<&(f64, Option<String>)> = kids.iter().filter(|(t, _)| *t >= r1 + 2.0).collect();
    let with_new = late
        .iter()
        .filter(|(_, k)| k.is_some() && *k == new_kid)
        .count();
    let first_new = kids
        .iter()
        .find(|(_, k)| k.is_some() && *k == new_kid)
        .map(|(t, _)| t - r1);
    r.note(format!(
        "first token with the new kid: {}",
        first_new
            .map(|t| format!("{} after the rotation", secs(t)))
            .unwrap_or_else(|| "none".into())
    ));
    r.check(
        "tokens issued ≥ 2 s after the rotation carry the new kid",
        new_kid.is_some() && !late.is_empty() && with_new == late.len(),
        format!(
            "{with_new} of {} sign-ins due ≥ {:.1} s carry {}",
            late.len(),
            r1 + 2.0,
            new_kid.as_deref().unwrap_or("?")
        ),
    );
    r.windows = standard_windows(end, r0, r1 + 2.0);
    r.tables.extend(by_kind(samples));
    Ok(r)
}

async fn password_spraying(ctx: &Ctx, p: &mut Platform) -> anyhow::Result<Report> {
    let mut r = Report::default();
    let owner_addr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    let attacker_addr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let owner_http = load::client(Some(owner_addr))?;
    let attacker_http = load::client(Some(attacker_addr))?;
    let gateway = p.gateway();
    let admin = p.admin()?.clone();
    settle("the owner's first sign-in", || {
        load::login(&owner_http, gateway, &admin.email, &admin.password, None)
    })
    .await?;
    let rec = Recorder::new();
    r.t0 = rec.started_at();
    let due = Instant::now();
    let first = load::login(&owner_http, gateway, &admin.email, &admin.password, None).await;
    rec.record(
        Kind::Login,
        due,
        first
            .clone()
            .map(|_| Outcome::Status(200))
            .unwrap_or_else(|o| o),
    );
    sleep(1.0).await;
    let attack = ctx.fault("password-spraying");
    let after = ctx.secs(3.0, 5.0);
    let a0 = rec.now();
    let attack_end = Instant::now() + Duration::from_secs_f64(attack);
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..16u32 {
        let (http, rec, email) = (attacker_http.clone(), rec.clone(), admin.email.clone());
        tasks.spawn(async move {
            let mut n = 0u64;
            while Instant::now() < attack_end {
                n += 1;
                let rnd = Uuid::new_v4();
                let b = rnd.as_bytes();
                let xff = format!("10.{}.{}.{}", b[0], b[1], b[2].max(1));
                let target = if (n + u64::from(worker)).is_multiple_of(2) {
                    email.clone()
                } else {
                    format!("x{}@example.org", rnd.simple())
                };
                let due = Instant::now();
                let o =
                    match load::login(&http, gateway, &target, &format!("wrong {rnd}"), Some(&xff))
                        .await
                    {
                        Ok(_) => Outcome::Status(200),
                        Err(o) => o,
                    };
                rec.record(Kind::Attack, due, o);
            }
        });
    }
    // The owner signs in every second from the attack's start until after its end.
    {
        let start = Instant::now();
        let mut k = 0u32;
        while start.elapsed().as_secs_f64() < attack + after {
            let due = start + Duration::from_secs(u64::from(k));
            tokio::time::sleep_until(due.into()).await;
            k += 1;
            let o = match load::login(&owner_http, gateway, &admin.email, &admin.password, None)
                .await
            {
                Ok(_) => Outcome::Status(200),
                Err(o) => o,
            };
            rec.record(Kind::Login, due, o);
        }
    }
    while tasks.join_next().await.is_some() {}
    let end = rec.now();
    let samples = rec.samples();
    let owner: Vec<Sample> = samples
        .iter()
        .filter(|x| x.kind == Kind::Login)
        .cloned()
        .collect();
    let attacker: Vec<Sample> = samples
        .iter()
        .filter(|x| x.kind == Kind::Attack)
        .cloned()
        .collect();
    let judged: Vec<&Sample> = owner.iter().filter(|x| x.start >= a0 + 5.0).collect();
    let owner_failed: Vec<&Sample> = judged.iter().copied().filter(|x| !x.outcome.ok()).collect();
    let first_ok = owner
        .iter()
        .filter(|x| x.start >= a0 && x.outcome.ok())
        .map(|x| x.start - a0)
        .next();
    r.note(format!(
        "owner's first successful sign-in after the attack started: {}; attacker sent {} sign-ins ({:.0}/s)",
        first_ok.map(|t| format!("due at +{}", secs(t))).unwrap_or_else(|| "none".into()),
        attacker.len(),
        attacker.len() as f64 / attack
    ));
    r.check(
        "the owner's sign-ins succeed from 5 s after the attack's start on",
        !judged.is_empty() && owner_failed.is_empty(),
        format!(
            "{} of {} owner sign-ins due ≥ +5 s succeeded ({}); all owner sign-ins: {}",
            judged.len() - owner_failed.len(),
            judged.len(),
            by_status(judged.iter().copied()),
            by_status(owner.iter())
        ),
    );
    let bad: Vec<&Sample> = attacker
        .iter()
        .filter(|x| !matches!(x.outcome, Outcome::Status(401 | 429)))
        .collect();
    r.check(
        "every attacker sign-in is refused with 401 or 429",
        bad.is_empty(),
        format!("attacker answers: {}", by_status(attacker.iter())),
    );
    r.windows = standard_windows(end, a0, a0 + attack);
    r.tables.push((kind_label(Kind::Login).into(), owner));
    r.tables.push((kind_label(Kind::Attack).into(), attacker));
    Ok(r)
}
