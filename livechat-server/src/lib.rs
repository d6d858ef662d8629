//! The reference livechat server: `livechat-core` mounted in axum with the REST API,
//! health probes and a demo workspace, on SQLite by default.
//!
//! [`run`] is the whole server; `main` only parses settings and waits for a signal.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use livechat_core::auth::JwtAuthenticator;
use livechat_core::cluster::{ChangeFeed, RedisFanout};
use livechat_core::error::StoreError;
use livechat_core::moderation::FailurePolicy;
use livechat_core::sms::twilio::TwilioGateway;
use livechat_core::sms::{SmsOutbox, SmsRetry};
use livechat_core::store::sqlite::Durability;
use livechat_core::store::{PostgresStore, PostgresStoreOptions, SqliteStore, SqliteStoreOptions};
use livechat_core::{LiveChat, LiveChatBuilder, TrustedProxies};
use livechat_plugins::{Plugin, PluginEngine, PluginSettings, bundled};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

pub mod config;
pub mod demo;
pub mod http;

pub use config::{Config, redact_url};

/// The store the server runs on.
#[derive(Debug, Clone)]
pub enum Storage {
    /// The embedded default: one node.
    Sqlite(SqliteStore),
    /// The production store: one node or several.
    Postgres(PostgresStore),
}

impl Storage {
    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.ping().await,
            Self::Postgres(s) => s.ping().await,
        }
    }

    /// Closes the connections, waiting for running statements.
    pub async fn close(&self) {
        match self {
            Self::Sqlite(s) => s.close().await,
            Self::Postgres(s) => s.close().await,
        }
    }

    fn install(&self, builder: LiveChatBuilder) -> LiveChatBuilder {
        match self {
            Self::Sqlite(s) => builder.store(s.clone()),
            Self::Postgres(s) => builder.store(s.clone()),
        }
    }
}

/// What connects this node to the others, when there are others.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    /// The Redis fan-out, with `LIVECHAT_REDIS_URL`.
    pub redis: Option<RedisFanout>,
    /// The Postgres change feed, on Postgres unless turned off.
    pub change_feed: Option<Arc<ChangeFeed>>,
}

/// What a started server tells its operator (and tests).
#[derive(Debug, Clone)]
pub struct Started {
    /// The address it listens on.
    pub addr: std::net::SocketAddr,
    /// The admin token, when it was generated (not configured).
    pub generated_admin_token: Option<String>,
    /// The demo workspace, contact and agent token, when demo mode is on.
    pub demo: Option<demo::Demo>,
    /// The livechat handle, for server-side sends.
    pub chat: LiveChat,
}

/// The parts of a built server.
#[derive(Debug, Clone)]
pub struct Server {
    /// The axum app: `/socket.io`, the REST API and the probes.
    pub router: axum::Router,
    /// The livechat handle.
    pub chat: LiveChat,
    /// The store, for readiness.
    pub store: Storage,
    /// Redis and the change feed, for readiness.
    pub cluster: Cluster,
    /// What to print at start.
    pub generated_admin_token: Option<String>,
    /// The demo records.
    pub demo: Option<demo::Demo>,
    /// The SMS outbox, when Twilio is configured; it stops when the last clone goes.
    pub sms_outbox: Option<Arc<SmsOutbox>>,
}

/// Builds the server: opens the store, sets up auth and the demo records.
pub async fn build(config: &Config) -> anyhow::Result<Server> {
    let store = open_store(config).await?;
    let redis = match (&config.redis_url, &store) {
        (None, _) => None,
        (Some(_), Storage::Sqlite(_)) => anyhow::bail!(
            "LIVECHAT_REDIS_URL is for several nodes, and several nodes need a shared \
             Postgres database (LIVECHAT_DATABASE_URL=postgres://...), not a SQLite file"
        ),
        (Some(url), Storage::Postgres(_)) => Some(
            RedisFanout::connect_on(url, &config.redis_channel)
                .await
                .with_context(|| format!("connecting to Redis at {}", redact_url(url)))?,
        ),
    };

    let (authenticator, signing_secret) = authenticator(config)?;
    let origins = config.origin_policy();
    let metrics = prometheus();
    let mut builder = LiveChat::builder();
    let mut plugin_names = Vec::new();
    for plugin in load_plugins(config).await? {
        plugin_names.push(livechat_core::moderation::Moderator::name(&plugin).to_owned());
        builder = builder.moderator(plugin);
    }
    if let Some(redis) = &redis {
        builder = builder.fanout(redis.clone());
    }
    let (layer, chat) = store
        .install(builder)
        .authenticator(authenticator)
        .limits(config.limits())
        .allowed_origins(origins.clone())
        .trusted_proxies(TrustedProxies(config.trusted_proxies.clone()))
        .build_layer();
    if let Some(redis) = &redis {
        redis.deliver_to(chat.clone());
    }
    let change_feed = match &store {
        Storage::Postgres(pg) if config.change_feed => {
            Some(Arc::new(ChangeFeed::start(pg.pool().clone(), chat.clone())))
        }
        _ => None,
    };
    let cluster = Cluster { redis, change_feed };

    let (admin_token, generated_admin_token) = match &config.admin_token {
        Some(t) if t.len() < 16 => {
            anyhow::bail!("LIVECHAT_ADMIN_TOKEN must be at least 16 characters")
        }
        Some(t) => (t.clone(), None),
        None => {
            let t = random_secret();
            (t.clone(), Some(t))
        }
    };

    let demo = if config.demo {
        Some(demo::ensure(&chat, signing_secret.as_deref()).await?)
    } else {
        None
    };

    let (twilio, sms_outbox) = sms_channel(config, &chat)?;
    let state = http::AppState {
        chat: chat.clone(),
        store: store.clone(),
        cluster: cluster.clone(),
        admin_token: Arc::from(admin_token),
        twilio,
        plugins: plugin_names.into(),
        metrics,
    };
    let router = http::with_edge_checks(
        http::router(state, config.max_frame_bytes).layer(layer),
        origins,
    );
    Ok(Server {
        router,
        chat,
        store,
        cluster,
        generated_admin_token,
        demo,
        sms_outbox,
    })
}

/// The process's Prometheus recorder, installed as the global `metrics` recorder the
/// first time it is asked for. Latencies are histograms with
/// [`livechat_core::metrics::LATENCY_BUCKETS`], so that they add up across nodes.
/// When the host already installed another recorder, this one stays empty and
/// `/metrics` says so.
pub fn prometheus() -> PrometheusHandle {
    use livechat_core::metrics as m;
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".into()),
                    m::LATENCY_BUCKETS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(m::COMMIT_BATCH.into()),
                        m::BATCH_BUCKETS,
                    )
                });
            let recorder = match builder {
                Ok(b) => b.build_recorder(),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics buckets refused; latencies become summaries");
                    PrometheusBuilder::new().build_recorder()
                }
            };
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed: /metrics stays empty");
            }
            m::describe();
            metrics::describe_counter!(http::HTTP_ERRORS, "HTTP requests answered with an error, by code");
            // Histogram samples wait in a queue until upkeep folds them into buckets:
            // without a scrape, only this keeps that queue short. A thread, not a task:
            // the recorder outlives any one runtime.
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "no metrics upkeep thread: histograms grow until scraped");
            }
            handle
        })
        .clone()
}

/// The Twilio webhooks' settings and the SMS outbox, as configured.
fn sms_channel(
    config: &Config,
    chat: &LiveChat,
) -> anyhow::Result<(Option<http::TwilioWebhooks>, Option<Arc<SmsOutbox>>)> {
    let public_url = config
        .public_url
        .as_deref()
        .map(|u| u.trim_end_matches('/').to_owned());
    let webhooks = match (&config.twilio_auth_token, &public_url) {
        (None, _) => None,
        (Some(_), None) => anyhow::bail!(
            "LIVECHAT_TWILIO_AUTH_TOKEN needs LIVECHAT_PUBLIC_URL: the URL Twilio calls, \
             which its webhook signatures cover"
        ),
        (Some(token), Some(url)) => Some(http::TwilioWebhooks {
            auth_token: Arc::from(token.as_str()),
            public_url: Arc::from(url.as_str()),
        }),
    };
    let outbox = match (&config.twilio_account_sid, &config.twilio_auth_token) {
        (None, _) => None,
        (Some(_), None) => {
            anyhow::bail!("LIVECHAT_TWILIO_ACCOUNT_SID needs LIVECHAT_TWILIO_AUTH_TOKEN")
        }
        (Some(sid), Some(token)) => {
            let mut gateway = TwilioGateway::new(sid, token, &config.twilio_api_base_url)?;
            if let Some(url) = &public_url {
                gateway = gateway.status_callback(format!("{url}/webhooks/twilio/status"));
            }
            let mut retry = SmsRetry::default();
            retry.max_attempts = config.sms_max_attempts.max(1);
            retry.first_delay = std::time::Duration::from_millis(config.sms_retry_ms.max(1));
            retry.default_from = config.twilio_from_number.clone();
            Some(Arc::new(SmsOutbox::start(chat.clone(), gateway, retry)))
        }
    };
    Ok((webhooks, outbox))
}

/// Runs the server on `listener` until `shutdown` resolves, then drains within the
/// configured bound. `on_start` is told the address and the generated secrets.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_start: impl FnOnce(&Started),
) -> anyhow::Result<()> {
    let server = build(&config).await?;
    let addr = listener.local_addr()?;
    on_start(&Started {
        addr,
        generated_admin_token: server.generated_admin_token.clone(),
        demo: server.demo.clone(),
        chat: server.chat.clone(),
    });
    tracing::info!(%addr, database = %redact_url(&config.database_url), "livechat listening");

    let chat = server.chat.clone();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let app = server
        .router
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    // Small frames (acks, messages) must leave at once, not wait for Nagle's algorithm
    // to coalesce them with the next write: without this, p99 under load is tens of ms.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    let bound = config.shutdown_timeout();
    let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
        tracing::info!(
            ?bound,
            sockets = chat.connected_sockets(),
            "draining: taking no new connections or sends, answering those taken"
        );
        // The listener stays open while the sockets drain: their clients get every
        // answer, and newcomers a `503` that sends them elsewhere rather than a
        // refused connection. A fifth of the bound is left for HTTP requests.
        let report = chat.drain(bound * 4 / 5).await;
        tracing::info!(
            told = report.told,
            unanswered = report.unanswered,
            took = ?report.took,
            "drained: closing the listener"
        );
    });
    let mut stop_rx = stop_rx;
    tokio::select! {
        r = serve => r.context("server error")?,
        () = async {
            let _ = stop_rx.wait_for(|stopped| *stopped).await;
            tokio::time::sleep(bound).await;
        } => tracing::warn!(?bound, "shutdown bound reached with requests still running"),
    }
    server.store.close().await;
    Ok(())
}

/// The bundled plugins asked for, then the operator's own, in that order.
async fn load_plugins(config: &Config) -> anyhow::Result<Vec<Plugin>> {
    let wanted: Vec<&str> = config
        .plugins
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty() && *p != "none")
        .collect();
    if wanted.is_empty() && config.plugin_paths.is_empty() {
        return Ok(Vec::new());
    }
    let engine = PluginEngine::new()?;
    let settings =
        |name: &str, config_file: Option<&std::path::Path>| -> anyhow::Result<PluginSettings> {
            let text = match config_file {
                Some(path) => std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?,
                None => String::new(),
            };
            Ok(PluginSettings::new(name)
                .config(text)
                .deadline(std::time::Duration::from_millis(config.plugin_deadline_ms))
                .memory_limit(config.plugin_memory_mb << 20)
                .failure_policy(if config.plugin_fail_open {
                    FailurePolicy::Open
                } else {
                    FailurePolicy::Closed
                }))
        };
    let mut plugins = Vec::new();
    for name in wanted {
        let (wasm, file) = match name {
            "sanitize" => (bundled::SANITIZE, config.sanitize_config.as_deref()),
            "moderation" => (bundled::MODERATION, config.moderation_config.as_deref()),
            other => anyhow::bail!(
                "unknown bundled plugin `{other}` (there are `sanitize` and `moderation`)"
            ),
        };
        plugins.push(engine.load(wasm, settings(name, file)?).await?);
        tracing::info!(plugin = name, "plugin loaded");
    }
    for PathPlugin {
        path,
        name,
        config_file,
    } in path_plugins(config)?
    {
        let wasm =
            std::fs::read(path).with_context(|| format!("reading plugin {}", path.display()))?;
        plugins.push(engine.load(&wasm, settings(&name, config_file)?).await?);
        tracing::info!(
            plugin = %name,
            path = %path.display(),
            config = ?config_file,
            "plugin loaded"
        );
    }
    Ok(plugins)
}

/// A plugin of `--plugin-paths`: its file, its name, its configuration file.
#[derive(Debug, PartialEq)]
struct PathPlugin<'a> {
    path: &'a std::path::Path,
    name: String,
    config_file: Option<&'a std::path::Path>,
}

/// The plugins of `--plugin-paths`, named after their files, each with the file
/// `--plugin-configs` gives it. A configuration that names no such plugin, or two of
/// them, or a plugin named twice, stops the start: a typo would otherwise leave a
/// plugin running unconfigured.
fn path_plugins(config: &Config) -> anyhow::Result<Vec<PathPlugin<'_>>> {
    let mut plugins: Vec<PathPlugin<'_>> = config
        .plugin_paths
        .iter()
        .map(|path| PathPlugin {
            path,
            name: path
                .file_stem()
                .map_or_else(|| "plugin".into(), |s| s.to_string_lossy().into_owned()),
            config_file: None,
        })
        .collect();
    let mut configured = std::collections::HashSet::new();
    for entry in &config.plugin_configs {
        let name = entry.plugin.as_str();
        anyhow::ensure!(
            configured.insert(name),
            "--plugin-configs names `{name}` twice"
        );
        let mut named = plugins.iter_mut().filter(|p| p.name == name);
        match (named.next(), named.next()) {
            (Some(plugin), None) => plugin.config_file = Some(&entry.path),
            (Some(_), Some(_)) => anyhow::bail!(
                "--plugin-configs names `{name}`, and two files of --plugin-paths are called \
                 that: rename one"
            ),
            (None, _) => anyhow::bail!(
                "--plugin-configs names `{name}`, but no file of --plugin-paths is called \
                 `{name}.wasm`{}",
                match name {
                    "sanitize" | "moderation" =>
                        format!(" (the bundled `{name}` plugin takes --{name}-config)"),
                    _ => String::new(),
                }
            ),
        }
    }
    Ok(plugins)
}

async fn open_store(config: &Config) -> anyhow::Result<Storage> {
    let url = &config.database_url;
    if url.starts_with("sqlite:") {
        let durability = match config.sqlite_durability {
            config::SqliteDurability::Full => Durability::Full,
            config::SqliteDurability::Normal => Durability::Normal,
        };
        SqliteStore::open_with(url, SqliteStoreOptions::new().durability(durability))
            .await
            .map(Storage::Sqlite)
            .with_context(|| format!("opening {}", redact_url(url)))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        let options = PostgresStoreOptions::new().max_connections(config.database_max_connections);
        PostgresStore::open_with(url, options)
            .await
            .map(Storage::Postgres)
            .with_context(|| format!("opening {}", redact_url(url)))
    } else {
        anyhow::bail!(
            "unsupported database URL {}: use sqlite://path or postgres://user@host/db",
            redact_url(url)
        )
    }
}

/// The authenticator, and the HS256 secret when the server may sign demo tokens.
fn authenticator(config: &Config) -> anyhow::Result<(JwtAuthenticator, Option<Vec<u8>>)> {
    if let Some(path) = &config.jwt_public_key {
        let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let auth = JwtAuthenticator::rs256_pem(&pem)
            .or_else(|_| JwtAuthenticator::es256_pem(&pem))
            .context("LIVECHAT_JWT_PUBLIC_KEY is neither an RSA nor a P-256 public key in PEM")?;
        return Ok((auth, None));
    }
    let secret = match &config.jwt_secret {
        Some(s) if s.len() < 32 => anyhow::bail!("LIVECHAT_JWT_SECRET must be at least 32 bytes"),
        Some(s) => s.clone().into_bytes(),
        None => {
            tracing::warn!(
                "LIVECHAT_JWT_SECRET is unset: using a random secret, tokens will not survive a restart"
            );
            random_secret().into_bytes()
        }
    };
    Ok((JwtAuthenticator::hs256(&secret), Some(secret)))
}

fn random_secret() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 40)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::Parser as _;

    use super::{Config, PathPlugin, path_plugins};

    fn config(args: &[&str]) -> Config {
        Config::parse_from(std::iter::once("livechat-server").chain(args.iter().copied()))
    }

    #[test]
    fn path_plugins_get_the_configuration_named_after_their_file() {
        let c = config(&[
            "--plugin-paths",
            "/opt/a.wasm,/opt/words.wasm",
            "--plugin-configs",
            "words=/etc/words.txt",
        ]);
        assert_eq!(
            path_plugins(&c).unwrap(),
            [
                PathPlugin {
                    path: Path::new("/opt/a.wasm"),
                    name: "a".into(),
                    config_file: None,
                },
                PathPlugin {
                    path: Path::new("/opt/words.wasm"),
                    name: "words".into(),
                    config_file: Some(Path::new("/etc/words.txt")),
                },
            ]
        );
    }

    #[test]
    fn a_configuration_for_no_plugin_or_an_ambiguous_one_is_refused() {
        let err = |args: &[&str]| path_plugins(&config(args)).unwrap_err().to_string();
        assert!(
            err(&["--plugin-paths", "/opt/a.wasm", "--plugin-configs", "b=/x"])
                .contains("no file of --plugin-paths is called `b.wasm`")
        );
        assert!(err(&["--plugin-configs", "moderation=/x"]).contains("takes --moderation-config"));
        assert!(
            err(&[
                "--plugin-paths",
                "/opt/a.wasm,/srv/a.wasm",
                "--plugin-configs",
                "a=/x"
            ])
            .contains("two files of --plugin-paths")
        );
        assert!(
            err(&[
                "--plugin-paths",
                "/opt/a.wasm",
                "--plugin-configs",
                "a=/x,a=/y"
            ])
            .contains("names `a` twice")
        );
        assert!(
            Config::try_parse_from(["livechat-server", "--plugin-configs", "just-a-file"])
                .unwrap_err()
                .to_string()
                .contains("is not `name=file`")
        );
    }

    #[test]
    fn redacts_credentials() {
        assert_eq!(
            super::config::redact_url("postgres://u:pw@h/db"),
            "postgres://***@h/db"
        );
        assert_eq!(
            super::config::redact_url("sqlite://livechat.db"),
            "sqlite://livechat.db"
        );
        assert_eq!(
            super::config::redact_url("postgres://u@h/db?password=pw&sslmode=require"),
            "postgres://***@h/db?password=***&sslmode=require"
        );
        assert_eq!(
            super::config::redact_url("redis+unix:///run/redis.sock?db=1&pass=pw"),
            "redis+unix:///run/redis.sock?db=1&pass=***"
        );
        assert_eq!(
            super::config::redact_url("postgres://h/db?application_name=a@b"),
            "postgres://h/db?application_name=a@b"
        );
    }
}
