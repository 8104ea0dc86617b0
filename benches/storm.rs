//! Reconnect-storm benchmark: N clients, each with its own token, connected through the
//! callout; then a nats-server is killed and restarted on the same port with the same
//! configuration, and every client it dropped reconnects. What users feel is how long that
//! takes, and whether the callout is back on the bus before they are: a client whose CONNECT
//! reaches nats-server while no responder is subscribed waits for nats-server's callout timeout
//! (the `authorization { timeout: 2 }` of these configurations) and gets `Authorization
//! Violation`.
//!
//! `cargo bench --bench storm [-- OPTIONS]` runs, for each topology and case:
//! * topologies: `single` (one nats-server, killed and restarted) and `cluster` (three
//!   nats-servers with full-mesh routes and the same `auth_callout`; the responder connected
//!   with all three URLs; clients spread evenly over the nodes; the node the responder is
//!   connected to is the one restarted — the hard case: its clients and the responder race);
//! * cases: `static` (token auth, no callout: the floor), `null` (the null callout of
//!   `common/mod.rs`, a separate process that admits anyone at the protocol's minimum cost and
//!   reconnects at once, then every `--null-reconnect-ms`, default 10: the floor a responder
//!   can reach) and `ours` (`entra-callout serve` with the example policies and the
//!   Entra-shaped dev issuer, as `entra-callout dev` runs it).
//!
//! The configurations are the dev environment's (`entra_callout::dev::env::nats_server_config`
//! and `service_config`, fixed ports instead of random ones so a restart keeps them, plus a
//! `cluster {}` block of the shape `tests/support/nats.rs` uses), with fresh keys per row
//! (`keys::init`). nats-servers run with `-D`: the callout timeout is logged at debug level only
//! (`Authorization callout response not received in time on account "AUTH"`), and every row
//! runs with the same logging.
//!
//! Clients are tokio tasks on raw TCP speaking the NATS protocol (INFO, CONNECT with the token,
//! PING, PONG), holding their connection and answering PINGs. On losing it a client retries
//! every `--retry-ms` (100) plus a random jitter of at most `--jitter-ms` (50), like client
//! libraries' defaults, against the same server (single) or the next URL of its list (cluster),
//! until `--deadline` (10 s) after the kill. Per row it prints: the restarted server's time to
//! ready; the responder's time until its subscription is listed again in `/connz` of any node;
//! the time until every dropped client is back, with p50/p99 of the individual times (from the
//! kill); callout timeouts (from the nats-servers' logs, and as seen by clients: `Authorization
//! Violation` after at least the 2 s timeout), refusals (`Authorization Violation` sooner) and
//! clients not back; and checks the targets.
//!
//! Rows run in `--rounds` rounds (default 3), each round every topology and case in turn, so
//! one run gives a range; targets count as met only when met in every round.
//!
//! Options: `--clients N` (default 2000), `--rounds R`, `--topology single,cluster`, `--cases
//! static,null,ours`, `--deadline S` (10), `--retry-ms`, `--jitter-ms`, `--initial-concurrency
//! N` (connects in flight while the clients first connect; default 64), `--no-xkey`,
//! `--null-reconnect-ms`, `--outage-ms D` (the killed server starts again only D ms after the
//! kill, default 0: a slower restart, during which responders back off while clients keep
//! retrying every 100–150 ms). Each client holds one socket: the open-files limit must exceed N (+
//! some); the benchmark raises its soft limit to the hard one (`prlimit`, once) when needed,
//! else asks for `ulimit -n`. Every loop is bounded by a count or a deadline.

mod common;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{
    Args, Error, NullOptions, Proc, free_port, load_average, mint_tokens, spawn_nats, spawn_null,
    version,
};
use entra_callout::dev::env::{nats_server_config, service_config};
use entra_callout::dev::find_nats_server;
use entra_callout::dev::issuer::DevIssuer;
use entra_callout::keys;
use entra_callout::telemetry::unix_now;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};

/// nats-server's callout timeout in these configurations (`authorization { timeout: 2 }`).
const CALLOUT_TIMEOUT: Duration = Duration::from_secs(2);
/// A violation answered this late counts as a callout timeout on the client side.
const TIMEOUT_SEEN: Duration = CALLOUT_TIMEOUT.saturating_sub(Duration::from_millis(100));
/// Bounds of one connection attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The nats-server debug line of a callout that got no answer in time.
const TIMEOUT_LOG: &str = "Authorization callout response not received";
/// The subject whose subscription marks a responder as back.
const AUTH_SUBJECT: &str = "$SYS.REQ.USER.AUTH";

/// The targets.
const TARGET_CLIENTS: usize = 2000;
const TARGET_ALL_BACK: Duration = Duration::from_millis(1500);

const POLICIES: [(&str, &str); 3] = [
    ("tenants.yaml", include_str!("../policies/tenants.yaml")),
    ("ml-events.yaml", include_str!("../policies/ml-events.yaml")),
    ("delivery.yaml", include_str!("../policies/delivery.yaml")),
];

fn main() -> ExitCode {
    common::bench_main("storm bench", run)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Topology {
    Single,
    Cluster,
}

impl Topology {
    fn name(self) -> &'static str {
        match self {
            Self::Single => "single",
            Self::Cluster => "cluster",
        }
    }

    fn nodes(self) -> usize {
        match self {
            Self::Single => 1,
            Self::Cluster => 3,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    Static,
    Null,
    Ours,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Self::Static => "static",
            Self::Null => "null",
            Self::Ours => "ours",
        }
    }
}

struct Options {
    clients: usize,
    topologies: Vec<Topology>,
    cases: Vec<Case>,
    deadline: Duration,
    retry: Duration,
    jitter_ms: u64,
    initial_concurrency: usize,
    xkey: bool,
    null_reconnect: Duration,
    rounds: usize,
    outage: Duration,
}

impl Options {
    fn parse() -> Result<Self, Error> {
        let mut options = Self {
            clients: TARGET_CLIENTS,
            topologies: vec![Topology::Single, Topology::Cluster],
            cases: vec![Case::Static, Case::Null, Case::Ours],
            deadline: Duration::from_secs(10),
            retry: Duration::from_millis(100),
            jitter_ms: 50,
            initial_concurrency: 64,
            xkey: true,
            null_reconnect: common::NULL_RECONNECT,
            rounds: 3,
            outage: Duration::ZERO,
        };
        let mut args = Args::new(std::env::args().skip(1));
        while let Some(option) = args.next_option() {
            match option.as_str() {
                "--clients" => options.clients = args.parse()?,
                "--rounds" => options.rounds = args.parse()?,
                "--outage-ms" => options.outage = args.millis()?,
                "--deadline" => options.deadline = Duration::from_secs_f64(args.parse()?),
                "--retry-ms" => options.retry = args.millis()?,
                "--jitter-ms" => options.jitter_ms = args.parse()?,
                "--initial-concurrency" => options.initial_concurrency = args.parse()?,
                "--no-xkey" => options.xkey = false,
                "--null-reconnect-ms" => options.null_reconnect = args.millis()?,
                "--topology" => {
                    options.topologies = args.list(|t| match t {
                        "single" => Ok(Topology::Single),
                        "cluster" => Ok(Topology::Cluster),
                        other => Err(format!("unknown topology {other}")),
                    })?;
                }
                "--cases" => {
                    options.cases = args.list(|c| match c {
                        "static" => Ok(Case::Static),
                        "null" => Ok(Case::Null),
                        "ours" => Ok(Case::Ours),
                        other => Err(format!("unknown case {other}")),
                    })?;
                }
                _ => return Err(args.unknown()),
            }
        }
        if options.clients == 0 || options.initial_concurrency == 0 || options.rounds == 0 {
            return Err("--clients, --rounds and --initial-concurrency must be positive".into());
        }
        Ok(options)
    }
}

fn run() -> Result<(), Error> {
    let options = Options::parse()?;
    let nats_server = find_nats_server()?;
    ensure_open_files(options.clients + 256)?;
    println!("# entra-callout reconnect-storm benchmark");
    println!(
        "machine: {} CPU(s); load average before: {}; nats-server: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average(),
        version(&nats_server).unwrap_or_default()
    );
    println!(
        "{} clients, retry every {} ms + jitter <= {} ms, deadline {:.0} s after the kill, \
         server down {} ms before its restart, xkey {}",
        options.clients,
        options.retry.as_millis(),
        options.jitter_ms,
        options.deadline.as_secs_f64(),
        options.outage.as_millis(),
        if options.xkey { "on" } else { "off" }
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let issuer = runtime.block_on(DevIssuer::start(SocketAddr::from(([127, 0, 0, 1], 0))))?;

    let started = Instant::now();
    let tokens = mint_tokens(options.clients, unix_now())?;
    println!(
        "minted {} dev tokens in {:.1} s",
        tokens.len(),
        started.elapsed().as_secs_f64()
    );
    let static_token = "s".repeat(tokens.first().map_or(64, String::len));

    let mut results = Vec::new();
    for round in 1..=options.rounds {
        for &topology in &options.topologies {
            for &case in &options.cases {
                let setup = Setup::start(
                    &nats_server,
                    topology,
                    case,
                    &options,
                    &issuer,
                    &static_token,
                )?;
                let payloads: Vec<Arc<Vec<u8>>> = match case {
                    Case::Static => {
                        let line = Arc::new(connect_line(&static_token));
                        vec![line; options.clients]
                    }
                    Case::Null | Case::Ours => {
                        tokens.iter().map(|t| Arc::new(connect_line(t))).collect()
                    }
                };
                let result = runtime.block_on(storm(setup, payloads, &options))?;
                println!("round {round}: {}", result.line());
                results.push(result);
            }
        }
    }
    println!("{}", report(&results, options.rounds));
    println!("load average after: {}", load_average());
    drop(issuer);
    let broken: Vec<String> = results.iter().filter_map(|r| r.broken.clone()).collect();
    if !broken.is_empty() {
        return Err(broken.join("; ").into());
    }
    Ok(())
}

/// One nats-server of a row: its configuration file, ports and log, and the process.
struct Node {
    conf: PathBuf,
    log: PathBuf,
    port: u16,
    monitor: u16,
    proc: Proc,
}

/// The servers and the responder of one row, in their own directory.
struct Setup {
    topology: Topology,
    case: Case,
    nodes: Vec<Node>,
    responder: Option<Proc>,
    responder_log: Option<PathBuf>,
    nats_server: PathBuf,
    /// Last, so the processes are gone before their directory is removed.
    dir: tempfile::TempDir,
}

impl Setup {
    fn start(
        bin: &Path,
        topology: Topology,
        case: Case,
        options: &Options,
        issuer: &DevIssuer,
        static_token: &str,
    ) -> Result<Self, Error> {
        let dir = tempfile::tempdir()?;
        let keys_dir = dir.path().join("keys");
        let created = keys::init(&keys_dir)?;
        let password = std::fs::read_to_string(keys_dir.join(keys::NATS_PASSWORD))?
            .trim()
            .to_owned();
        let n = topology.nodes();
        let ports: Vec<(u16, u16, u16)> = (0..n)
            .map(|_| Ok((free_port()?, free_port()?, free_port()?)))
            .collect::<Result<_, Error>>()?;
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, _, route)| format!("\"nats-route://127.0.0.1:{route}\""))
            .collect();
        let mut nodes = Vec::new();
        for (i, &(port, monitor, route)) in ports.iter().enumerate() {
            let mut conf = match case {
                Case::Static => format!(
                    "listen: \"127.0.0.1:{port}\"\nhttp: \"127.0.0.1:{monitor}\"\n\
                     server_name: entra-callout-dev\nmax_control_line: 32KB\n\
                     authorization {{\n  timeout: 2\n  token: \"{static_token}\"\n}}\n"
                ),
                Case::Null | Case::Ours => nats_server_config(
                    port,
                    0,
                    monitor,
                    &password,
                    &created.issuer,
                    options.xkey.then_some(created.xkey.as_str()),
                    None,
                ),
            };
            if n > 1 {
                conf = conf.replace(
                    "server_name: entra-callout-dev",
                    &format!("server_name: storm-{i}"),
                );
                let _ = write!(
                    conf,
                    "cluster {{\n  name: storm\n  listen: \"127.0.0.1:{route}\"\n  routes: [ {} ]\n}}\n",
                    routes.join(", ")
                );
            }
            let conf_path = dir.path().join(format!("nats-server-{i}.conf"));
            std::fs::write(&conf_path, conf)?;
            let log = dir.path().join(format!("nats-server-{i}.log"));
            let (proc, listening) = spawn_nats(bin, &conf_path, &log, true)?;
            if listening != port {
                return Err(format!("nats-server {i} listens on {listening}, not {port}").into());
            }
            nodes.push(Node {
                conf: conf_path,
                log,
                port,
                monitor,
                proc,
            });
        }
        let urls: Vec<String> = nodes
            .iter()
            .map(|node| format!("nats://127.0.0.1:{}", node.port))
            .collect();
        let (responder, responder_log) = match case {
            Case::Static => (None, None),
            Case::Null => {
                let log = dir.path().join("null-callout.log");
                let proc = spawn_null(
                    &NullOptions {
                        urls: urls.join(","),
                        keys: keys_dir,
                        xkey: options.xkey,
                        verify: false,
                        reconnect: options.null_reconnect,
                    },
                    &log,
                )?;
                (Some(proc), Some(log))
            }
            Case::Ours => {
                let policies = dir.path().join("policies");
                std::fs::create_dir(&policies)?;
                for (name, text) in POLICIES {
                    std::fs::write(policies.join(name), text)?;
                }
                let config = service_config(
                    nodes.first().map_or(0, |node| node.port),
                    free_port()?,
                    &issuer.authority(),
                    &policies,
                    options.xkey,
                );
                let first = urls.first().cloned().unwrap_or_default();
                let config = config.replace(
                    &format!("url: {first}\n"),
                    &format!("url: {}\n", urls.join(",")),
                );
                let config_path = dir.path().join("config.yaml");
                std::fs::write(&config_path, config)?;
                let log = dir.path().join("entra-callout.log");
                let file = std::fs::File::create(&log)?;
                let child = Command::new(env!("CARGO_BIN_EXE_entra-callout"))
                    .arg("serve")
                    .arg("--config")
                    .arg(&config_path)
                    .stdin(Stdio::null())
                    .stdout(file.try_clone()?)
                    .stderr(file)
                    .spawn()?;
                (
                    Some(Proc {
                        name: "entra-callout serve".into(),
                        child,
                    }),
                    Some(log),
                )
            }
        };
        Ok(Self {
            topology,
            case,
            nodes,
            responder,
            responder_log,
            nats_server: bin.to_path_buf(),
            dir,
        })
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes
            .iter()
            .map(|node| SocketAddr::from(([127, 0, 0, 1], node.port)))
            .collect()
    }

    fn responder_log(&self) -> String {
        self.responder_log
            .as_ref()
            .and_then(|log| std::fs::read_to_string(log).ok())
            .unwrap_or_default()
    }
}

/// Counters shared by the clients of one row.
#[derive(Default)]
struct Counters {
    connected: AtomicUsize,
    gave_up: AtomicUsize,
    dropped: AtomicUsize,
    back: AtomicUsize,
    /// `Authorization Violation` answers after the restart, split by how long they took.
    timeouts: AtomicUsize,
    refusals: AtomicUsize,
    /// Attempts that found no server (refused, closed, timed out before INFO).
    down: AtomicUsize,
}

/// What one client saw.
struct ClientReport {
    /// From the kill to its PONG on a new connection, when it was dropped and came back.
    back_after: Option<Duration>,
    dropped: bool,
}

/// What a row measured.
struct StormResult {
    topology: Topology,
    case: Case,
    clients: usize,
    dropped: usize,
    back: Vec<Duration>,
    server_ready: Option<Duration>,
    responder_back: Option<Duration>,
    log_timeouts: usize,
    client_timeouts: usize,
    refusals: usize,
    down_attempts: usize,
    initial: Duration,
    /// Why the row's figures do not mean what they say, when they don't.
    broken: Option<String>,
}

async fn storm(
    mut setup: Setup,
    payloads: Vec<Arc<Vec<u8>>>,
    options: &Options,
) -> Result<StormResult, Error> {
    let addrs = Arc::new(setup.addrs());
    let name = format!("{}/{}", setup.topology.name(), setup.case.name());
    // The responder answers on every node before any client starts.
    if let Some(probe) = payloads.first() {
        let deadline = Instant::now() + Duration::from_secs(30);
        for &addr in addrs.iter() {
            loop {
                if let Attempt::Connected(_) = attempt(addr, probe).await {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "{name}: the responder does not answer on {addr}; its log:\n{}",
                        setup.responder_log()
                    )
                    .into());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    let counters = Arc::new(Counters::default());
    let initial = Arc::new(Semaphore::new(options.initial_concurrency));
    let (kill_tx, kill_rx) = watch::channel(None::<Instant>);
    let (stop_tx, stop_rx) = watch::channel(false);
    let n_nodes = addrs.len();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(payloads.len());
    for (i, payload) in payloads.iter().enumerate() {
        let client = Client {
            index: i,
            home: i % n_nodes,
            addrs: Arc::clone(&addrs),
            payload: Arc::clone(payload),
            counters: Arc::clone(&counters),
            initial: Arc::clone(&initial),
            kill: kill_rx.clone(),
            stop: stop_rx.clone(),
            retry: options.retry,
            jitter_ms: options.jitter_ms,
        };
        tasks.push(tokio::spawn(client.run()));
    }
    let wanted = payloads.len();
    let initial_deadline = Instant::now() + Duration::from_secs(120);
    while counters.connected.load(Ordering::Relaxed) + counters.gave_up.load(Ordering::Relaxed)
        < wanted
        && Instant::now() < initial_deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connected = counters.connected.load(Ordering::Relaxed);
    let initial_time = started.elapsed();
    if connected < wanted {
        let _ = stop_tx.send(true);
        return Err(format!(
            "{name}: only {connected} of {wanted} clients connected in {:.0} s; responder log:\n{}",
            initial_time.as_secs_f64(),
            setup.responder_log()
        )
        .into());
    }
    println!(
        "{name}: {connected} clients connected in {:.1} s",
        initial_time.as_secs_f64()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    // No callout answered late while connecting: only what follows the kill is counted.
    let victim = match setup.responder {
        Some(_) if n_nodes > 1 => responder_node(&setup).await.unwrap_or(0),
        _ => 0,
    };
    let offsets: Vec<u64> = setup
        .nodes
        .iter()
        .map(|node| std::fs::metadata(&node.log).map_or(0, |m| m.len()))
        .collect();
    let expected = (0..wanted).filter(|i| i % n_nodes == victim).count();

    // The restart: kill, start again on the same port with the same configuration.
    let monitors: Vec<u16> = setup.nodes.iter().map(|node| node.monitor).collect();
    let restarted_log = setup
        .dir
        .path()
        .join(format!("nats-server-{victim}.restarted.log"));
    let kill_at = Instant::now();
    let _ = kill_tx.send(Some(kill_at));
    let node = setup.nodes.get_mut(victim).ok_or("no such node")?;
    node.proc.kill();
    let deadline = kill_at + options.deadline;
    let watch_responder = setup.responder.is_some().then(|| {
        tokio::spawn(async move {
            while Instant::now() < deadline {
                for &monitor in &monitors {
                    if subscribed(monitor).await {
                        return Some(kill_at.elapsed());
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            None
        })
    });
    let bin = setup.nats_server.clone();
    let conf = node.conf.clone();
    let log = restarted_log.clone();
    let outage = options.outage;
    let (proc, server_ready) = tokio::task::spawn_blocking(move || -> Result<_, Error> {
        // A restart that takes longer (a pod rescheduled, a machine rebooting) stays down longer.
        std::thread::sleep(outage);
        let (proc, _) = spawn_nats(&bin, &conf, &log, true)?;
        Ok((proc, kill_at.elapsed()))
    })
    .await??;
    node.proc = proc;
    node.log = restarted_log;

    while Instant::now() < deadline && counters.back.load(Ordering::Relaxed) < expected {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = stop_tx.send(true);
    let mut back = Vec::new();
    let mut dropped = 0;
    for task in tasks {
        let report = task.await?;
        dropped += usize::from(report.dropped);
        back.extend(report.back_after);
    }
    back.sort_unstable();
    let responder_back = match watch_responder {
        Some(task) => task.await?,
        None => None,
    };
    // Callout timeouts logged after the kill: the restarted node's new log, the others' tails.
    let mut log_timeouts = 0;
    for (i, node) in setup.nodes.iter().enumerate() {
        let text = std::fs::read(&node.log).unwrap_or_default();
        let from = if i == victim {
            0
        } else {
            usize::try_from(offsets.get(i).copied().unwrap_or(0)).unwrap_or(0)
        };
        let tail = String::from_utf8_lossy(text.get(from..).unwrap_or_default());
        log_timeouts += tail.matches(TIMEOUT_LOG).count();
    }
    let broken = (dropped != expected).then(|| {
        format!("{name}: {dropped} clients dropped, {expected} expected (connected to the restarted node)")
    });
    Ok(StormResult {
        topology: setup.topology,
        case: setup.case,
        clients: wanted,
        dropped,
        back,
        server_ready: Some(server_ready),
        responder_back,
        log_timeouts,
        client_timeouts: counters.timeouts.load(Ordering::Relaxed),
        refusals: counters.refusals.load(Ordering::Relaxed),
        down_attempts: counters.down.load(Ordering::Relaxed),
        initial: initial_time,
        broken,
    })
}

/// The node whose `/connz` lists the responder's subscription.
async fn responder_node(setup: &Setup) -> Option<usize> {
    for (i, node) in setup.nodes.iter().enumerate() {
        if subscribed(node.monitor).await {
            return Some(i);
        }
    }
    None
}

/// Whether nats-server's `/connz` on `monitor` lists a subscription to the request subject.
async fn subscribed(monitor: u16) -> bool {
    let get = async {
        let mut stream = TcpStream::connect(("127.0.0.1", monitor)).await.ok()?;
        stream
            .write_all(
                b"GET /connz?subs=1&acc=AUTH HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            )
            .await
            .ok()?;
        let mut body = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut body)
            .await
            .ok()?;
        Some(String::from_utf8_lossy(&body).contains(&format!("\"{AUTH_SUBJECT}\"")))
    };
    tokio::time::timeout(Duration::from_secs(1), get)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// One client: connects (bounded concurrency), holds, and after the kill reconnects.
struct Client {
    index: usize,
    home: usize,
    addrs: Arc<Vec<SocketAddr>>,
    payload: Arc<Vec<u8>>,
    counters: Arc<Counters>,
    initial: Arc<Semaphore>,
    kill: watch::Receiver<Option<Instant>>,
    stop: watch::Receiver<bool>,
    retry: Duration,
    jitter_ms: u64,
}

impl Client {
    async fn run(mut self) -> ClientReport {
        let mut report = ClientReport {
            back_after: None,
            dropped: false,
        };
        let mut rng =
            0x9E37_79B9_7F4A_7C15_u64 ^ (self.index as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let home = self.addrs.get(self.home).copied();
        let Some(home) = home else { return report };
        // First connection: retried for at most a minute.
        let mut conn = None;
        {
            let Ok(_permit) = self.initial.acquire().await else {
                return report;
            };
            let until = Instant::now() + Duration::from_secs(60);
            while Instant::now() < until {
                if let Attempt::Connected(c) = attempt(home, &self.payload).await {
                    conn = Some(c);
                    break;
                }
                tokio::time::sleep(self.retry).await;
            }
        }
        let Some(mut conn) = conn else {
            self.counters.gave_up.fetch_add(1, Ordering::Relaxed);
            return report;
        };
        self.counters.connected.fetch_add(1, Ordering::Relaxed);
        // Hold until dropped or stopped.
        if !hold(&mut conn, &mut self.stop).await {
            return report;
        }
        report.dropped = true;
        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        let dropped_at = Instant::now();
        let kill_at = (*self.kill.borrow()).unwrap_or(dropped_at);
        let mut next = self.home;
        loop {
            let jitter = if self.jitter_ms == 0 {
                0
            } else {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % (self.jitter_ms + 1)
            };
            let wait = self.retry + Duration::from_millis(jitter);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stopped(&mut self.stop) => return report,
            }
            // Single server: the same one again; a cluster: the next URL of the list.
            if self.addrs.len() > 1 {
                next = (next + 1) % self.addrs.len();
            }
            let Some(&addr) = self.addrs.get(next) else {
                return report;
            };
            let sent = Instant::now();
            let outcome = tokio::select! {
                outcome = attempt(addr, &self.payload) => outcome,
                () = stopped(&mut self.stop) => return report,
            };
            match outcome {
                Attempt::Connected(mut c) => {
                    report.back_after = Some(kill_at.elapsed());
                    self.counters.back.fetch_add(1, Ordering::Relaxed);
                    // Stay connected until the row ends, as a real client would.
                    let _ = hold(&mut c, &mut self.stop).await;
                    return report;
                }
                Attempt::Violation => {
                    if sent.elapsed() >= TIMEOUT_SEEN {
                        self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                    } else {
                        self.counters.refusals.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Attempt::Down => {
                    self.counters.down.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Completes once the row is stopped (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Holds a connection, answering PINGs; `true` when the server dropped it, `false` when the
/// row stopped.
async fn hold(conn: &mut BufReader<TcpStream>, stop: &mut watch::Receiver<bool>) -> bool {
    let mut line = String::new();
    loop {
        line.clear();
        tokio::select! {
            read = conn.read_line(&mut line) => match read {
                Ok(0) | Err(_) => return true,
                Ok(_) => {
                    if line.starts_with("PING") && conn.get_mut().write_all(b"PONG\r\n").await.is_err() {
                        return true;
                    }
                }
            },
            () = stopped(stop) => return false,
        }
    }
}

enum Attempt {
    Connected(BufReader<TcpStream>),
    Violation,
    Down,
}

/// One connection attempt: TCP connect, INFO, CONNECT + PING, then PONG or `-ERR`.
async fn attempt(addr: SocketAddr, payload: &[u8]) -> Attempt {
    let run = async {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .ok()?
            .ok()?;
        stream.set_nodelay(true).ok()?;
        let mut conn = BufReader::new(stream);
        let mut line = String::new();
        conn.read_line(&mut line).await.ok()?;
        if !line.starts_with("INFO ") {
            return None;
        }
        conn.get_mut().write_all(payload).await.ok()?;
        for _ in 0..16 {
            line.clear();
            if conn.read_line(&mut line).await.ok()? == 0 {
                return None;
            }
            if line.starts_with("PONG") {
                return Some(Attempt::Connected(conn));
            }
            if line.starts_with("-ERR") {
                return Some(if line.contains("Authorization Violation") {
                    Attempt::Violation
                } else {
                    Attempt::Down
                });
            }
            if line.starts_with("PING") {
                conn.get_mut().write_all(b"PONG\r\n").await.ok()?;
            }
        }
        None
    };
    tokio::time::timeout(READ_TIMEOUT, run)
        .await
        .ok()
        .flatten()
        .unwrap_or(Attempt::Down)
}

/// The CONNECT line of this benchmark's clients (named `storm`), presenting `token`.
fn connect_line(token: &str) -> Vec<u8> {
    common::connect_line("storm", token)
}

impl StormResult {
    fn percentile(&self, q: f64) -> Option<Duration> {
        let n = self.back.len();
        if n == 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        self.back.get(rank - 1).copied()
    }

    fn all_back(&self) -> Option<Duration> {
        (self.back.len() == self.dropped && self.dropped > 0)
            .then(|| self.back.last().copied())
            .flatten()
    }

    fn line(&self) -> String {
        let secs = |d: Option<Duration>| {
            d.map_or_else(|| "–".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()))
        };
        format!(
            "{:<7} {:<6} clients {} (connected in {:.1} s), dropped {}: server ready {}, responder \
             subscribed {}, all back {} (p50 {}, p99 {}), not back {}; callout timeouts: server \
             log {}, clients {}; refusals {}; attempts that found no server {}",
            self.topology.name(),
            self.case.name(),
            self.clients,
            self.initial.as_secs_f64(),
            self.dropped,
            secs(self.server_ready),
            if self.case == Case::Static {
                "–".to_owned()
            } else {
                secs(self.responder_back)
            },
            secs(self.all_back()),
            secs(self.percentile(0.5)),
            secs(self.percentile(0.99)),
            self.dropped - self.back.len(),
            self.log_timeouts,
            self.client_timeouts,
            self.refusals,
            self.down_attempts,
        )
    }
}

/// Median, min and max of some per-round durations, as `1.20 s [1.05–1.41]`.
fn spread(values: &[Option<Duration>]) -> String {
    let mut known: Vec<Duration> = values.iter().flatten().copied().collect();
    if known.is_empty() {
        return "–".to_owned();
    }
    known.sort_unstable();
    let median = known.get(known.len() / 2).copied().unwrap_or_default();
    let missing = values.len() - known.len();
    let mut text = format!("{:.2} s", median.as_secs_f64());
    if let (Some(min), Some(max)) = (known.first(), known.last())
        && known.len() > 1
    {
        let _ = write!(text, " [{:.2}–{:.2}]", min.as_secs_f64(), max.as_secs_f64());
    }
    if missing > 0 {
        let _ = write!(text, " (none in {missing} round(s))");
    }
    text
}

/// Whether a round of a row meets the target for its topology.
fn meets_target(r: &StormResult) -> bool {
    let timeouts = r.log_timeouts.max(r.client_timeouts);
    match r.topology {
        Topology::Single => r.all_back().is_some_and(|t| t <= TARGET_ALL_BACK) && timeouts == 0,
        Topology::Cluster => r.all_back().is_some() && timeouts == 0,
    }
}

/// The summary: one line per topology and case over all rounds (medians, [min–max]; counts
/// summed), then the targets, met only when met in every round.
fn report(results: &[StormResult], rounds: usize) -> String {
    let mut groups: Vec<((Topology, Case), Vec<&StormResult>)> = Vec::new();
    for r in results {
        let key = (r.topology, r.case);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, rows)) => rows.push(r),
            None => groups.push((key, vec![r])),
        }
    }
    let mut out = format!(
        "\n## Reconnect storm: {rounds} round(s); times from the kill, median [min–max] over \
         rounds; counts summed over rounds\n\
         | topology | case | clients | dropped | server ready | responder back | all back | p50 | p99 | not back | callout timeouts (log / clients) | refusals |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let mut verdicts = Vec::new();
    for ((topology, case), rows) in &groups {
        let collect = |f: &dyn Fn(&StormResult) -> Option<Duration>| -> Vec<Option<Duration>> {
            rows.iter().map(|r| f(r)).collect()
        };
        let sum = |f: &dyn Fn(&StormResult) -> usize| -> usize { rows.iter().map(|r| f(r)).sum() };
        let clients = rows.first().map_or(0, |r| r.clients);
        let _ = writeln!(
            out,
            "| {} | {} | {clients} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} |",
            topology.name(),
            case.name(),
            sum(&|r| r.dropped),
            spread(&collect(&|r| r.server_ready)),
            if *case == Case::Static {
                "–".to_owned()
            } else {
                spread(&collect(&|r| r.responder_back))
            },
            spread(&collect(&StormResult::all_back)),
            spread(&collect(&|r| r.percentile(0.5))),
            spread(&collect(&|r| r.percentile(0.99))),
            sum(&|r| r.dropped - r.back.len()),
            sum(&|r| r.log_timeouts),
            sum(&|r| r.client_timeouts),
            sum(&|r| r.refusals),
        );
        let met = rows.iter().filter(|r| meets_target(r)).count();
        let timeouts = sum(&|r| r.log_timeouts.max(r.client_timeouts));
        let what = match topology {
            Topology::Single => format!(
                "{clients} clients all back within {:.1} s, no callout timeout",
                TARGET_ALL_BACK.as_secs_f64()
            ),
            Topology::Cluster => "a node restart costs no client a callout timeout".to_owned(),
        };
        verdicts.push(format!(
            "{:<4} {}/{}: {what}: met in {met}/{} round(s); all back {}; {timeouts} timeouts{}",
            if met == rows.len() { "met" } else { "MISS" },
            topology.name(),
            case.name(),
            rows.len(),
            spread(&collect(&StormResult::all_back)),
            if clients < TARGET_CLIENTS {
                format!(" (only {clients} clients: not the target's load)")
            } else {
                String::new()
            },
        ));
    }
    let _ = writeln!(
        out,
        "\n## Targets (the static and null rows are references: what the floor reaches)"
    );
    for v in verdicts {
        let _ = writeln!(out, "{v}");
    }
    out
}

/// Raises the soft open-files limit to the hard one (once, with `prlimit`) when `needed`
/// exceeds it; fails with what to do when that is not enough.
fn ensure_open_files(needed: usize) -> Result<(), Error> {
    let read = || -> Option<(usize, usize)> {
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        let mut fields = line.split_whitespace().skip(3);
        let soft = fields.next()?.parse().ok()?;
        let hard = fields.next()?.parse().unwrap_or(usize::MAX);
        Some((soft, hard))
    };
    let Some((soft, hard)) = read() else {
        return Ok(());
    };
    if soft >= needed {
        return Ok(());
    }
    if hard >= needed {
        let _ = Command::new("prlimit")
            .arg("--pid")
            .arg(std::process::id().to_string())
            .arg(format!("--nofile={hard}:{hard}"))
            .status();
        if read().is_some_and(|(soft, _)| soft >= needed) {
            return Ok(());
        }
    }
    Err(format!(
        "{needed} open files needed, the limit is {soft} (hard {hard}): run `ulimit -n {needed}` \
         first, or use fewer --clients"
    )
    .into())
}
