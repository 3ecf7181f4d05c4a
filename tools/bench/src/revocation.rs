//! `plt-bench revocation`: how soon a session that ended is refused everywhere — measured
//! from outside, across several gateway instances of a running platform.
//!
//! Each round signs in (through the first gateway), reads a protected route with the new
//! access token through every gateway (so each has verified and cached it), signs out, and
//! then asks every gateway again and again, concurrently, until each answers 401. The delay of
//! a gateway is from the moment the logout request was sent to its first 401. The report
//! gives p50, p99 and max per gateway and over all, and checks the target: p99 ≤ 1 s.
//!
//! ```sh
//! cargo run -p plt -- dev --processes --data-dir /tmp/rev          # gateway :8080, static registry
//! PLT_REGISTRY__KIND=static PLT_GATEWAY__LISTEN=127.0.0.1:18080 \
//!   cargo run -p plt -- serve gateway --data-dir /tmp/rev          # a second gateway
//! cargo run --release -p plt-bench -- revocation \
//!   --gateway http://127.0.0.1:8080 --gateway http://127.0.0.1:18080 \
//!   --email admin@example.com --password "$ADMIN_PASSWORD"
//! ```

use anyhow::Context as _;
use std::{
    process::ExitCode,
    time::{Duration, Instant},
};

#[derive(clap::Args)]
pub struct Args {
    /// A gateway's base URL (give it once per gateway instance; the first signs in and out).
    #[arg(long = "gateway", required = true)]
    gateways: Vec<String>,
    /// The user who signs in each round.
    #[arg(long)]
    email: String,
    /// Their password (or PLT_BENCH_PASSWORD).
    #[arg(long, env = "PLT_BENCH_PASSWORD", hide_env_values = true)]
    password: String,
    /// Sessions started and ended.
    #[arg(long, default_value_t = 100)]
    rounds: usize,
    /// Pause between two requests of one gateway's polling loop, in milliseconds.
    #[arg(long, default_value_t = 2)]
    poll_ms: u64,
}

const TARGET: Duration = Duration::from_secs(1);
const GIVE_UP: Duration = Duration::from_secs(10);

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// The `sub` claim of a JWT, read without checking it (the gateway checks it).
fn subject(token: &str) -> anyhow::Result<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).context("not a JWT")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .context("JWT payload")?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)?;
    Ok(v["sub"].as_str().context("no sub claim")?.to_owned())
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.rounds > 0, "--rounds must be positive");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(measure(args))
}

async fn measure(args: &Args) -> anyhow::Result<ExitCode> {
    let http = plt_kernel::tls::http_client();
    let first = args.gateways[0].trim_end_matches('/').to_owned();
    let gateways: Vec<String> = args
        .gateways
        .iter()
        .map(|g| g.trim_end_matches('/').to_owned())
        .collect();
    let mut delays: Vec<Vec<Duration>> = vec![Vec::new(); gateways.len()];
    let mut failures = 0usize;
    for round in 0..args.rounds {
        let r = http
            .post(format!("{first}/api/v1/auth/login"))
            .json(&serde_json::json!({"email": args.email, "password": args.password}))
            .send()
            .await
            .context("signing in")?;
        anyhow::ensure!(r.status() == 200, "sign-in answered {}", r.status());
        let body: serde_json::Value = r.json().await?;
        let token = body["access_token"]
            .as_str()
            .context("no access_token")?
            .to_owned();
        let path = format!("/api/v1/users/{}", subject(&token)?);
        for g in &gateways {
            let r = http
                .get(format!("{g}{path}"))
                .bearer_auth(&token)
                .send()
                .await?;
            anyhow::ensure!(
                r.status() == 200,
                "{g}{path} answered {} before logout",
                r.status()
            );
        }
        let sent = Instant::now();
        let r = http
            .post(format!("{first}/api/v1/auth/logout"))
            .bearer_auth(&token)
            .send()
            .await?;
        anyhow::ensure!(r.status() == 204, "logout answered {}", r.status());
        let polls = gateways.iter().map(|g| {
            let (http, url, token) = (http.clone(), format!("{g}{path}"), token.clone());
            async move {
                loop {
                    if sent.elapsed() > GIVE_UP {
                        return None;
                    }
                    if let Ok(r) = http.get(&url).bearer_auth(&token).send().await
                        && r.status() == 401
                    {
                        return Some(sent.elapsed());
                    }
                    tokio::time::sleep(Duration::from_millis(args.poll_ms)).await;
                }
            }
        });
        for (i, d) in futures_util::future::join_all(polls)
            .await
            .into_iter()
            .enumerate()
        {
            match d {
                Some(d) => delays[i].push(d),
                None => failures += 1,
            }
        }
        if (round + 1) % 20 == 0 {
            eprintln!("{} of {} sessions ended", round + 1, args.rounds);
        }
    }
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e3);
    println!(
        "plt-bench revocation: {} sessions ended (logout), each token polled at {} gateways until 401",
        args.rounds,
        gateways.len()
    );
    println!();
    println!("| gateway | sessions | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|");
    let mut all: Vec<Duration> = Vec::new();
    for (g, d) in gateways.iter().zip(&mut delays) {
        d.sort();
        all.extend(d.iter().copied());
        println!(
            "| {g} | {} | {} | {} | {} |",
            d.len(),
            ms(quantile(d, 0.5)),
            ms(quantile(d, 0.99)),
            ms(d.last().copied().unwrap_or_default())
        );
    }
    all.sort();
    let p99 = quantile(&all, 0.99);
    println!(
        "| all | {} | {} | {} | {} |",
        all.len(),
        ms(quantile(&all, 0.5)),
        ms(p99),
        ms(all.last().copied().unwrap_or_default())
    );
    println!();
    let pass = failures == 0 && p99 <= TARGET;
    println!(
        "target: refused everywhere within 1 s at p99 (never-refused tokens: {failures}): {}",
        if pass { "PASS" } else { "FAIL" }
    );
    Ok(if pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
