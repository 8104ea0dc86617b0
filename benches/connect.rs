//! End-to-end connect benchmark: how much the callout costs a connecting client, measured in
//! one run against two yardsticks — the same nats-server authenticating by itself (static
//! token), and the same nats-server configuration answered by a **null callout** (the least any
//! responder must do; `common/mod.rs`).
//!
//! `cargo bench --bench connect [-- OPTIONS]` starts, on loopback:
//! * (a) a nats-server with a static token (`authorization { token: ... }`);
//! * the callout environment of `entra-callout dev` (product code, `src/dev`): a nats-server
//!   with `auth_callout` (xkey-sealed requests), the Entra-shaped dev issuer in this process,
//!   and `entra-callout serve` as a child process with the example policies;
//! * (n) a second nats-server started from the very file that environment wrote
//!   (`nats-server.conf`: same accounts, same callout issuer and xkey, same limits), answered
//!   by the null callout — this binary re-executed as a separate process, connecting as the
//!   callout user with the environment's password and signing with its issuer and xkey seeds;
//! * the same environment and null pair without xkey (`entra-callout dev --no-xkey`).
//!
//! Why a second nats-server for the null callout rather than stopping the service while it
//! answers: both responders stay connected and warm for the whole run, so rounds can
//! interleave them without restarts, and neither server routes requests to a responder of the
//! other; the servers are the same binary with the same configuration file, and whichever pair
//! is idle costs no CPU while the other is measured. Each row's CPU is read from its own
//! nats-server and responder (`/proc/<pid>/stat`).
//!
//! It measures new-connection latency (p50, p90, p99) and connections per second at each
//! concurrency for (a), (n) the null callout, (b) the callout with every token new (a
//! verified-token cache miss: key lookup and RS256 signature check), (c) the callout with the
//! same tokens again (a cache hit: claims checked, policies evaluated, no signature check), and
//! (m)/(d)/(e) as (n)/(b)/(c) without xkey. For the null callout cold and warm are the same
//! work: (n) is the reference of both (b) and (c). The cases run in **interleaved rounds**:
//! each round measures every case at every concurrency in turn, so slow drifts of a shared
//! machine land on all of them, and the ratios come out per round, reported as the median and
//! the min–max over rounds. A connection is one raw TCP client speaking the NATS protocol — TCP
//! connect, read INFO, send CONNECT with the token and PING, read PONG — then closed; no client
//! library is involved. Then the service's peak RSS, its RSS after `--identities` distinct
//! identities connected (tokens minted while connecting), and the targets as met/MISS.
//!
//! Options: `--connections N` per measurement and concurrency (default 2000), `--concurrency
//! 1,32` (default), `--rounds R` (default 5), `--identities N` (default 100000; 0 skips that
//! phase), `--warmup N` (default 300), `--null-verify` (adds (v)/(w): the null callouts again,
//! with and without xkey, on their own nats-servers, verifying the request's signature and
//! claims first with `nats_jwt::open_request` — what that check costs, in the same rounds). Every loop
//! is bounded by these counts and every socket read by a timeout.

mod common;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use common::{
    Args, Error, NullOptions, Proc, load_average, mint, mint_tokens, spawn_nats, spawn_null,
    version,
};
use entra_callout::dev::{DevOptions, Environment, find_nats_server};
use entra_callout::telemetry::unix_now;

/// Longest a connection may take before it counts as failed.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The targets against static auth (the first benchmark's).
const TARGET_P50_RATIO: f64 = 1.25;
const TARGET_RATE_RATIO: f64 = 0.8;
const TARGET_RSS_MIB: f64 = 64.0;
const TARGET_IDENTITIES: usize = 100_000;

/// The targets against the null callout (issue 18): warm p50 at c=1 and conn/s at c=32.
const TARGET_NULL_P50_WARM: f64 = 1.10;
const TARGET_NULL_RATE_WARM: f64 = 0.93;
/// Cold "within 1.15×": p50 at most 1.15× the null's, conn/s at least 1/1.15 of it.
const TARGET_NULL_COLD: f64 = 1.15;

fn main() -> ExitCode {
    common::bench_main("connect bench", run)
}

/// Command-line options.
struct Options {
    connections: usize,
    concurrency: Vec<usize>,
    rounds: usize,
    identities: usize,
    warmup: usize,
    null_verify: bool,
}

impl Options {
    fn parse() -> Result<Self, Error> {
        let mut options = Self {
            connections: 2000,
            concurrency: vec![1, 32],
            rounds: 5,
            identities: TARGET_IDENTITIES,
            warmup: 300,
            null_verify: false,
        };
        let mut args = Args::new(std::env::args().skip(1));
        while let Some(option) = args.next_option() {
            match option.as_str() {
                "--connections" => options.connections = args.parse()?,
                "--rounds" => options.rounds = args.parse()?,
                "--identities" => options.identities = args.parse()?,
                "--warmup" => options.warmup = args.parse()?,
                "--null-verify" => options.null_verify = true,
                "--concurrency" => options.concurrency = args.list(str::parse)?,
                _ => return Err(args.unknown()),
            }
        }
        if options.connections == 0 || options.rounds == 0 || options.concurrency.contains(&0) {
            return Err("--connections, --rounds and --concurrency must be positive".into());
        }
        Ok(options)
    }
}

/// A nats-server started from an environment's own configuration file, answered by the null
/// callout.
struct NullPair {
    server: Proc,
    responder: Proc,
    addr: SocketAddr,
}

impl NullPair {
    fn start(
        bin: &Path,
        env: &Environment,
        xkey: bool,
        verify: bool,
        dir: &Path,
    ) -> Result<Self, Error> {
        let tag = if xkey { "xkey" } else { "plain" };
        let (server, port) = spawn_nats(
            bin,
            &env.dir().join("nats-server.conf"),
            &dir.join(format!("null-{tag}-nats-server.log")),
            false,
        )?;
        let log = dir.join(format!("null-{tag}-callout.log"));
        let mut responder = spawn_null(
            &NullOptions {
                urls: format!("nats://127.0.0.1:{port}"),
                keys: env.dir().join("keys"),
                xkey,
                verify,
                reconnect: common::NULL_RECONNECT,
            },
            &log,
        )?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // Ready once a connection is admitted (the null callout admits any token).
        let deadline = Instant::now() + Duration::from_secs(30);
        let probe = connect_line("probe");
        loop {
            if connect_once(addr, &probe).is_ok() {
                break;
            }
            if responder.child.try_wait()?.is_some() || Instant::now() > deadline {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(
                    format!("the null callout ({tag}) did not answer; its log:\n{text}").into(),
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self {
            server,
            responder,
            addr,
        })
    }
}

fn run() -> Result<(), Error> {
    let options = Options::parse()?;
    let nats_server = find_nats_server()?;
    let mut out = String::new();
    writeln!(out, "# entra-callout connect benchmark")?;
    writeln!(
        out,
        "machine: {} CPU(s), {}; load average before: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model(),
        load_average()
    )?;
    writeln!(out, "nats-server: {}", version(&nats_server)?)?;
    writeln!(
        out,
        "client: raw TCP, NATS protocol by hand (CONNECT + PING, wait for PONG), one blocking \
         thread per concurrent client; {} interleaved round(s)",
        options.rounds
    )?;
    print!("{out}");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;

    // Tokens first, so minting does not compete with the measurements: every round and
    // concurrency gets its own new tokens for the cold case.
    let now = unix_now();
    let cold_count = options.connections * options.concurrency.len() * options.rounds;
    let started = Instant::now();
    let mut tokens = mint_tokens(cold_count + options.warmup, now)?;
    let per_token = started.elapsed() / u32::try_from(tokens.len().max(1))?;
    println!(
        "minted {} dev tokens in {:.1} s ({:.0} µs each, 2 threads)",
        tokens.len(),
        started.elapsed().as_secs_f64(),
        per_token.as_secs_f64() * 1e6
    );
    let warm_tokens: Vec<String> = tokens.drain(..options.warmup).collect();
    // A static token as long as the access tokens, so both servers parse CONNECT lines of one size.
    let static_token = "s".repeat(tokens.first().map_or(64, String::len));

    let static_server = StaticServer::start(&nats_server, &static_token)?;
    let dev = |xkey: bool| DevOptions {
        exe: PathBuf::from(env!("CARGO_BIN_EXE_entra-callout")),
        nats_server: nats_server.clone(),
        nats_port: 0,
        websocket_port: 0,
        monitor_port: 0,
        issuer_port: 0,
        admin_port: 0,
        policies: Some(concat!(env!("CARGO_MANIFEST_DIR"), "/policies").into()),
        quiet: true,
        xkey,
    };
    let environment = runtime.block_on(Environment::start(&dev(true)))?;
    let plain = runtime.block_on(Environment::start(&dev(false)))?;
    let null_dir = tempfile::tempdir()?;
    let null = NullPair::start(&nats_server, &environment, true, false, null_dir.path())?;
    let null_plain = NullPair::start(&nats_server, &plain, false, false, null_dir.path())?;
    // With --null-verify: the same null callouts plus the request checks, in the same rounds.
    let verifying = if options.null_verify {
        Some((
            NullPair::start(&nats_server, &environment, true, true, null_dir.path())?,
            NullPair::start(&nats_server, &plain, false, true, null_dir.path())?,
        ))
    } else {
        None
    };
    let addr_of = |env: &Environment| -> Result<SocketAddr, Error> {
        Ok(env.nats_url().trim_start_matches("nats://").parse()?)
    };
    let callout_addr = addr_of(&environment)?;
    let plain_addr = addr_of(&plain)?;
    let pids = Pids {
        static_server: static_server.child.id(),
        callout_server: environment.nats_server_pid(),
        service: environment.service_pid(),
        plain_server: plain.nats_server_pid(),
        plain_service: plain.service_pid(),
        null_server: null.server.pid(),
        null_callout: null.responder.pid(),
        null_plain_server: null_plain.server.pid(),
        null_plain_callout: null_plain.responder.pid(),
        // 0 when absent: those cases are then never measured.
        verify_server: verifying.as_ref().map_or(0, |(v, _)| v.server.pid()),
        verify_callout: verifying.as_ref().map_or(0, |(v, _)| v.responder.pid()),
        verify_plain_server: verifying.as_ref().map_or(0, |(_, w)| w.server.pid()),
        verify_plain_callout: verifying.as_ref().map_or(0, |(_, w)| w.responder.pid()),
    };

    println!(
        "processes: static nats-server {}, callout nats-server {}, entra-callout serve {} (log: {}), \
         null nats-server {}, null callout {}; without xkey: nats-server {}, entra-callout serve {}, \
         null nats-server {}, null callout {}{}",
        pids.static_server,
        pids.callout_server,
        pids.service,
        environment.dir().join("entra-callout.log").display(),
        pids.null_server,
        pids.null_callout,
        pids.plain_server,
        pids.plain_service,
        pids.null_plain_server,
        pids.null_plain_callout,
        if options.null_verify {
            format!(
                "; verifying null callouts {} (xkey), {} (plain)",
                pids.verify_callout, pids.verify_plain_callout
            )
        } else {
            String::new()
        },
    );

    // Warm-up: connections, threads and code paths of every server and responder.
    let static_payload = vec![connect_line(&static_token)];
    let warm_payloads: Vec<Vec<u8>> = warm_tokens.iter().map(|t| connect_line(t)).collect();
    measure(
        static_server.addr,
        &repeat(&static_payload, options.warmup),
        4,
    )?;
    let mut addrs = vec![callout_addr, plain_addr, null.addr, null_plain.addr];
    if let Some((v, w)) = &verifying {
        addrs.extend([v.addr, w.addr]);
    }
    for addr in addrs {
        measure(addr, &warm_payloads, 4)?;
    }

    let mut results = Vec::new();
    for round in 0..options.rounds {
        for (i, &concurrency) in options.concurrency.iter().enumerate() {
            let slot = round * options.concurrency.len() + i;
            let cold: Vec<Vec<u8>> = tokens
                .get(slot * options.connections..(slot + 1) * options.connections)
                .ok_or("not enough tokens")?
                .iter()
                .map(|t| connect_line(t))
                .collect();
            let mut runs = vec![
                (
                    Case::Static,
                    static_server.addr,
                    repeat(&static_payload, options.connections),
                ),
                (Case::Null, null.addr, cold.clone()),
            ];
            if let Some((v, _)) = &verifying {
                runs.push((Case::VerifyNull, v.addr, cold.clone()));
            }
            runs.extend([
                (Case::Cold, callout_addr, cold.clone()),
                (Case::Warm, callout_addr, cold.clone()),
                (Case::NullPlain, null_plain.addr, cold.clone()),
            ]);
            if let Some((_, w)) = &verifying {
                runs.push((Case::VerifyNullPlain, w.addr, cold.clone()));
            }
            runs.extend([
                (Case::ColdPlain, plain_addr, cold.clone()),
                (Case::WarmPlain, plain_addr, cold),
            ]);
            for (case, addr, payloads) in runs {
                let (server, service) = case.pids(&pids);
                let before = Cpu::read(server, service)?;
                let measured = measure(addr, &payloads, concurrency)?;
                let after = Cpu::read(server, service)?;
                let row = Row {
                    case,
                    concurrency,
                    round,
                    measured,
                    cpu: after.since(&before),
                };
                println!("{}", row.line());
                results.push(row);
            }
        }
    }
    let peak = memory(pids.service)?;

    let identities = if options.identities > 0 {
        let concurrency = options.concurrency.iter().copied().max().unwrap_or(32);
        Some(connect_identities(
            callout_addr,
            options.identities,
            concurrency,
            now,
            pids.service,
        )?)
    } else {
        None
    };

    let report = report(&options, &results, peak, identities.as_ref());
    println!("{report}");
    println!("load average after: {}", load_average());
    drop(null);
    drop(null_plain);
    drop(verifying);
    drop(environment);
    drop(plain);
    drop(static_server);
    // Figures over failed connections measure a broken set-up, not the callout: say so loudly
    // (CI's smoke run relies on it).
    let failed: usize = results
        .iter()
        .map(|row| row.measured.failures)
        .sum::<usize>()
        + identities.as_ref().map_or(0, |ids| ids.failures);
    if failed > 0 {
        return Err(format!("{failed} connections failed (see FAILED above)").into());
    }
    Ok(())
}

/// What is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Case {
    Static,
    /// The null callout, xkey: the reference of (b) and (c).
    Null,
    Cold,
    Warm,
    /// The null callout without xkey: the reference of (d) and (e).
    NullPlain,
    /// `--null-verify`: (n) plus the request checks of `nats_jwt::open_request`.
    VerifyNull,
    /// `--null-verify`: (m) plus the request checks.
    VerifyNullPlain,
    /// (b) without xkey.
    ColdPlain,
    /// (c) without xkey.
    WarmPlain,
}

impl Case {
    fn label(self) -> &'static str {
        match self {
            Self::Static => "(a) static token",
            Self::Null => "(n) null callout",
            Self::Cold => "(b) callout, cold",
            Self::Warm => "(c) callout, warm",
            Self::NullPlain => "(m) null, no xkey",
            Self::VerifyNull => "(v) null + verify",
            Self::VerifyNullPlain => "(w) null+verify, no xkey",
            Self::ColdPlain => "(d) no xkey, cold",
            Self::WarmPlain => "(e) no xkey, warm",
        }
    }

    fn short(self) -> &'static str {
        &self.label()[..3]
    }

    /// The null row this one is compared with (for the null rows themselves, none).
    fn null(self) -> Option<Case> {
        match self {
            Self::Cold | Self::Warm => Some(Self::Null),
            Self::ColdPlain | Self::WarmPlain | Self::VerifyNullPlain => Some(Self::NullPlain),
            Self::VerifyNull => Some(Self::Null),
            Self::Static | Self::Null | Self::NullPlain => None,
        }
    }

    fn is_warm(self) -> bool {
        matches!(self, Self::Warm | Self::WarmPlain)
    }

    /// Whether the targets against static auth apply: they are for the sealed set-up.
    fn has_static_targets(self) -> bool {
        matches!(self, Self::Cold | Self::Warm)
    }

    /// The nats-server and the responder whose CPU this case spends.
    fn pids(self, p: &Pids) -> (u32, Option<u32>) {
        match self {
            Self::Static => (p.static_server, None),
            Self::Null => (p.null_server, Some(p.null_callout)),
            Self::Cold | Self::Warm => (p.callout_server, Some(p.service)),
            Self::NullPlain => (p.null_plain_server, Some(p.null_plain_callout)),
            Self::ColdPlain | Self::WarmPlain => (p.plain_server, Some(p.plain_service)),
            Self::VerifyNull => (p.verify_server, Some(p.verify_callout)),
            Self::VerifyNullPlain => (p.verify_plain_server, Some(p.verify_plain_callout)),
        }
    }
}

/// One measurement: latencies of successful connections, failures, wall time.
struct Measured {
    latencies: Vec<Duration>,
    failures: usize,
    first_failure: Option<String>,
    wall: Duration,
}

impl Measured {
    fn percentile(&self, q: f64) -> Duration {
        // `latencies` is sorted by `measure`.
        let n = self.latencies.len();
        if n == 0 {
            return Duration::ZERO;
        }
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        self.latencies.get(rank - 1).copied().unwrap_or_default()
    }

    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64()
    }
}

struct Row {
    case: Case,
    concurrency: usize,
    round: usize,
    measured: Measured,
    cpu: Cpu,
}

impl Row {
    fn line(&self) -> String {
        let m = &self.measured;
        let n = m.latencies.len().max(1) as f64;
        let per = |ticks: u64| ticks_to_secs(ticks) * 1e6 / n;
        let mut line = format!(
            "r{:<2} {:<19} c={:<3} n={:<6} p50 {:>7.0} µs  p90 {:>7.0} µs  p99 {:>7.0} µs  \
             {:>7.0} conn/s  cpu/conn: nats-server {:>4.0} µs, responder {:>4.0} µs, client {:>4.0} µs",
            self.round + 1,
            self.case.label(),
            self.concurrency,
            m.latencies.len(),
            micros(m.percentile(0.50)),
            micros(m.percentile(0.90)),
            micros(m.percentile(0.99)),
            m.rate(),
            per(self.cpu.server),
            per(self.cpu.service),
            per(self.cpu.client),
        );
        if m.failures > 0 {
            let _ = write!(
                line,
                "  FAILED {} (first: {})",
                m.failures,
                m.first_failure.as_deref().unwrap_or("?")
            );
        }
        line
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Runs `payloads` (one CONNECT line per connection) against `addr` with `concurrency` client
/// threads, all released at once; latencies come back sorted.
fn measure(addr: SocketAddr, payloads: &[Vec<u8>], concurrency: usize) -> Result<Measured, Error> {
    let next = AtomicUsize::new(0);
    let barrier = Barrier::new(concurrency + 1);
    let (latencies, failures, first_failure, wall) = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..concurrency)
            .map(|_| {
                scope.spawn(|| {
                    let mut latencies = Vec::with_capacity(payloads.len() / concurrency + 1);
                    let mut failures = Vec::new();
                    barrier.wait();
                    while let Some(payload) = payloads.get(next.fetch_add(1, Ordering::Relaxed)) {
                        match connect_once(addr, payload) {
                            Ok(latency) => latencies.push(latency),
                            Err(err) => failures.push(err.to_string()),
                        }
                    }
                    (latencies, failures)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let mut all = Vec::with_capacity(payloads.len());
        let mut failures = 0;
        let mut first = None;
        for worker in workers {
            let (latencies, failed) = worker.join().unwrap_or_default();
            all.extend(latencies);
            failures += failed.len();
            if first.is_none() {
                first = failed.into_iter().next();
            }
        }
        (all, failures, first, start.elapsed())
    });
    let mut latencies = latencies;
    latencies.sort_unstable();
    Ok(Measured {
        latencies,
        failures,
        first_failure,
        wall,
    })
}

/// The CONNECT line of this benchmark's clients (named `bench`), presenting `token`.
fn connect_line(token: &str) -> Vec<u8> {
    common::connect_line("bench", token)
}

fn repeat(payloads: &[Vec<u8>], n: usize) -> Vec<Vec<u8>> {
    payloads.iter().cycle().take(n).cloned().collect()
}

/// One new connection: TCP connect, INFO, CONNECT + PING, PONG. Closed when it returns.
fn connect_once(addr: SocketAddr, payload: &[u8]) -> Result<Duration, Error> {
    let start = Instant::now();
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if !line.starts_with("INFO ") {
        return Err(format!("expected INFO, got {:?}", truncate(&line)).into());
    }
    (&stream).write_all(payload)?;
    // The server answers PING only once CONNECT (and so authentication) is done.
    for _ in 0..16 {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err("connection closed before PONG".into());
        }
        if line.starts_with("PONG") {
            return Ok(start.elapsed());
        }
        if line.starts_with("-ERR") {
            return Err(truncate(&line).into());
        }
        if line.starts_with("PING") {
            (&stream).write_all(b"PONG\r\n")?;
        }
    }
    Err("no PONG".into())
}

fn truncate(line: &str) -> String {
    line.trim_end().chars().take(120).collect()
}

/// What the identities phase found.
struct Identities {
    count: usize,
    failures: usize,
    elapsed: Duration,
    memory: Memory,
}

/// Connects `n` distinct identities (one new token each, minted by one thread while
/// `concurrency` clients connect), then reads the service's memory.
fn connect_identities(
    addr: SocketAddr,
    n: usize,
    concurrency: usize,
    now: u64,
    service: u32,
) -> Result<Identities, Error> {
    println!("connecting {n} distinct identities at c={concurrency} (minting while connecting)");
    let started = Instant::now();
    let (tx, rx) = sync_channel::<Result<String, String>>(4 * concurrency);
    let rx = Mutex::new(rx);
    let done = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let mint_threads = 1;
        for t in 0..mint_threads {
            let tx = tx.clone();
            scope.spawn(move || {
                let count = n / mint_threads + usize::from(t < n % mint_threads);
                for _ in 0..count {
                    if tx.send(mint(now).map_err(|e| e.to_string())).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        for _ in 0..concurrency {
            scope.spawn(|| {
                while let Some(token) = take(&rx) {
                    let ok = token
                        .ok()
                        .is_some_and(|t| connect_once(addr, &connect_line(&t)).is_ok());
                    if !ok {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    let count = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if count.is_multiple_of(20_000) {
                        println!(
                            "  {count} identities, {:.0} s, service RSS {:.1} MiB",
                            started.elapsed().as_secs_f64(),
                            memory(service).map_or(0.0, |m| m.rss_mib)
                        );
                    }
                }
            });
        }
    });
    Ok(Identities {
        count: done.load(Ordering::Relaxed),
        failures: failed.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        memory: memory(service)?,
    })
}

fn take(rx: &Mutex<Receiver<Result<String, String>>>) -> Option<Result<String, String>> {
    rx.lock().ok()?.recv().ok()
}

/// Median, min and max of some per-round figures.
#[derive(Clone, Copy)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(values: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let mid = n / 2;
        let median = if n % 2 == 1 {
            v[mid]
        } else {
            f64::midpoint(v[mid - 1], v[mid])
        };
        Some(Self {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }

    /// `1.05x [0.98–1.12]`, or just the figure for one round.
    fn ratio(&self) -> String {
        if (self.max - self.min).abs() < 5e-3 {
            format!("{:.2}x", self.median)
        } else {
            format!("{:.2}x [{:.2}–{:.2}]", self.median, self.min, self.max)
        }
    }
}

/// The summary: rows by case and concurrency (medians over rounds), the ratios to the null
/// callout and to static auth per round, memory, and the targets.
fn report(
    options: &Options,
    rows: &[Row],
    peak: Memory,
    identities: Option<&Identities>,
) -> String {
    let by: HashMap<(Case, usize, usize), &Row> = rows
        .iter()
        .map(|r| ((r.case, r.concurrency, r.round), r))
        .collect();
    let rounds = options.rounds;
    let order = [
        Case::Static,
        Case::Null,
        Case::VerifyNull,
        Case::Cold,
        Case::Warm,
        Case::NullPlain,
        Case::VerifyNullPlain,
        Case::ColdPlain,
        Case::WarmPlain,
    ];
    // A figure of `case` at `c` in every round.
    let per_round = |case: Case, c: usize, f: &dyn Fn(&Row) -> f64| -> Vec<f64> {
        (0..rounds)
            .filter_map(|r| by.get(&(case, c, r)).map(|row| f(row)))
            .collect()
    };
    // A ratio of `case` to `base` at `c`, round by round.
    let ratios = |case: Case, base: Case, c: usize, f: &dyn Fn(&Row) -> f64| -> Option<Spread> {
        let values: Vec<f64> = (0..rounds)
            .filter_map(|r| {
                let row = by.get(&(case, c, r))?;
                let base = by.get(&(base, c, r))?;
                Some(f(row) / f(base).max(1e-9))
            })
            .collect();
        Spread::of(&values)
    };
    let p50 = |row: &Row| micros(row.measured.percentile(0.5));
    let p90 = |row: &Row| micros(row.measured.percentile(0.9));
    let p99 = |row: &Row| micros(row.measured.percentile(0.99));
    let rate = |row: &Row| row.measured.rate();

    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## Rows: medians over {rounds} round(s); conn/s with its min–max; CPU per connection \
         over all rounds"
    );
    let _ = writeln!(
        out,
        "| case | c | p50 | p90 | p99 | conn/s | CPU/conn: nats-server | responder | client |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for &c in &options.concurrency {
        for case in order {
            let Some(conn) = Spread::of(&per_round(case, c, &rate)) else {
                continue;
            };
            let median = |f: &dyn Fn(&Row) -> f64| {
                Spread::of(&per_round(case, c, f)).map_or(0.0, |s| s.median)
            };
            let (mut server, mut service, mut client, mut n) = (0, 0, 0, 0usize);
            for r in 0..rounds {
                if let Some(row) = by.get(&(case, c, r)) {
                    server += row.cpu.server;
                    service += row.cpu.service;
                    client += row.cpu.client;
                    n += row.measured.latencies.len();
                }
            }
            let per = |ticks: u64| ticks_to_secs(ticks) * 1e6 / n.max(1) as f64;
            let responder = if case == Case::Static {
                "–".to_owned()
            } else {
                format!("{:.0} µs", per(service))
            };
            let _ = writeln!(
                out,
                "| {} | {c} | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} [{:.0}–{:.0}] | {:.0} µs | {responder} | {:.0} µs |",
                case.label(),
                median(&p50),
                median(&p90),
                median(&p99),
                conn.median,
                conn.min,
                conn.max,
                per(server),
                per(client),
            );
        }
    }

    let _ = writeln!(
        out,
        "\n## Ratios, round by round: median [min–max] over {rounds} round(s)\n\
         | ratio | c | p50 | p99 | conn/s |\n| --- | --- | --- | --- | --- |"
    );
    let show = |s: Option<Spread>| s.map_or_else(|| "–".to_owned(), |s| s.ratio());
    let mut verdicts = Vec::new();
    for &c in &options.concurrency {
        for case in [
            Case::VerifyNull,
            Case::Cold,
            Case::Warm,
            Case::VerifyNullPlain,
            Case::ColdPlain,
            Case::WarmPlain,
        ] {
            let Some(null) = case.null() else { continue };
            let p50_ratio = ratios(case, null, c, &p50);
            let rate_ratio = ratios(case, null, c, &rate);
            if p50_ratio.is_none() && rate_ratio.is_none() {
                continue;
            }
            let _ = writeln!(
                out,
                "| {}/{} | {c} | {} | {} | {} |",
                case.short(),
                null.short(),
                show(p50_ratio),
                show(ratios(case, null, c, &p99)),
                show(rate_ratio),
            );
            // What verifying costs the null callout: a measurement, no target.
            if matches!(case, Case::VerifyNull | Case::VerifyNullPlain) {
                continue;
            }
            let (p50_max, rate_min, what) = if case.is_warm() {
                (TARGET_NULL_P50_WARM, TARGET_NULL_RATE_WARM, "warm")
            } else {
                (TARGET_NULL_COLD, 1.0 / TARGET_NULL_COLD, "cold")
            };
            if c == 1
                && let Some(s) = p50_ratio
            {
                verdicts.push(verdict(
                    &format!(
                        "{} c=1 ({what}): p50 <= {p50_max:.2}x null {}",
                        case.label(),
                        null.short()
                    ),
                    s.median <= p50_max,
                    &s.ratio(),
                ));
            }
            if c >= 32
                && let Some(s) = rate_ratio
            {
                verdicts.push(verdict(
                    &format!(
                        "{} c={c} ({what}): conn/s >= {rate_min:.2}x null {}",
                        case.label(),
                        null.short()
                    ),
                    s.median >= rate_min,
                    &s.ratio(),
                ));
            }
        }
    }
    for &c in &options.concurrency {
        for case in order.into_iter().filter(|&case| case != Case::Static) {
            let p50_ratio = ratios(case, Case::Static, c, &p50);
            let rate_ratio = ratios(case, Case::Static, c, &rate);
            let _ = writeln!(
                out,
                "| {}/(a) | {c} | {} | {} | {} |",
                case.short(),
                show(p50_ratio),
                show(ratios(case, Case::Static, c, &p99)),
                show(rate_ratio),
            );
            if !case.has_static_targets() {
                continue;
            }
            if let Some(s) = p50_ratio {
                verdicts.push(verdict(
                    &format!(
                        "{} c={c}: connect p50 <= {TARGET_P50_RATIO}x static",
                        case.label()
                    ),
                    s.median <= TARGET_P50_RATIO,
                    &s.ratio(),
                ));
            }
            if c >= 32
                && let Some(s) = rate_ratio
            {
                verdicts.push(verdict(
                    &format!(
                        "{} c={c}: conn/s >= {TARGET_RATE_RATIO}x static",
                        case.label()
                    ),
                    s.median >= TARGET_RATE_RATIO,
                    &s.ratio(),
                ));
            }
        }
    }
    let _ = writeln!(
        out,
        "\n## Service memory\npeak RSS (VmHWM) after the runs above: {:.1} MiB (RSS now {:.1} MiB)",
        peak.hwm_mib, peak.rss_mib
    );
    if let Some(ids) = identities {
        let _ = writeln!(
            out,
            "after {} distinct identities ({} failed, {:.0} s): RSS {:.1} MiB, peak RSS (VmHWM) {:.1} MiB",
            ids.count,
            ids.failures,
            ids.elapsed.as_secs_f64(),
            ids.memory.rss_mib,
            ids.memory.hwm_mib
        );
        if ids.count >= TARGET_IDENTITIES {
            verdicts.push(verdict(
                &format!(
                    "service RSS <= {TARGET_RSS_MIB} MiB after {TARGET_IDENTITIES} identities"
                ),
                ids.memory.hwm_mib <= TARGET_RSS_MIB && ids.failures == 0,
                &format!("peak {:.1} MiB", ids.memory.hwm_mib),
            ));
        }
    }
    let _ = writeln!(
        out,
        "\n## Targets (on the median over rounds; the range shows how far one round may stray)"
    );
    for v in verdicts {
        let _ = writeln!(out, "{v}");
    }
    out
}

fn verdict(what: &str, met: bool, value: &str) -> String {
    format!("{:<4} {what}: {value}", if met { "met" } else { "MISS" })
}

/// The static-token nats-server (a), in a private temporary directory.
struct StaticServer {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl StaticServer {
    fn start(bin: &Path, token: &str) -> Result<Self, Error> {
        let dir = tempfile::tempdir()?;
        let conf = dir.path().join("nats-server.conf");
        let log = dir.path().join("nats-server.log");
        // The same limits as the callout server of `entra-callout dev`; only the auth differs.
        std::fs::write(
            &conf,
            format!(
                "listen: \"127.0.0.1:-1\"\nserver_name: bench-static\nmax_control_line: 32KB\n\
                 authorization {{\n  timeout: 2\n  token: \"{token}\"\n}}\n"
            ),
        )?;
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut server = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(addr) = text
                .split("Listening for client connections on ")
                .nth(1)
                .and_then(|rest| rest.lines().next())
                .filter(|_| text.contains("Server is ready"))
            {
                server.addr = addr.trim().parse()?;
                return Ok(server);
            }
            if server.child.try_wait()?.is_some() {
                return Err(format!("static nats-server exited; log:\n{text}").into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err("static nats-server did not start within 30 s".into())
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The processes whose CPU time is read around each measurement.
struct Pids {
    static_server: u32,
    callout_server: u32,
    service: u32,
    plain_server: u32,
    plain_service: u32,
    null_server: u32,
    null_callout: u32,
    null_plain_server: u32,
    null_plain_callout: u32,
    verify_server: u32,
    verify_callout: u32,
    verify_plain_server: u32,
    verify_plain_callout: u32,
}

/// CPU time (user + system, clock ticks) of a case's nats-server, its responder (0 for static
/// auth) and this process (the clients).
struct Cpu {
    server: u64,
    service: u64,
    client: u64,
}

impl Cpu {
    fn read(server: u32, service: Option<u32>) -> Result<Cpu, Error> {
        Ok(Cpu {
            server: cpu_ticks(&server.to_string())?,
            service: service.map_or(Ok(0), |pid| cpu_ticks(&pid.to_string()))?,
            client: cpu_ticks("self")?,
        })
    }

    fn since(&self, before: &Cpu) -> Cpu {
        Cpu {
            server: self.server.saturating_sub(before.server),
            service: self.service.saturating_sub(before.service),
            client: self.client.saturating_sub(before.client),
        }
    }
}

/// utime + stime of a process from `/proc/<pid>/stat`, in clock ticks.
fn cpu_ticks(pid: &str) -> Result<u64, Error> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name, which may contain spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or("bad stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let field =
        |i: usize| -> Result<u64, Error> { Ok(fields.get(i).ok_or("short stat")?.parse::<u64>()?) };
    Ok(field(11)? + field(12)?)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux when it cannot be asked).
fn ticks_to_secs(ticks: u64) -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let tck = *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    });
    ticks as f64 / tck
}

/// Resident memory of a process.
#[derive(Clone, Copy)]
struct Memory {
    rss_mib: f64,
    hwm_mib: f64,
}

fn memory(pid: u32) -> Result<Memory, Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |name: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok(Memory {
        rss_mib: kib("VmRSS:") / 1024.0,
        hwm_mib: kib("VmHWM:") / 1024.0,
    })
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
