//! End-to-end connect benchmark: how much the callout costs a connecting client, measured side
//! by side in one run against the limit — the same nats-server authenticating by itself.
//!
//! `cargo bench --bench connect [-- OPTIONS]` starts, on loopback:
//! * (a) a nats-server with a static token (`authorization { token: ... }`): the limit;
//! * the callout environment of `entra-callout dev` (product code, `src/dev`): a nats-server
//!   with `auth_callout` (xkey-sealed requests), the Entra-shaped dev issuer in this process,
//!   and `entra-callout serve` as a child process with the example policies;
//! * the same environment without xkey (`entra-callout dev --no-xkey`), idle while the others
//!   are measured;
//!
//! and measures new-connection latency (p50, p90, p99) and connections per second at each
//! concurrency for (a), (b) the callout with every token new (a verified-token cache miss: key
//! lookup and RS256 signature check), (c) the callout with the same tokens again (a cache hit:
//! the claims are checked and the policies evaluated, the signature is not), and (d)/(e) as
//! (b)/(c) without xkey, which shows what sealing costs (no targets apply to them). A
//! connection is one raw TCP client speaking the NATS protocol — TCP connect, read INFO, send
//! CONNECT with the token and PING, read PONG — then closed; no client library is involved. It
//! then prints the ratios to (a), the CPU each process spent per connection, the service's peak
//! RSS, and the service's RSS after `--identities` distinct identities connected (tokens minted
//! while connecting), and checks the targets.
//!
//! Options: `--connections N` per measurement and concurrency (default 2000), `--concurrency
//! 1,32` (default), `--identities N` (default 100000; 0 skips that phase), `--warmup N`
//! (default 300). Every loop is bounded by these counts and every socket read by a timeout.

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

use entra_callout::dev::token::{self, Randomness, TokenRequest};
use entra_callout::dev::{DevOptions, Environment, find_nats_server};
use entra_callout::telemetry::unix_now;

/// Longest a connection may take before it counts as failed.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The targets.
const TARGET_P50_RATIO: f64 = 1.25;
const TARGET_RATE_RATIO: f64 = 0.8;
const TARGET_RSS_MIB: f64 = 64.0;
const TARGET_IDENTITIES: usize = 100_000;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("connect bench: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Command-line options.
struct Options {
    connections: usize,
    concurrency: Vec<usize>,
    identities: usize,
    warmup: usize,
}

impl Options {
    fn parse() -> Result<Self, Error> {
        let mut options = Self {
            connections: 2000,
            concurrency: vec![1, 32],
            identities: TARGET_IDENTITIES,
            warmup: 300,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
            match arg.as_str() {
                // cargo bench passes `--bench` to every harness = false target.
                "--bench" => {}
                "--connections" => options.connections = value()?.parse()?,
                "--identities" => options.identities = value()?.parse()?,
                "--warmup" => options.warmup = value()?.parse()?,
                "--concurrency" => {
                    options.concurrency = value()?
                        .split(',')
                        .map(str::parse)
                        .collect::<Result<_, _>>()?;
                }
                other => return Err(format!("unknown option {other}").into()),
            }
        }
        if options.connections == 0 || options.concurrency.contains(&0) {
            return Err("--connections and --concurrency must be positive".into());
        }
        Ok(options)
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
         thread per concurrent client"
    )?;
    print!("{out}");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;

    // Tokens first, so minting does not compete with the measurements.
    let now = unix_now();
    let cold_count = options.connections * options.concurrency.len();
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
    // The same without xkey, to show what sealing costs; it idles while the others are measured.
    let plain = runtime.block_on(Environment::start(&dev(false)))?;
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
    };

    println!(
        "processes: static nats-server {}, callout nats-server {}, entra-callout serve {} (log: {}); \
         without xkey: nats-server {}, entra-callout serve {}",
        pids.static_server,
        pids.callout_server,
        pids.service,
        environment.dir().join("entra-callout.log").display(),
        pids.plain_server,
        pids.plain_service,
    );

    // Warm-up: connections, threads and code paths of both servers and the service.
    let static_payload = vec![connect_line(&static_token)];
    let warm_payloads: Vec<Vec<u8>> = warm_tokens.iter().map(|t| connect_line(t)).collect();
    measure(
        static_server.addr,
        &repeat(&static_payload, options.warmup),
        4,
    )?;
    measure(callout_addr, &warm_payloads, 4)?;
    measure(plain_addr, &warm_payloads, 4)?;

    let mut results = Vec::new();
    for (i, &concurrency) in options.concurrency.iter().enumerate() {
        let cold: Vec<Vec<u8>> = tokens
            .get(i * options.connections..(i + 1) * options.connections)
            .ok_or("not enough tokens")?
            .iter()
            .map(|t| connect_line(t))
            .collect();
        let runs = [
            (
                Case::Static,
                static_server.addr,
                repeat(&static_payload, options.connections),
            ),
            (Case::Cold, callout_addr, cold.clone()),
            (Case::Warm, callout_addr, cold.clone()),
            (Case::ColdPlain, plain_addr, cold.clone()),
            (Case::WarmPlain, plain_addr, cold),
        ];
        for (case, addr, payloads) in runs {
            let before = pids.cpu()?;
            let measured = measure(addr, &payloads, concurrency)?;
            let after = pids.cpu()?;
            let row = Row {
                case,
                concurrency,
                measured,
                cpu: after.since(&before),
            };
            println!("{}", row.line());
            results.push(row);
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

/// The three things measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Case {
    Static,
    Cold,
    Warm,
    /// (b) without xkey: not a target, shows what sealing costs.
    ColdPlain,
    /// (c) without xkey.
    WarmPlain,
}

impl Case {
    fn label(self) -> &'static str {
        match self {
            Self::Static => "(a) static token",
            Self::Cold => "(b) callout, cold",
            Self::Warm => "(c) callout, warm",
            Self::ColdPlain => "(d) no xkey, cold",
            Self::WarmPlain => "(e) no xkey, warm",
        }
    }

    /// Whether the targets apply: they are for the recommended, sealed set-up.
    fn has_targets(self) -> bool {
        matches!(self, Self::Cold | Self::Warm)
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
    measured: Measured,
    cpu: Cpu,
}

impl Row {
    fn line(&self) -> String {
        let m = &self.measured;
        let n = m.latencies.len().max(1) as f64;
        let per = |ticks: u64| ticks_to_secs(ticks) * 1e6 / n;
        let mut line = format!(
            "{:<20} c={:<3} n={:<6} p50 {:>7.0} µs  p90 {:>7.0} µs  p99 {:>7.0} µs  {:>7.0} conn/s  \
             cpu/conn: nats-server {:>4.0} µs, service {:>4.0} µs, client {:>4.0} µs",
            self.case.label(),
            self.concurrency,
            m.latencies.len(),
            micros(m.percentile(0.50)),
            micros(m.percentile(0.90)),
            micros(m.percentile(0.99)),
            m.rate(),
            per(match self.case {
                Case::Static => self.cpu.static_server,
                Case::Cold | Case::Warm => self.cpu.callout_server,
                Case::ColdPlain | Case::WarmPlain => self.cpu.plain_server,
            }),
            per(match self.case {
                Case::ColdPlain | Case::WarmPlain => self.cpu.plain_service,
                _ => self.cpu.service,
            }),
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

/// `CONNECT {...}\r\nPING\r\n` presenting `token`; tokens are base64url and dots, so they need
/// no JSON escaping.
fn connect_line(token: &str) -> Vec<u8> {
    format!(
        "CONNECT {{\"verbose\":false,\"pedantic\":false,\"auth_token\":\"{token}\",\
         \"name\":\"bench\",\"lang\":\"raw\",\"version\":\"0\",\"protocol\":1,\
         \"headers\":true,\"no_responders\":true}}\r\nPING\r\n"
    )
    .into_bytes()
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

/// Mints `n` app-only dev tokens, each for a new made-up service principal, on two threads.
fn mint_tokens(n: usize, now: u64) -> Result<Vec<String>, Error> {
    let halves = [n / 2, n - n / 2];
    std::thread::scope(|scope| {
        let workers: Vec<_> = halves
            .iter()
            .map(|&count| scope.spawn(move || (0..count).map(|_| mint(now)).collect()))
            .collect();
        let mut tokens = Vec::with_capacity(n);
        for worker in workers {
            let minted: Result<Vec<String>, Error> =
                worker.join().map_err(|_| "minting thread panicked")?;
            tokens.extend(minted?);
        }
        Ok(tokens)
    })
}

fn mint(now: u64) -> Result<String, Error> {
    let request = TokenRequest {
        tenant: "contoso".into(),
        roles: vec!["Ml.Vision.Producer".into()],
        ttl_secs: 3600,
        ..TokenRequest::default()
    };
    Ok(token::mint(&request, now, Randomness::from_os()?)?)
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

/// The summary: the table by case and concurrency, ratios, memory, and the targets.
fn report(
    options: &Options,
    rows: &[Row],
    peak: Memory,
    identities: Option<&Identities>,
) -> String {
    let by: HashMap<(Case, usize), &Row> =
        rows.iter().map(|r| ((r.case, r.concurrency), r)).collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## Ratios against (a), the same nats-server authenticating by itself"
    );
    let mut verdicts = Vec::new();
    for &c in &options.concurrency {
        let Some(base) = by.get(&(Case::Static, c)) else {
            continue;
        };
        for case in [Case::Cold, Case::Warm, Case::ColdPlain, Case::WarmPlain] {
            let Some(row) = by.get(&(case, c)) else {
                continue;
            };
            let ratio = |q: f64| {
                micros(row.measured.percentile(q)) / micros(base.measured.percentile(q)).max(1e-9)
            };
            let rate = row.measured.rate() / base.measured.rate().max(1e-9);
            let _ = writeln!(
                out,
                "{}/(a) c={c:<3} p50 {:.2}x  p90 {:.2}x  p99 {:.2}x  conn/s {:.2}x",
                &case.label()[..3],
                ratio(0.5),
                ratio(0.9),
                ratio(0.99),
                rate
            );
            if !case.has_targets() {
                continue;
            }
            verdicts.push(verdict(
                &format!(
                    "{} c={c}: connect p50 <= {TARGET_P50_RATIO}x static",
                    case.label()
                ),
                ratio(0.5) <= TARGET_P50_RATIO,
                &format!("{:.2}x", ratio(0.5)),
            ));
            if c >= 32 {
                verdicts.push(verdict(
                    &format!(
                        "{} c={c}: conn/s >= {TARGET_RATE_RATIO}x static",
                        case.label()
                    ),
                    rate >= TARGET_RATE_RATIO,
                    &format!("{rate:.2}x"),
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
    let _ = writeln!(out, "\n## Targets");
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
}

/// CPU time (user + system, clock ticks) of each process.
struct Cpu {
    static_server: u64,
    callout_server: u64,
    service: u64,
    plain_server: u64,
    plain_service: u64,
    client: u64,
}

impl Pids {
    fn cpu(&self) -> Result<Cpu, Error> {
        Ok(Cpu {
            static_server: cpu_ticks(&self.static_server.to_string())?,
            callout_server: cpu_ticks(&self.callout_server.to_string())?,
            service: cpu_ticks(&self.service.to_string())?,
            plain_server: cpu_ticks(&self.plain_server.to_string())?,
            plain_service: cpu_ticks(&self.plain_service.to_string())?,
            client: cpu_ticks("self")?,
        })
    }
}

impl Cpu {
    fn since(&self, before: &Cpu) -> Cpu {
        Cpu {
            static_server: self.static_server.saturating_sub(before.static_server),
            callout_server: self.callout_server.saturating_sub(before.callout_server),
            service: self.service.saturating_sub(before.service),
            plain_server: self.plain_server.saturating_sub(before.plain_server),
            plain_service: self.plain_service.saturating_sub(before.plain_service),
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

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
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

fn version(bin: &Path) -> Result<String, Error> {
    let out = Command::new(bin).arg("--version").output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
