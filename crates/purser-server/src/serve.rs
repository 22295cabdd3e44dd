//! `purser serve`: build everything, bind the listeners, run until SIGTERM or SIGINT.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use crate::build::{self, BuildError};
use crate::config::{Config, LogFormat, LogLevel};
use crate::http;
use crate::metrics::Metrics;
use crate::stack;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("cannot listen on {addr} ({key}): {source}")]
    Listen {
        addr: String,
        key: &'static str,
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

/// Installs the log subscriber: text or JSON, at the configured level. `RUST_LOG`-style
/// directives are not read: the level comes from config, `PURSER_LOG__LEVEL` or `--log-level`.
pub fn init_logging(level: LogLevel, format: LogFormat) {
    let level = match level {
        LogLevel::Error => tracing::Level::ERROR,
        LogLevel::Warn => tracing::Level::WARN,
        LogLevel::Info => tracing::Level::INFO,
        LogLevel::Debug => tracing::Level::DEBUG,
        LogLevel::Trace => tracing::Level::TRACE,
    };
    // Dependencies speak at debug in volumes no operator wants; purser's own targets follow the level.
    let filter = tracing_subscriber::filter::Targets::new()
        .with_default(level.min(tracing::Level::INFO))
        .with_target("purser", level)
        .with_target("purser_server", level)
        .with_target("purser_authn", level)
        .with_target("purser_authz", level)
        .with_target("purser_token", level);
    use tracing_subscriber::prelude::*;
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .map_event_format(crate::logging::AuditJson)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    let _ = result;
}

async fn bind(addr: &str, key: &'static str) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Listen {
            addr: addr.to_string(),
            key,
            source,
        })
}

/// Resolves when SIGTERM or SIGINT arrives.
async fn terminate() {
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

pub async fn run(config: Config) -> Result<(), ServeError> {
    let registry = prometheus::Registry::new();
    let metrics = Metrics::new(registry).map_err(|e| ServeError::Other(format!("metrics: {e}")))?;
    let built = build::server(&config, &metrics)?;
    let keys = built.keys;
    let tls = built.tls;
    let reloader = crate::reload::spawn(built.sources, metrics.clone());
    let rotation = config
        .token
        .rotation
        .as_ref()
        .map(|r| crate::keys::schedule::Rotation {
            every: r.every.as_secs(),
            overlap: r.overlap.as_secs(),
        });
    {
        let keys = keys.clone();
        let (every, overlap) = rotation.map(|r| (r.every, r.overlap)).unwrap_or((0, 0));
        metrics.export_signing_keys(Box::new(move || crate::metrics::SigningKeysView {
            keys: keys
                .load()
                .states
                .iter()
                .map(|(s, t)| (s.label(), *t))
                .collect(),
            every,
            overlap,
        }));
    }
    if let Some(r) = rotation {
        crate::keys::schedule::spawn(
            Arc::new(config.clone()),
            r,
            Arc::new(purser_core::SystemClock),
        );
    }

    let mut token_paths = vec![config.server.path.clone()];
    if config.server.path != "/auth/token" {
        token_paths.push("/auth/token".into());
    }
    let trusted_proxies = config
        .server
        .trusted_proxies
        .iter()
        .map(|s| {
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServeError::Other(format!("server.trusted_proxies: {e}")))?;
    let clock: Arc<dyn purser_core::Clock> = Arc::new(purser_core::SystemClock);
    let svc = stack::build(stack::Parts {
        endpoint: stack::EndpointSettings {
            services: config.token.service.to_vec(),
            max_scopes: config.server.max_scopes,
            anonymous: config.authn.anonymous,
            trusted_proxies,
            realm: config.token.issuer.clone(),
            clock,
        },
        limiter: built.limiter,
        authn: stack::authn::AuthnSettings {
            issuer: config.token.issuer.clone(),
            chain: built.chain.clone(),
            keys: keys.clone(),
            metrics: metrics.clone(),
            revocations: built.revocations.clone(),
        },
        issue: stack::issue::IssueSettings {
            issuer: config.token.issuer.clone(),
            lifetime: config.token.lifetime.0,
            refresh_lifetime: config.token.refresh_lifetime.0,
            keys: keys.clone(),
            authorizer: built.authorizer.clone(),
            shadow: built.shadow.clone(),
            chain: built.chain.clone(),
            metrics: metrics.clone(),
        },
        metrics: metrics.clone(),
        token_paths,
        keys: keys.clone(),
        readiness: built.readiness.clone(),
        max_in_flight: stack::MAX_IN_FLIGHT,
    });

    let listener = bind(&config.server.listen, "server.listen").await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let metrics_task = if config.metrics.listen.is_empty() {
        None
    } else {
        let l = bind(&config.metrics.listen, "metrics.listen").await?;
        let mut rx = stop_rx.clone();
        tracing::info!(listen = %config.metrics.listen, "metrics at /metrics");
        Some(tokio::spawn(http::serve_metrics(
            l,
            metrics.clone(),
            async move {
                let _ = rx.changed().await;
            },
        )))
    };

    // Readiness for systemd (Type=notify); nothing is sent outside it.
    let notifier = crate::notify::Notifier::from_env();

    // SIGHUP reloads every watched file.
    if let Ok(mut hup) = signal(SignalKind::hangup()) {
        let notifier = notifier.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP received: reloading watched files");
                notifier.reloading();
                reloader.reload_all_done().await;
                notifier.ready("serving");
            }
        });
    }

    tracing::info!(
        listen = %config.server.listen,
        scheme = if tls.is_some() { "https" } else { "http" },
        path = %config.server.path,
        issuer = %config.token.issuer,
        alg = purser_core::Signer::alg(&keys.load().ring),
        kid = purser_core::Signer::key_id(&keys.load().ring),
        "purser serving"
    );
    let acceptor = tls.map(crate::tls::acceptor);
    notifier.ready("serving");
    let stopping = async move {
        terminate().await;
        notifier.stopping();
    };
    http::serve_tokens(listener, svc, acceptor, http::SHUTDOWN_GRACE, stopping)
        .await
        .map_err(|e| ServeError::Other(e.to_string()))?;
    let _ = stop_tx.send(true);
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Logs which configuration file is in use.
pub fn log_config_file(path: &std::path::Path) {
    tracing::info!(config = %path.display(), "configuration loaded");
}
