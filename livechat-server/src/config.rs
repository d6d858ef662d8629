//! Settings: every one a flag and a `LIVECHAT_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use livechat_core::{OriginPolicy, Rate};

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per line.
    Json,
}

/// How durable a SQLite commit is before it is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SqliteDurability {
    /// `synchronous=FULL`: an acknowledged message survives a power loss.
    Full,
    /// `synchronous=NORMAL`: faster; survives a crash of the process, but the last
    /// acknowledged messages can be lost in a power loss or an OS crash.
    Normal,
}

/// The configuration file of one plugin loaded by path (`--plugin-configs name=file`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginConfigFile {
    /// The plugin: the file name of its `.wasm` without the extension.
    pub plugin: String,
    /// The file whose text the plugin's `configure` is given.
    pub path: PathBuf,
}

/// The reference livechat server.
///
/// With no settings it listens on 127.0.0.1:3000, keeps its data in ./livechat.db,
/// creates a demo workspace, contact and agent, and prints a token to connect with.
#[derive(Clone, Parser)]
#[command(name = "livechat-server", version, about)]
pub struct Config {
    /// Listen address.
    #[arg(long, env = "LIVECHAT_BIND", default_value = "127.0.0.1:3000")]
    pub bind: SocketAddr,

    /// Runtime worker threads; 0: one per available core. With one, the server runs
    /// on a single-threaded runtime.
    #[arg(long, env = "LIVECHAT_WORKER_THREADS", default_value_t = 0)]
    pub worker_threads: usize,

    /// Database: `sqlite://path` (created if missing) or `postgres://user@host/db`
    /// (migrated at start; needed for several nodes).
    #[arg(
        long,
        env = "LIVECHAT_DATABASE_URL",
        default_value = "sqlite://livechat.db",
        hide_env_values = true
    )]
    pub database_url: String,

    /// Postgres: connections in the pool.
    #[arg(long, env = "LIVECHAT_DATABASE_MAX_CONNECTIONS", default_value_t = 10)]
    pub database_max_connections: u32,

    /// Redis for several nodes (`redis://host:6379/`): every node publishes what it
    /// commits there and delivers what the others publish. Needs a Postgres database.
    #[arg(long, env = "LIVECHAT_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// The Redis pub/sub channel the nodes of one deployment share.
    #[arg(
        long,
        env = "LIVECHAT_REDIS_CHANNEL",
        default_value = "livechat:messages"
    )]
    pub redis_channel: String,

    /// Postgres: listen to the change feed, so that rows other programs insert into
    /// `livechat_messages` (and messages of other nodes) are delivered. On by default.
    #[arg(long, env = "LIVECHAT_CHANGE_FEED", default_value_t = true, action = clap::ArgAction::Set)]
    pub change_feed: bool,

    /// Bearer token of the admin routes. Generated and printed at start when unset.
    #[arg(long, env = "LIVECHAT_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// HS256 secret for agent tokens (at least 32 bytes). Generated at start when
    /// unset, which makes every token invalid after a restart: set it in production.
    #[arg(
        long,
        env = "LIVECHAT_JWT_SECRET",
        hide_env_values = true,
        conflicts_with = "jwt_public_key"
    )]
    pub jwt_secret: Option<String>,

    /// A file with an RS256 or ES256 public key (PEM) to verify agent tokens with,
    /// instead of an HS256 secret.
    #[arg(long, env = "LIVECHAT_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,

    /// `send_message` budget per user (all their sockets, across reconnects): per second.
    #[arg(long, env = "LIVECHAT_RATE_LIMIT_PER_SEC", default_value_t = 10)]
    pub rate_limit_per_sec: u32,

    /// `send_message` budget per user: burst.
    #[arg(long, env = "LIVECHAT_RATE_LIMIT_BURST", default_value_t = 30)]
    pub rate_limit_burst: u32,

    /// `send_message` budget per socket: per second.
    #[arg(long, env = "LIVECHAT_SOCKET_RATE_LIMIT_PER_SEC", default_value_t = 10)]
    pub socket_rate_limit_per_sec: u32,

    /// `send_message` budget per socket: burst.
    #[arg(long, env = "LIVECHAT_SOCKET_RATE_LIMIT_BURST", default_value_t = 30)]
    pub socket_rate_limit_burst: u32,

    /// `send_message` budget per workspace (all its agents): per second.
    #[arg(
        long,
        env = "LIVECHAT_WORKSPACE_RATE_LIMIT_PER_SEC",
        default_value_t = 100
    )]
    pub workspace_rate_limit_per_sec: u32,

    /// `send_message` budget per workspace: burst.
    #[arg(
        long,
        env = "LIVECHAT_WORKSPACE_RATE_LIMIT_BURST",
        default_value_t = 300
    )]
    pub workspace_rate_limit_burst: u32,

    /// Connection attempts per client address: per second.
    #[arg(long, env = "LIVECHAT_CONNECT_RATE_PER_IP", default_value_t = 5)]
    pub connect_rate_per_ip: u32,

    /// Connection attempts per client address: burst.
    #[arg(long, env = "LIVECHAT_CONNECT_BURST_PER_IP", default_value_t = 20)]
    pub connect_burst_per_ip: u32,

    /// Open connections per client address.
    #[arg(long, env = "LIVECHAT_MAX_CONNECTIONS_PER_IP", default_value_t = 50)]
    pub max_connections_per_ip: usize,

    /// Open connections per user.
    #[arg(long, env = "LIVECHAT_MAX_CONNECTIONS_PER_USER", default_value_t = 20)]
    pub max_connections_per_user: usize,

    /// Open connections in all.
    #[arg(long, env = "LIVECHAT_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Browser origins allowed to connect, comma-separated (`*` for any). Unset: pages
    /// from localhost, and from `LIVECHAT_PUBLIC_URL` when that is set.
    #[arg(long, env = "LIVECHAT_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,

    /// Proxies (addresses or CIDR ranges, comma-separated) whose `X-Forwarded-For` names
    /// the client. Unset: the peer address is the client.
    #[arg(long, env = "LIVECHAT_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_proxy)]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// The public base URL of this server, e.g. `https://chat.example.com`.
    #[arg(long, env = "LIVECHAT_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Twilio account SID. With the auth token, agents' replies sent with
    /// `msgType: "sms"` go out through Twilio's Messages API.
    #[arg(long, env = "LIVECHAT_TWILIO_ACCOUNT_SID")]
    pub twilio_account_sid: Option<String>,

    /// Twilio auth token: the API credential and the key of the webhooks' signatures.
    /// Turns on `/webhooks/twilio/sms` and `/webhooks/twilio/status` (needs
    /// `LIVECHAT_PUBLIC_URL`, the URL Twilio calls and signs).
    #[arg(long, env = "LIVECHAT_TWILIO_AUTH_TOKEN", hide_env_values = true)]
    pub twilio_auth_token: Option<String>,

    /// The sender number for workspaces without an SMS number of their own.
    #[arg(long, env = "LIVECHAT_TWILIO_FROM_NUMBER")]
    pub twilio_from_number: Option<String>,

    /// Base URL of Twilio's API.
    #[arg(long, env = "LIVECHAT_TWILIO_API_BASE_URL", default_value = livechat_core::sms::twilio::DEFAULT_API_BASE_URL)]
    pub twilio_api_base_url: String,

    /// Tries per outbound SMS before it is `failed`.
    #[arg(long, env = "LIVECHAT_SMS_MAX_ATTEMPTS", default_value_t = 6)]
    pub sms_max_attempts: u32,

    /// Milliseconds before an SMS is tried again; the wait doubles with every try, up
    /// to 5 minutes.
    #[arg(long, env = "LIVECHAT_SMS_RETRY_MS", default_value_t = 2000)]
    pub sms_retry_ms: u64,

    /// Largest message body in bytes.
    #[arg(long, env = "LIVECHAT_MAX_BODY_BYTES", default_value_t = 16 * 1024)]
    pub max_body_bytes: usize,

    /// Largest Engine.IO frame (and REST request body) in bytes.
    #[arg(long, env = "LIVECHAT_MAX_FRAME_BYTES", default_value_t = 1024 * 1024)]
    pub max_frame_bytes: usize,

    /// Deepest JSON nesting of a request.
    #[arg(long, env = "LIVECHAT_MAX_JSON_DEPTH", default_value_t = 32)]
    pub max_json_depth: usize,

    /// Rooms one socket may be in.
    #[arg(long, env = "LIVECHAT_MAX_ROOMS_PER_SOCKET", default_value_t = 100)]
    pub max_rooms_per_socket: usize,

    /// SQLite durability: `full` (an ack survives power loss) or `normal` (faster; the
    /// last acks can be lost in a power loss or OS crash, not in a process crash).
    #[arg(long, env = "LIVECHAT_SQLITE_DURABILITY", value_enum, default_value_t = SqliteDurability::Full)]
    pub sqlite_durability: SqliteDurability,

    /// Sends waiting for the commit writer; more are refused with `unavailable`.
    #[arg(long, env = "LIVECHAT_COMMIT_QUEUE", default_value_t = 4096)]
    pub commit_queue: usize,

    /// Most messages in one commit.
    #[arg(long, env = "LIVECHAT_COMMIT_BATCH", default_value_t = 256)]
    pub commit_batch: usize,

    /// Milliseconds the writer waits for more sends before a commit (0: no wait).
    #[arg(long, env = "LIVECHAT_COMMIT_WAIT_MS", default_value_t = 0)]
    pub commit_wait_ms: u64,

    /// Most missed messages replayed to a reconnecting client; past that it is told
    /// to reload.
    #[arg(long, env = "LIVECHAT_MAX_RECOVERY_MESSAGES", default_value_t = 1000)]
    pub max_recovery_messages: usize,

    /// Seconds a client has from opening its transport to connecting to the namespace
    /// with its token; a half-open connection is closed after that.
    #[arg(long, env = "LIVECHAT_CONNECT_TIMEOUT_SECS", default_value_t = 10)]
    pub connect_timeout_secs: u64,

    /// Outgoing packets buffered per socket; a socket that falls further behind is
    /// disconnected to recover.
    #[arg(long, env = "LIVECHAT_SOCKET_BUFFER_PACKETS", default_value_t = 256)]
    pub socket_buffer_packets: usize,

    /// Bytes a websocket reads at a time (kept for the connection's life).
    #[arg(long, env = "LIVECHAT_WS_READ_BUFFER_BYTES", default_value_t = 1024)]
    pub ws_read_buffer_bytes: usize,

    /// Requests of one socket waiting to be handled; more are refused.
    #[arg(long, env = "LIVECHAT_MAX_PENDING_PER_SOCKET", default_value_t = 64)]
    pub max_pending_per_socket: usize,

    /// Bundled plugins to run, in order, comma-separated (`sanitize`, `moderation`);
    /// `none` for none.
    #[arg(
        long,
        env = "LIVECHAT_PLUGINS",
        value_delimiter = ',',
        default_value = "sanitize,moderation"
    )]
    pub plugins: Vec<String>,

    /// More plugins: paths of `.wasm` components, run after the bundled ones.
    #[arg(long, env = "LIVECHAT_PLUGIN_PATHS", value_delimiter = ',')]
    pub plugin_paths: Vec<PathBuf>,

    /// Configurations of the plugins of `--plugin-paths`, comma-separated `name=file`
    /// pairs: the plugin `name` (its file name without `.wasm`) is given the text of
    /// `file`, as the bundled ones are given `--moderation-config`. A plugin without
    /// one is given an empty configuration.
    #[arg(long, env = "LIVECHAT_PLUGIN_CONFIGS", value_delimiter = ',', value_parser = parse_plugin_config)]
    pub plugin_configs: Vec<PluginConfigFile>,

    /// A JSON file with the `moderation` plugin's configuration (word lists per
    /// workspace, link and flood limits); see plugins/README.md.
    #[arg(long, env = "LIVECHAT_MODERATION_CONFIG")]
    pub moderation_config: Option<PathBuf>,

    /// A JSON file with the `sanitize` plugin's configuration (`max_chars`).
    #[arg(long, env = "LIVECHAT_SANITIZE_CONFIG")]
    pub sanitize_config: Option<PathBuf>,

    /// Longest a plugin may take for one message, in milliseconds.
    #[arg(long, env = "LIVECHAT_PLUGIN_DEADLINE_MS", default_value_t = 20)]
    pub plugin_deadline_ms: u64,

    /// Memory a plugin instance may use, in MiB.
    #[arg(long, env = "LIVECHAT_PLUGIN_MEMORY_MB", default_value_t = 64)]
    pub plugin_memory_mb: usize,

    /// When a plugin fails (trap, deadline, memory), let the message through instead
    /// of refusing it.
    #[arg(long, env = "LIVECHAT_PLUGIN_FAIL_OPEN", default_value_t = false, action = clap::ArgAction::Set)]
    pub plugin_fail_open: bool,

    /// Create the demo workspace, contact and agent on start, and print a token.
    #[arg(long, env = "LIVECHAT_DEMO", default_value_t = true, action = clap::ArgAction::Set)]
    pub demo: bool,

    /// Log format.
    #[arg(long, env = "LIVECHAT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// Longest wait for in-flight requests at shutdown, in seconds.
    #[arg(long, env = "LIVECHAT_SHUTDOWN_TIMEOUT_SECS", default_value_t = 10)]
    pub shutdown_timeout_secs: u64,
}

impl Config {
    /// The shutdown bound.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }

    /// The browser origins allowed to connect.
    pub fn origin_policy(&self) -> OriginPolicy {
        match &self.allowed_origins {
            Some(list) if list.iter().any(|o| o.trim() == "*") => OriginPolicy::any(),
            Some(list) => OriginPolicy::list(list.iter().map(|o| o.trim().to_owned())),
            None => {
                let local = OriginPolicy::local_only();
                match self.public_url.as_deref().and_then(origin_of) {
                    Some(origin) => local.with_origin(origin),
                    None => local,
                }
            }
        }
    }

    /// The core limits these settings describe.
    pub fn limits(&self) -> livechat_core::Limits {
        let mut limits = livechat_core::Limits::default();
        limits.send_per_user = Rate::new(self.rate_limit_per_sec, self.rate_limit_burst);
        limits.send_per_socket =
            Rate::new(self.socket_rate_limit_per_sec, self.socket_rate_limit_burst);
        limits.send_per_workspace = Rate::new(
            self.workspace_rate_limit_per_sec,
            self.workspace_rate_limit_burst,
        );
        limits.connect_rate_per_ip = Rate::new(self.connect_rate_per_ip, self.connect_burst_per_ip);
        limits.max_connections_per_ip = self.max_connections_per_ip;
        limits.max_connections_per_user = self.max_connections_per_user;
        limits.max_connections = self.max_connections;
        limits.max_body_bytes = self.max_body_bytes;
        limits.max_frame_bytes = self.max_frame_bytes;
        limits.max_json_depth = self.max_json_depth;
        limits.max_rooms_per_socket = self.max_rooms_per_socket;
        limits.commit_queue = self.commit_queue;
        limits.commit_batch = self.commit_batch;
        limits.commit_wait = Duration::from_millis(self.commit_wait_ms);
        limits.max_recovery_messages = self.max_recovery_messages;
        limits.connect_timeout = Duration::from_secs(self.connect_timeout_secs.max(1));
        limits.socket_buffer_packets = self.socket_buffer_packets;
        limits.ws_read_buffer_bytes = self.ws_read_buffer_bytes;
        limits.max_pending_per_socket = self.max_pending_per_socket;
        limits
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets are shown only as set or unset.
        let secret = |s: &Option<String>| if s.is_some() { "<set>" } else { "<unset>" };
        f.debug_struct("Config")
            .field("bind", &self.bind)
            .field("worker_threads", &self.worker_threads)
            .field("database_url", &redact_url(&self.database_url))
            .field("database_max_connections", &self.database_max_connections)
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("redis_channel", &self.redis_channel)
            .field("change_feed", &self.change_feed)
            .field("admin_token", &secret(&self.admin_token))
            .field("jwt_secret", &secret(&self.jwt_secret))
            .field("jwt_public_key", &self.jwt_public_key)
            .field("rate_limit_per_sec", &self.rate_limit_per_sec)
            .field("rate_limit_burst", &self.rate_limit_burst)
            .field("socket_rate_limit_per_sec", &self.socket_rate_limit_per_sec)
            .field("socket_rate_limit_burst", &self.socket_rate_limit_burst)
            .field(
                "workspace_rate_limit_per_sec",
                &self.workspace_rate_limit_per_sec,
            )
            .field(
                "workspace_rate_limit_burst",
                &self.workspace_rate_limit_burst,
            )
            .field("connect_rate_per_ip", &self.connect_rate_per_ip)
            .field("connect_burst_per_ip", &self.connect_burst_per_ip)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("max_connections_per_user", &self.max_connections_per_user)
            .field("max_connections", &self.max_connections)
            .field("allowed_origins", &self.allowed_origins)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("public_url", &self.public_url)
            .field("twilio_account_sid", &self.twilio_account_sid)
            .field("twilio_auth_token", &secret(&self.twilio_auth_token))
            .field("twilio_from_number", &self.twilio_from_number)
            .field("twilio_api_base_url", &self.twilio_api_base_url)
            .field("sms_max_attempts", &self.sms_max_attempts)
            .field("sms_retry_ms", &self.sms_retry_ms)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("max_json_depth", &self.max_json_depth)
            .field("max_rooms_per_socket", &self.max_rooms_per_socket)
            .field("sqlite_durability", &self.sqlite_durability)
            .field("commit_queue", &self.commit_queue)
            .field("commit_batch", &self.commit_batch)
            .field("commit_wait_ms", &self.commit_wait_ms)
            .field("max_recovery_messages", &self.max_recovery_messages)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .field("socket_buffer_packets", &self.socket_buffer_packets)
            .field("ws_read_buffer_bytes", &self.ws_read_buffer_bytes)
            .field("max_pending_per_socket", &self.max_pending_per_socket)
            .field("plugins", &self.plugins)
            .field("plugin_paths", &self.plugin_paths)
            .field("plugin_configs", &self.plugin_configs)
            .field("moderation_config", &self.moderation_config)
            .field("sanitize_config", &self.sanitize_config)
            .field("plugin_deadline_ms", &self.plugin_deadline_ms)
            .field("plugin_memory_mb", &self.plugin_memory_mb)
            .field("plugin_fail_open", &self.plugin_fail_open)
            .field("demo", &self.demo)
            .field("log_format", &self.log_format)
            .field("shutdown_timeout_secs", &self.shutdown_timeout_secs)
            .finish()
    }
}

/// The URL without its credentials, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split('/').next()?;
    (!host.is_empty()).then(|| format!("{scheme}://{host}"))
}

/// A proxy: a CIDR range, or a single address.
fn parse_proxy(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("`{s}` is neither an IP address nor a CIDR range"))
}

/// `name=file`: a plugin and its configuration file.
fn parse_plugin_config(s: &str) -> Result<PluginConfigFile, String> {
    match s.split_once('=') {
        Some((plugin, path)) if !plugin.trim().is_empty() && !path.trim().is_empty() => {
            Ok(PluginConfigFile {
                plugin: plugin.trim().to_owned(),
                path: PathBuf::from(path.trim()),
            })
        }
        _ => Err(format!(
            "`{s}` is not `name=file`: the plugin's file name without `.wasm`, `=`, then \
             the file with its configuration"
        )),
    }
}
