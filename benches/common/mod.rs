//! Shared by the end-to-end benchmarks (`connect`, `storm`): the null callout, nats-server
//! processes started from a configuration file, the command line, and the dev tokens, CONNECT
//! lines and machine facts both benchmarks use.
//!
//! The **null callout** is the yardstick for the service: a responder that does only what the
//! callout protocol forces — take the request apart (opening it first when it is xkey-sealed),
//! mint and sign a user JWT with fixed, explicit permissions, sign the response and seal it
//! when the request was sealed — and checks nothing else: not the token, not the request's
//! expiry, and (unless `--verify` is given) not the request's ed25519 signature, which nothing
//! in the protocol forces a responder to check. It runs as its own process (the benchmark binary
//! re-executed with [`NULL_MODE`]) so its CPU time is read apart from the client's, as the
//! service's is, and it connects with the credentials the dev environment wrote to its
//! directory (`keys/nats-password`, `keys/issuer.nk`, `keys/xkey.nk`).

#![allow(dead_code, reason = "each benchmark uses part of this module")]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crypto_box::aead::Aead;
use crypto_box::{Nonce, PublicKey, SalsaBox, SecretKey};
use data_encoding::BASE64URL_NOPAD;
use entra_callout::dev::token::{self, Randomness, TokenRequest};
use entra_callout::keys;
use entra_callout::nats_jwt::{
    self, AUTH_REQUEST_SUBJECT, AuthorizationRequest, Claims, Permission, Request, Signer, User,
    XKEY_HEADER,
};
use entra_callout::telemetry::unix_now;
use futures_util::StreamExt as _;
use nkeys::XKey;

pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;

/// The hidden command-line flag that turns a benchmark binary into the null callout.
pub(crate) const NULL_MODE: &str = "--null-callout";

/// The account the null callout places its users in: the dev environment's target account.
const NULL_ACCOUNT: &str = "APP";

/// Fixed explicit permissions, the shape the example policies grant `Ml.Vision.Producer`: two
/// publish subjects, subscribe denied. Never a user JWT without permissions.
const NULL_PUBLISH: [&str; 2] = ["contoso.vision.ml.outputs.>", "contoso.vision.ml.metrics.>"];

/// The null callout's default wait between reconnect attempts after it lost its server: the
/// first attempt at once, then every 10 ms — as fast as is sane, so that in a reconnect storm it
/// is the floor a responder can reach (async-nats' default doubles up to 4 s).
pub(crate) const NULL_RECONNECT: Duration = Duration::from_millis(10);

/// What the null callout is started with.
#[derive(Clone, Debug)]
pub(crate) struct NullOptions {
    /// Comma-separated NATS URLs.
    pub(crate) urls: String,
    /// The dev environment's `keys` directory.
    pub(crate) keys: PathBuf,
    /// Open and seal with `keys/xkey.nk`.
    pub(crate) xkey: bool,
    /// Verify the request's signature and claims (`nats_jwt::open_request`) before answering.
    pub(crate) verify: bool,
    /// Wait between reconnect attempts after the first, which is immediate.
    pub(crate) reconnect: Duration,
}

impl NullOptions {
    fn args(&self) -> Vec<String> {
        let mut args = vec![
            NULL_MODE.to_owned(),
            "--urls".to_owned(),
            self.urls.clone(),
            "--keys".to_owned(),
            self.keys.display().to_string(),
        ];
        if self.xkey {
            args.push("--xkey".to_owned());
        }
        if self.verify {
            args.push("--verify".to_owned());
        }
        args.push("--reconnect-ms".to_owned());
        args.push(self.reconnect.as_millis().to_string());
        args
    }

    /// Parses the arguments after [`NULL_MODE`].
    pub(crate) fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, Error> {
        let mut options = Self {
            urls: String::new(),
            keys: PathBuf::new(),
            xkey: false,
            verify: false,
            reconnect: NULL_RECONNECT,
        };
        let mut args = Args::new(args);
        while let Some(option) = args.next_option() {
            match option.as_str() {
                "--urls" => options.urls = args.value()?,
                "--keys" => options.keys = PathBuf::from(args.value()?),
                "--xkey" => options.xkey = true,
                "--verify" => options.verify = true,
                "--reconnect-ms" => options.reconnect = args.millis()?,
                _ => return Err(format!("null callout: {}", args.unknown()).into()),
            }
        }
        if options.urls.is_empty() || options.keys.as_os_str().is_empty() {
            return Err("null callout: --urls and --keys are required".into());
        }
        Ok(options)
    }
}

/// The `main` of a benchmark binary: the null callout when it was re-executed as one, else
/// `run`, whose error is printed after `what`. One place, so every benchmark binary can serve as
/// its own null callout ([`spawn_null`] re-executes the current binary).
pub(crate) fn bench_main(what: &str, run: impl FnOnce() -> Result<(), Error>) -> ExitCode {
    if let Some(code) = null_main() {
        return code;
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{what}: {err}");
            ExitCode::FAILURE
        }
    }
}

/// If this process was started as the null callout, runs it (until killed) and returns its
/// exit code; otherwise `None`.
fn null_main() -> Option<ExitCode> {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some(NULL_MODE) {
        return None;
    }
    let run = || -> Result<(), Error> {
        let options = NullOptions::parse(args)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        runtime.block_on(serve_null(options))
    };
    Some(match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("null callout: {err}");
            ExitCode::FAILURE
        }
    })
}

/// The keys the null callout signs and seals with.
struct NullKeys {
    signer: Signer,
    xkey: Option<XKey>,
    verify: bool,
    /// The X25519 box per server curve key, derived once (the service does the same).
    boxes: Mutex<HashMap<String, Arc<SalsaBox>>>,
}

async fn serve_null(options: NullOptions) -> Result<(), Error> {
    let read = |name: &str| -> Result<String, Error> {
        let path = options.keys.join(name);
        Ok(std::fs::read_to_string(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .trim()
            .to_owned())
    };
    let password = read(keys::NATS_PASSWORD)?;
    let keys = Arc::new(NullKeys {
        signer: Signer::from_seed(&read(keys::ISSUER_SEED)?)?,
        xkey: if options.xkey {
            Some(XKey::from_seed(&read(keys::XKEY_SEED)?)?)
        } else {
            None
        },
        verify: options.verify,
        boxes: Mutex::new(HashMap::new()),
    });
    let reconnect = options.reconnect;
    let urls: Vec<async_nats::ServerAddr> = options
        .urls
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let client = async_nats::ConnectOptions::with_user_and_password("auth".into(), password)
        .name("null-callout")
        .reconnect_delay_callback(move |attempts| {
            if attempts <= 1 {
                Duration::ZERO
            } else {
                reconnect
            }
        })
        .connect(urls)
        .await?;
    let mut requests = client
        .queue_subscribe(AUTH_REQUEST_SUBJECT, "null-callout".into())
        .await?;
    client.flush().await?;
    while let Some(message) = requests.next().await {
        let Some(reply) = message.reply.clone() else {
            continue;
        };
        let keys = Arc::clone(&keys);
        let client = client.clone();
        tokio::spawn(async move {
            let header = message
                .headers
                .as_ref()
                .and_then(|h| h.get(XKEY_HEADER))
                .map(|v| v.as_str().to_owned());
            match null_answer(&keys, &message.payload, header.as_deref(), unix_now()) {
                Ok(answer) => {
                    let _ = client.publish(reply, answer.into()).await;
                }
                Err(err) => eprintln!("null callout: cannot answer: {err}"),
            }
        });
    }
    Ok(())
}

/// The whole null callout for one request: open (when sealed), decode, mint, sign, seal.
fn null_answer(
    keys: &NullKeys,
    payload: &[u8],
    xkey_header: Option<&str>,
    now: u64,
) -> Result<Vec<u8>, Error> {
    let request = if keys.verify {
        nats_jwt::open_request(payload, xkey_header, keys.xkey.as_ref(), now, 5)?
    } else {
        let opened;
        let token = match (&keys.xkey, xkey_header) {
            (Some(service), Some(server)) => {
                opened = open_sealed(keys, service, payload, server)?;
                opened.as_slice()
            }
            _ => payload,
        };
        // The claims, unverified: the middle chunk of the JWT.
        let claims = std::str::from_utf8(token)?
            .split('.')
            .nth(1)
            .ok_or("request is not a JWT")?;
        let claims: Claims<AuthorizationRequest> =
            serde_json::from_slice(&BASE64URL_NOPAD.decode(claims.as_bytes())?)?;
        Request {
            claims,
            server_xkey: xkey_header.map(str::to_owned),
        }
    };
    let mut user = Claims::<User>::new(
        &request.claims.nats.user_nkey,
        NULL_ACCOUNT,
        "null-callout",
        now + 3600,
    );
    user.nats.publish = Permission {
        allow: NULL_PUBLISH.iter().map(|s| (*s).to_owned()).collect(),
        deny: Vec::new(),
    };
    user.nats.subscribe = Permission {
        allow: Vec::new(),
        deny: vec![">".to_owned()],
    };
    let jwt = nats_jwt::encode(&mut user, &keys.signer, now)?;
    Ok(nats_jwt::encode_response(
        &request,
        Ok(&jwt),
        &keys.signer,
        keys.xkey.as_ref(),
        now,
    )?)
}

/// Opens an xkv1 box from `server` (nkeys' layout: `xkv1` ‖ 24-byte nonce ‖ NaCl box).
fn open_sealed(
    keys: &NullKeys,
    service: &XKey,
    payload: &[u8],
    server: &str,
) -> Result<Vec<u8>, Error> {
    let rest = payload.strip_prefix(b"xkv1").ok_or("not an xkv1 box")?;
    if rest.len() <= 24 {
        return Err("short xkv1 box".into());
    }
    let (nonce, sealed) = rest.split_at(24);
    let salsa = {
        let mut boxes = keys.boxes.lock().map_err(|_| "poisoned")?;
        match boxes.get(server) {
            Some(found) => Arc::clone(found),
            None => {
                let (_, secret) = nkeys::decode_seed(&service.seed()?)?;
                let (_, public) = nkeys::from_public_key(server)?;
                let derived = Arc::new(SalsaBox::new(
                    &PublicKey::from(public),
                    &SecretKey::from(secret),
                ));
                boxes.insert(server.to_owned(), Arc::clone(&derived));
                derived
            }
        }
    };
    salsa
        .decrypt(Nonce::from_slice(nonce), sealed)
        .map_err(|_| "cannot open the request".into())
}

/// A child process killed and reaped on drop.
pub(crate) struct Proc {
    pub(crate) name: String,
    pub(crate) child: Child,
}

impl Proc {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts the null callout: this benchmark binary again, in [`NULL_MODE`], output to `log`.
pub(crate) fn spawn_null(options: &NullOptions, log: &Path) -> Result<Proc, Error> {
    let file = std::fs::File::create(log)?;
    let child = Command::new(std::env::current_exe()?)
        .args(options.args())
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()?;
    Ok(Proc {
        name: "null callout".into(),
        child,
    })
}

/// Starts nats-server with `conf`, logging to `log` (`-D` adds debug lines), and waits until it
/// is ready; returns the process and its client port (read from the log).
pub(crate) fn spawn_nats(
    bin: &Path,
    conf: &Path,
    log: &Path,
    debug: bool,
) -> Result<(Proc, u16), Error> {
    let _ = std::fs::remove_file(log);
    let mut command = Command::new(bin);
    command.arg("-c").arg(conf).arg("-l").arg(log);
    if debug {
        command.arg("-D");
    }
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let mut proc = Proc {
        name: format!("nats-server {}", conf.display()),
        child,
    };
    let port = wait_ready(&mut proc, log, Duration::from_secs(30))?;
    Ok((proc, port))
}

/// Waits for "Server is ready" in `log`; the client port from "Listening for client
/// connections on".
pub(crate) fn wait_ready(proc: &mut Proc, log: &Path, timeout: Duration) -> Result<u16, Error> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("Server is ready")
            && let Some(port) = text
                .split("Listening for client connections on ")
                .nth(1)
                .and_then(|rest| rest.lines().next())
                .and_then(|addr| addr.trim().rsplit(':').next())
                .and_then(|p| p.parse().ok())
        {
            return Ok(port);
        }
        if proc.child.try_wait()?.is_some() {
            return Err(format!("{} exited; log:\n{text}", proc.name).into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Err(format!("{} not ready within {timeout:?}", proc.name).into())
}

/// A loopback port that was free a moment ago.
pub(crate) fn free_port() -> Result<u16, Error> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A command line read one option at a time. Shared so that the benchmarks and the null callout
/// skip cargo's `--bench` alike, name the option whose value is missing, and parse values (numbers,
/// milliseconds, comma-separated lists) the same way.
pub(crate) struct Args<I> {
    args: I,
    /// The option last returned by [`Args::next_option`], for error messages.
    option: String,
}

impl<I: Iterator<Item = String>> Args<I> {
    pub(crate) fn new(args: impl IntoIterator<Item = String, IntoIter = I>) -> Self {
        Self {
            args: args.into_iter(),
            option: String::new(),
        }
    }

    /// The next option, `None` at the end.
    pub(crate) fn next_option(&mut self) -> Option<String> {
        loop {
            let option = self.args.next()?;
            // cargo bench passes `--bench` to every harness = false target.
            if option != "--bench" {
                self.option.clone_from(&option);
                return Some(option);
            }
        }
    }

    /// The current option's value: the next argument.
    pub(crate) fn value(&mut self) -> Result<String, Error> {
        self.args
            .next()
            .ok_or_else(|| format!("{} needs a value", self.option).into())
    }

    /// The current option's value, parsed.
    pub(crate) fn parse<T>(&mut self) -> Result<T, Error>
    where
        T: FromStr,
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        Ok(self.value()?.parse()?)
    }

    /// The current option's value, a whole number of milliseconds.
    pub(crate) fn millis(&mut self) -> Result<Duration, Error> {
        Ok(Duration::from_millis(self.parse()?))
    }

    /// The current option's value, a comma-separated list, each item read by `item`.
    pub(crate) fn list<T, E: Into<Error>>(
        &mut self,
        mut item: impl FnMut(&str) -> Result<T, E>,
    ) -> Result<Vec<T>, Error> {
        self.value()?
            .split(',')
            .map(|s| item(s).map_err(Into::into))
            .collect()
    }

    /// The error for an option the program does not know: the current one.
    pub(crate) fn unknown(&self) -> Error {
        format!("unknown option {}", self.option).into()
    }
}

/// `CONNECT {...}\r\nPING\r\n` presenting `token` as client `name`; tokens are base64url and
/// dots, so they need no JSON escaping.
pub(crate) fn connect_line(name: &str, token: &str) -> Vec<u8> {
    format!(
        "CONNECT {{\"verbose\":false,\"pedantic\":false,\"auth_token\":\"{token}\",\
         \"name\":\"{name}\",\"lang\":\"raw\",\"version\":\"0\",\"protocol\":1,\
         \"headers\":true,\"no_responders\":true}}\r\nPING\r\n"
    )
    .into_bytes()
}

/// Mints `n` app-only dev tokens, each for a new made-up service principal, on two threads.
pub(crate) fn mint_tokens(n: usize, now: u64) -> Result<Vec<String>, Error> {
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

/// One app-only dev token for a new made-up service principal with `Ml.Vision.Producer`.
pub(crate) fn mint(now: u64) -> Result<String, Error> {
    let request = TokenRequest {
        tenant: "contoso".into(),
        roles: vec!["Ml.Vision.Producer".into()],
        ttl_secs: 3600,
        ..TokenRequest::default()
    };
    Ok(token::mint(&request, now, Randomness::from_os()?)?)
}

/// The 1, 5 and 15 minute load averages, or "unknown".
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// What `bin --version` prints.
pub(crate) fn version(bin: &Path) -> Result<String, Error> {
    let out = Command::new(bin).arg("--version").output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
