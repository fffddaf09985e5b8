//! `bucketfs serve`: an S3-compatible HTTP gateway over the embedded store.
//!
//! Design: the S3 protocol (routing, XML, SigV4 header and presigned
//! verification, aws-chunked decoding) is s3s's job; this module only maps
//! operations onto the synchronous [`Store`] API.
//! - [`s3`]: the `S3` trait implementation, one method per operation; every
//!   store call runs in `spawn_blocking` because the store does blocking I/O.
//! - [`body`]: bridges an async request body to the `Read` the store wants,
//!   through a small bounded channel, so uploads stream with bounded memory.
//! - [`multirange`]: an `S3Route` for `Range: bytes=a-b,c-d` GETs (s3s itself
//!   rejects them), answered with `206 multipart/byteranges`.
//! - [`parts`]: UploadPartCopy and `?partNumber=N` reads.
//! - [`errors`]: `StoreError` to S3 error code mapping.
//! - [`incoming`]: request bodies watched on their way into s3s, so that one which
//!   fails to arrive is answered 400 IncompleteBody, not s3s's 500.
//! - [`access`]: signed requests only, except reads of `--public-read` buckets.
//! - [`access_log`]: `--access-log FILE`, one line per request (no secrets).
//! - [`metrics`]: `--metrics-address HOST:PORT`, Prometheus text format.
//!
//! Credentials come from `BUCKETFS_ACCESS_KEY` / `BUCKETFS_SECRET_KEY`; with
//! `SimpleAuth` installed s3s refuses unsigned and wrongly signed requests
//! (403 AccessDenied / SignatureDoesNotMatch) before any handler runs.

mod access;
mod access_log;
mod body;
mod errors;
mod incoming;
pub mod metrics;
mod multirange;
mod parts;
mod s3;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

use crate::store::{parse_pool_specs, Store};

pub use multirange::MAX_RANGES;
pub use s3::MAX_DELETE_KEYS;

/// Longest wait for a request's head (also bounds idle keep-alive connections and slow clients).
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How long requests in flight may run on after SIGINT/SIGTERM.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Why the gateway could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("--drives SPEC (or BUCKETFS_DRIVES) is required")]
    NoDrives,
    #[error("{0} is not set: `bucketfs serve` needs BUCKETFS_ACCESS_KEY and BUCKETFS_SECRET_KEY")]
    MissingCredential(&'static str),
    #[error("cannot open the store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("invalid --metrics-address {addr:?}: {reason}")]
    MetricsAddress { addr: String, reason: String },
    #[error("invalid --address {addr:?}: {reason}")]
    Address { addr: String, reason: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("cannot open the access log {path}: {source}")]
    AccessLog { path: String, source: std::io::Error },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// What `serve` needs, independent of clap.
pub struct ServeConfig {
    pub drives: Option<String>,
    pub parity: Option<usize>,
    pub address: String,
    /// Append one line per request to this file.
    pub access_log: Option<std::path::PathBuf>,
    /// Buckets anonymous clients may read (`--public-read`).
    pub public_read: Vec<String>,
    /// Background scanner pace (`--scanner-speed`).
    pub scanner_speed: crate::store::scanner::ScannerSpeed,
    /// Serve Prometheus metrics on this address (`--metrics-address`).
    pub metrics_address: Option<String>,
}

/// Logging to stderr; RUST_LOG overrides. s3s logs every client error (404s,
/// failed preconditions) at ERROR level, which is noise for a server, so its
/// target is silenced by default.
pub fn init_logging() {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info,s3s=off,hyper=warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        // `bucketfs serve 2>log` (or under a service manager): no colour codes in the file
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn credential(name: &'static str) -> Result<String, ServeError> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Ok(v),
        _ => Err(ServeError::MissingCredential(name)),
    }
}

/// Opens the store and serves until SIGINT or SIGTERM.
pub fn run(cfg: ServeConfig) -> Result<(), ServeError> {
    // Credentials first: refusing to start is cheaper than opening (and
    // locking) the drives only to close them again.
    let access = credential("BUCKETFS_ACCESS_KEY")?;
    let secret = credential("BUCKETFS_SECRET_KEY")?;
    let addr: SocketAddr = cfg.address.parse().map_err(|e: std::net::AddrParseError| {
        ServeError::Address { addr: cfg.address.clone(), reason: e.to_string() }
    })?;
    let metrics_addr: Option<SocketAddr> = match &cfg.metrics_address {
        Some(a) => Some(a.parse().map_err(|e: std::net::AddrParseError| ServeError::MetricsAddress {
            addr: a.clone(),
            reason: e.to_string(),
        })?),
        None => None,
    };
    let spec = cfg.drives.as_deref().ok_or(ServeError::NoDrives)?;
    let access_log = match &cfg.access_log {
        Some(path) => Some(
            access_log::AccessLog::open(path)
                .map_err(|source| ServeError::AccessLog { path: path.display().to_string(), source })?,
        ),
        None => None,
    };
    let pools = parse_pool_specs(&[spec])?;
    let store = Store::open_pools(pools, cfg.parity)?;
    store.set_scanner_speed(cfg.scanner_speed);

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(ServeError::Runtime)?;
    let public = access::PublicReadAccess::new(cfg.public_read.iter().cloned());
    let res = rt.block_on(serve(store.clone(), addr, metrics_addr, access, secret, access_log, public));
    store.close();
    res
}

async fn serve(
    store: Arc<Store>,
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    access: String,
    secret: String,
    access_log: Option<access_log::AccessLog>,
    public: access::PublicReadAccess,
) -> Result<(), ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr: addr.to_string(), source })?;
    let metrics = match metrics_addr {
        Some(a) => {
            let l = tokio::net::TcpListener::bind(a)
                .await
                .map_err(|source| ServeError::Bind { addr: a.to_string(), source })?;
            let bound = l.local_addr().map(|x| x.to_string()).unwrap_or_else(|_| a.to_string());
            tracing::info!(addr = %bound, "serving Prometheus metrics at /metrics");
            let m = Arc::new(metrics::GatewayMetrics::default());
            tokio::spawn(metrics::serve_metrics(l, m.clone(), store.clone()));
            Some(m)
        }
        None => None,
    };
    let mut builder = S3ServiceBuilder::new(s3::Gateway::new(store.clone()));
    // The secret goes into s3s only; it is never logged.
    builder.set_auth(SimpleAuth::from_single(access.clone(), secret));
    // the multi-range route applies the same rules as s3s's access check
    builder.set_access(public.clone());
    builder.set_route(multirange::MultiRange::new(store, public));
    let service = builder.build();
    tracing::info!(%addr, access_key = %access, "serving the S3 API");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(ServeError::Runtime)?;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        // EMFILE and friends are transient; keep serving.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // A response is written as headers then body: with Nagle on, the body's
                // last segment waits for the client's delayed ACK (~40 ms per small GET).
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!("cannot set TCP_NODELAY: {e}");
                }
                let service = service.clone();
                let access_log = access_log.clone();
                let metrics = metrics.clone();
                let logged = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let service = service.clone();
                    let access_log = access_log.clone();
                    let metrics = metrics.clone();
                    async move {
                        let line = access_log.as_ref().map(|_| access_log::AccessLog::request_line(&req));
                        let Some(m) = metrics else {
                            let (req, body_failed) = incoming::watch(req);
                            let resp = incoming::explain(service.call(req).await, &body_failed);
                            if let (Some(log), Some(line), Ok(r)) = (&access_log, &line, &resp) {
                                log.write(line, r.status().as_u16());
                            }
                            return resp;
                        };
                        let probe = metrics::Probe::start(&m, &req);
                        let (req, body_failed) = incoming::watch(probe.count_request(req));
                        let resp = incoming::explain(service.call(req).await, &body_failed);
                        if let (Some(log), Some(line), Ok(r)) = (&access_log, &line, &resp) {
                            log.write(line, r.status().as_u16());
                        }
                        match resp {
                            Ok(r) => Ok(probe.finish(r)),
                            Err(e) => {
                                probe.failed();
                                Err(e)
                            }
                        }
                    }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), logged);
                // Watched so that shutdown lets requests in flight finish.
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!("connection ended: {e}");
                    }
                });
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    tracing::info!("shutting down: stopped accepting, finishing requests in flight");
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}; cutting them off");
        }
    }
    Ok(())
}
