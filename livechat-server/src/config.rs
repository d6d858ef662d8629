//! Settings: every one a flag, a `LIVECHAT_*` environment variable and a key of the
//! TOML file named by `--config`; [`Config::load`] merges them.

use std::any::TypeId;
use std::ffi::OsString;
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, CommandFactory, FromArgMatches, Parser, ValueEnum};
use livechat_core::{OriginPolicy, Rate};
use serde::{Serialize, Serializer};

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

/// `name=file`, the form `--plugin-configs` takes.
impl fmt::Display for PluginConfigFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.plugin, self.path.display())
    }
}

/// The reference livechat server.
///
/// With no settings it listens on 127.0.0.1:3000, keeps its data in ./livechat.db,
/// creates a demo workspace, contact and agent, and prints a token to connect with.
///
/// Every setting is a flag, a `LIVECHAT_*` environment variable, and a key of the TOML
/// file of `--config` (the setting's name in snake_case: `rate_limit_per_sec = 20`).
/// Precedence: command-line flag > environment variable > config file > built-in
/// default. `--print-config` shows the result.
//
// The serde attributes are the one place that says how a setting is shown to people:
// `--print-config` and `Debug` both go through `Serialize`, so a secret marked here is
// hidden in both.
#[derive(Clone, Parser, Serialize)]
#[command(name = "livechat-server", version, about)]
pub struct Config {
    /// A TOML file with settings, keys named like the fields of `--print-config`
    /// (`bind = "0.0.0.0:3000"`, `plugins = ["sanitize"]`). A flag or an environment
    /// variable beats the file; the file beats the built-in default.
    #[arg(long, env = "LIVECHAT_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Print the effective configuration (flags, environment, config file and defaults
    /// merged) as TOML, secrets hidden, and exit without starting the server.
    // An action, not a setting: no environment variable (one left set would stop every
    // start), and not a key of the config file.
    #[arg(long)]
    #[serde(skip)]
    pub print_config: bool,

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
    #[serde(serialize_with = "redacted_url")]
    pub database_url: String,

    /// Postgres: connections in the pool.
    #[arg(long, env = "LIVECHAT_DATABASE_MAX_CONNECTIONS", default_value_t = 10)]
    pub database_max_connections: u32,

    /// Redis for several nodes (`redis://host:6379/`): every node publishes what it
    /// commits there and delivers what the others publish. Needs a Postgres database.
    #[arg(long, env = "LIVECHAT_REDIS_URL", hide_env_values = true)]
    #[serde(serialize_with = "redacted_optional_url")]
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
    #[serde(serialize_with = "hidden")]
    pub admin_token: Option<String>,

    /// HS256 secret for agent tokens (at least 32 bytes). Generated at start when
    /// unset, which makes every token invalid after a restart: set it in production.
    #[arg(
        long,
        env = "LIVECHAT_JWT_SECRET",
        hide_env_values = true,
        conflicts_with = "jwt_public_key"
    )]
    #[serde(serialize_with = "hidden")]
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
    #[serde(serialize_with = "display_each")]
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
    #[serde(serialize_with = "hidden")]
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
    #[serde(serialize_with = "value_enum")]
    pub sqlite_durability: SqliteDurability,

    /// Sends waiting for the commit writer; more are refused with `unavailable`.
    #[arg(long, env = "LIVECHAT_COMMIT_QUEUE", default_value_t = 4096)]
    pub commit_queue: usize,

    /// Most messages in one commit.
    #[arg(long, env = "LIVECHAT_COMMIT_BATCH", default_value_t = 2048)]
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
    #[serde(serialize_with = "display_each")]
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
    #[serde(serialize_with = "value_enum")]
    pub log_format: LogFormat,

    /// Longest wait for in-flight requests at shutdown, in seconds.
    #[arg(long, env = "LIVECHAT_SHUTDOWN_TIMEOUT_SECS", default_value_t = 10)]
    pub shutdown_timeout_secs: u64,
}

impl Config {
    /// The shutdown bound.
    pub fn shutdown_timeout(&self) -> Duration {
        // At least a second: a drain needs a moment to answer and close.
        Duration::from_secs(self.shutdown_timeout_secs.max(1))
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

impl Config {
    /// The settings of this process: its command line, its `LIVECHAT_*` environment
    /// and the config file these name (see [`Config::load_from`]).
    ///
    /// Like [`Parser::parse`], it prints and exits on `--help`, `--version` and a
    /// malformed command line or environment; a bad config file is an error.
    pub fn load() -> Result<Self, ConfigError> {
        Self::load_from(std::env::args_os()).map_err(|err| match err {
            ConfigError::Args(err) => err.exit(),
            err => err,
        })
    }

    /// The settings of a command line (first item: the program's name), the process's
    /// `LIVECHAT_*` environment and the TOML file of `--config` / `LIVECHAT_CONFIG`.
    ///
    /// Precedence: command-line flag > environment variable > config file > built-in
    /// default.
    pub fn load_from<I, T>(args: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let mut args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let command = Self::command();
        let mut matches = command.clone().try_get_matches_from(&args)?;
        let Some(path) = matches.get_one::<PathBuf>("config").cloned() else {
            return Ok(Self::from_arg_matches_mut(&mut matches)?);
        };
        let file = read_config_file(&path)?;
        // The file's values join the command line as `--flag=value`, each only where
        // neither a flag nor the environment gave one: clap then checks them as it
        // checks a flag, and the result has one source of truth for every default.
        let mut from_file = Vec::new();
        for (key, value) in &file {
            let arg = setting(&command, key).ok_or_else(|| unknown_key(&command, &path, key))?;
            if !matches!(
                matches.value_source(key),
                None | Some(ValueSource::DefaultValue)
            ) {
                continue;
            }
            let long = arg.get_long().unwrap_or(key);
            if let Some(text) = file_value(&path, key, arg, value)? {
                args.push(format!("--{long}={text}").into());
                from_file.push(FromFile { long, key, value });
            }
        }
        let mut matches = Self::command()
            .try_get_matches_from(&args)
            .map_err(|err| merge_error(&path, &from_file, err))?;
        Ok(Self::from_arg_matches_mut(&mut matches)?)
    }

    /// The settings as a config file that `--config` loads again: what `--print-config`
    /// prints. Secrets appear only in comments saying whether they are set, URLs
    /// without their credentials, and unset options as comments.
    ///
    /// Fails only on values TOML cannot hold (a path that is not UTF-8, a number past
    /// `i64::MAX`).
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        let mut out = String::from(
            "# livechat-server: the effective configuration.\n\
             # Precedence: command-line flag > environment variable > config file > default.\n",
        );
        if let Some(path) = &self.config {
            let _ = writeln!(out, "# config file: {}", path.display());
        }
        for (key, value) in self.shown_settings()? {
            let _ = match value {
                Some(toml::Value::String(text)) if is_hidden(&text) => {
                    writeln!(out, "# {key} = {text}")
                }
                Some(value) => writeln!(out, "{key} = {value}"),
                None => writeln!(out, "# {key} = (unset)"),
            };
        }
        Ok(out)
    }

    /// Every setting in declaration order, as shown to people: serialized through the
    /// serde attributes that hide secrets and redact URLs; `None` when unset.
    fn shown_settings(&self) -> Result<Vec<(String, Option<toml::Value>)>, toml::ser::Error> {
        let mut shown = toml::Table::try_from(self)?;
        let command = Self::command();
        Ok(settings(&command)
            .map(|arg| {
                let key = arg.get_id().as_str();
                (key.to_owned(), shown.remove(key))
            })
            .collect())
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The view of `--print-config`, so that what is secret is said once, in the
        // serde attributes of the fields.
        let shown = match self.shown_settings() {
            Ok(shown) => shown,
            Err(err) => return write!(f, "Config {{ <not shown: {err}> }}"),
        };
        let mut s = f.debug_struct("Config");
        s.field("config", &self.config);
        for (key, value) in &shown {
            match value {
                Some(toml::Value::String(text)) if is_hidden(text) => {
                    s.field(key, &format_args!("{text}"))
                }
                Some(value) => s.field(key, &format_args!("{value}")),
                None => s.field(key, &format_args!("(unset)")),
            };
        }
        s.finish()
    }
}

/// Why the settings could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The command line or the environment is malformed, or asks for `--help` or
    /// `--version`: [`clap::Error::exit`] prints it the usual way.
    #[error(transparent)]
    Args(#[from] clap::Error),
    /// The config file cannot be read.
    #[error("cannot read the config file {}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not TOML; the cause tells the line and column.
    #[error("the config file {} is not valid TOML", .path.display())]
    Toml {
        /// The file.
        path: PathBuf,
        /// Where and why.
        #[source]
        source: toml::de::Error,
    },
    /// A key of the config file is no setting.
    #[error(
        "the config file {}: `{key}` is not a setting{}",
        .path.display(),
        .suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default()
    )]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// The closest setting, if one is close.
        suggestion: Option<String>,
    },
    /// `config` or `print_config` in the config file: they belong on the command line
    /// (or, `config`, in the environment).
    #[error(
        "the config file {}: `{key}` cannot be set in a config file, only as the flag --{}",
        .path.display(),
        .key.replace('_', "-")
    )]
    NotInFile {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
    },
    /// A value of the config file has the wrong TOML type.
    #[error("the config file {}: `{key}` must be {expected}, not {found}", .path.display())]
    WrongType {
        /// The file.
        path: PathBuf,
        /// The setting.
        key: String,
        /// What it takes, e.g. `a whole number (0 or more)`.
        expected: String,
        /// What it was given, e.g. `string "fast"`.
        found: String,
    },
    /// A value of the config file has the right type, but the setting refuses it.
    #[error("the config file {}: `{key}` = {value}: {reason}", .path.display())]
    InvalidValue {
        /// The file.
        path: PathBuf,
        /// The setting.
        key: String,
        /// The value as given to the setting's parser.
        value: String,
        /// Why the parser refused it.
        reason: String,
    },
    /// The config file's settings conflict, with each other or with the command line
    /// and environment (such as `jwt_secret` with `--jwt-public-key`).
    #[error(
        "the settings of the config file {} conflict with each other or with the command line and environment",
        .path.display()
    )]
    Conflict {
        /// The file.
        path: PathBuf,
        /// clap's account, naming the flags.
        #[source]
        source: clap::Error,
    },
}

/// The settings a config file may set: every argument with a long flag, but help,
/// version and the two that only make sense on a command line.
fn settings(command: &clap::Command) -> impl Iterator<Item = &Arg> {
    command.get_arguments().filter(|arg| {
        arg.get_long().is_some()
            && !matches!(
                arg.get_action(),
                ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
            )
            && !NOT_IN_FILE.contains(&arg.get_id().as_str())
    })
}

/// Arguments of the command line only.
const NOT_IN_FILE: [&str; 2] = ["config", "print_config"];

fn setting<'a>(command: &'a clap::Command, key: &str) -> Option<&'a Arg> {
    settings(command).find(|arg| arg.get_id() == key)
}

fn read_config_file(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Toml {
        path: path.to_owned(),
        source,
    })
}

fn unknown_key(command: &clap::Command, path: &Path, key: &str) -> ConfigError {
    if NOT_IN_FILE.contains(&key) {
        return ConfigError::NotInFile {
            path: path.to_owned(),
            key: key.to_owned(),
        };
    }
    ConfigError::UnknownKey {
        path: path.to_owned(),
        key: key.to_owned(),
        suggestion: closest_setting(command, key),
    }
}

/// The setting a mistyped key most likely meant: the same name in another spelling
/// (`rate-limit-per-sec`, `LIVECHAT_BIND`), or one a few edits away.
fn closest_setting(command: &clap::Command, key: &str) -> Option<String> {
    let key = key.to_ascii_lowercase().replace('-', "_");
    let key = key.strip_prefix("livechat_").unwrap_or(&key);
    settings(command)
        .map(|arg| arg.get_id().as_str())
        .map(|name| (edit_distance(key, name), name))
        .filter(|&(distance, name)| distance <= (name.len() / 3).max(2))
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, name)| name.to_owned())
}

/// Levenshtein distance.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// What one value of a setting is, in TOML.
enum Shape {
    Bool,
    Unsigned,
    Signed,
    Float,
    Choice(Vec<String>),
    Text,
}

impl Shape {
    fn of(arg: &Arg) -> Self {
        let ty = arg.get_value_parser().type_id();
        let is = |ids: &[TypeId]| ids.iter().any(|id| ty == *id);
        if is(&[TypeId::of::<bool>()]) {
            Self::Bool
        } else if is(&[
            TypeId::of::<u8>(),
            TypeId::of::<u16>(),
            TypeId::of::<u32>(),
            TypeId::of::<u64>(),
            TypeId::of::<usize>(),
        ]) {
            Self::Unsigned
        } else if is(&[
            TypeId::of::<i8>(),
            TypeId::of::<i16>(),
            TypeId::of::<i32>(),
            TypeId::of::<i64>(),
            TypeId::of::<isize>(),
        ]) {
            Self::Signed
        } else if is(&[TypeId::of::<f32>(), TypeId::of::<f64>()]) {
            Self::Float
        } else {
            let choices = arg.get_possible_values();
            if choices.is_empty() {
                Self::Text
            } else {
                Self::Choice(choices.iter().map(|c| c.get_name().to_owned()).collect())
            }
        }
    }

    fn expected(&self) -> String {
        match self {
            Self::Bool => "true or false".to_owned(),
            Self::Unsigned => "a whole number (0 or more)".to_owned(),
            Self::Signed => "a whole number".to_owned(),
            Self::Float => "a number".to_owned(),
            Self::Choice(names) => {
                let names: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
                format!("one of {}", names.join(", "))
            }
            Self::Text => "a string".to_owned(),
        }
    }

    /// The value as a command-line argument, if it has this shape.
    fn text(&self, value: &toml::Value) -> Option<String> {
        use toml::Value as V;
        match (self, value) {
            (Self::Bool, V::Boolean(b)) => Some(b.to_string()),
            (Self::Unsigned, V::Integer(n)) if *n >= 0 => Some(n.to_string()),
            (Self::Signed | Self::Float, V::Integer(n)) => Some(n.to_string()),
            (Self::Float, V::Float(x)) => Some(x.to_string()),
            (Self::Choice(names), V::String(s)) if names.contains(s) => Some(s.clone()),
            (Self::Text, V::String(s)) => Some(s.clone()),
            _ => None,
        }
    }
}

/// A value of the config file as the argument of its flag: lists joined with the
/// flag's delimiter. `None`: an empty list for a setting that is empty by default.
fn file_value(
    path: &Path,
    key: &str,
    arg: &Arg,
    value: &toml::Value,
) -> Result<Option<String>, ConfigError> {
    let shape = Shape::of(arg);
    let wrong_type = |expected: String| ConfigError::WrongType {
        path: path.to_owned(),
        key: key.to_owned(),
        expected,
        found: format!("{} {value}", value.type_str()),
    };
    let Some(delimiter) = arg.get_value_delimiter() else {
        return shape
            .text(value)
            .map(Some)
            .ok_or_else(|| wrong_type(shape.expected()));
    };
    let expected = || format!("an array, each item {}", shape.expected());
    let items = value.as_array().ok_or_else(|| wrong_type(expected()))?;
    if items.is_empty() {
        // Nothing to add when nothing is the default; a default would stay in place.
        return match arg.get_default_values() {
            // As `--allowed-origins=` does: no browser origin at all, rather than the
            // local default an absent setting means.
            [] if key == "allowed_origins" => Ok(Some(String::new())),
            [] => Ok(None),
            default => Err(ConfigError::InvalidValue {
                path: path.to_owned(),
                key: key.to_owned(),
                value: value.to_string(),
                reason: format!(
                    "cannot be empty (its default is {}; see --help for how to turn it off)",
                    default.join(std::ffi::OsStr::new(",")).to_string_lossy()
                ),
            }),
        };
    }
    let mut texts = Vec::with_capacity(items.len());
    for item in items {
        let text = shape.text(item).ok_or_else(|| wrong_type(expected()))?;
        if text.contains(delimiter) {
            return Err(ConfigError::InvalidValue {
                path: path.to_owned(),
                key: key.to_owned(),
                value: item.to_string(),
                reason: format!("`{delimiter}` separates items, so no item can contain it"),
            });
        }
        texts.push(text);
    }
    Ok(Some(texts.join(&delimiter.to_string())))
}

/// A value of the config file added to the command line.
struct FromFile<'a> {
    long: &'a str,
    key: &'a str,
    value: &'a toml::Value,
}

/// The final parse failed, so a value of the file did: say which key, in the file's
/// terms, when clap names the flag of one.
fn merge_error(path: &Path, from_file: &[FromFile<'_>], err: clap::Error) -> ConfigError {
    if matches!(
        err.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) && let Some(ContextValue::String(flag)) = err.get(ContextKind::InvalidArg)
        && let Some(given) = from_file.iter().find(|given| {
            flag.strip_prefix("--")
                .and_then(|f| f.split([' ', '=']).next())
                == Some(given.long)
        })
    {
        // Of a list, the item clap refused; of anything else, the value as written.
        let value = match (given.value, err.get(ContextKind::InvalidValue)) {
            (toml::Value::Array(_), Some(ContextValue::String(item))) => {
                toml::Value::String(item.clone()).to_string()
            }
            (value, _) => value.to_string(),
        };
        let reason = std::error::Error::source(&err)
            .map_or_else(|| err.kind().to_string(), ToString::to_string);
        return ConfigError::InvalidValue {
            path: path.to_owned(),
            key: given.key.to_owned(),
            value,
            reason,
        };
    }
    ConfigError::Conflict {
        path: path.to_owned(),
        source: err,
    }
}

/// How a secret is shown: whether it is set, never what it is.
const SECRET_SET: &str = "<set, hidden>";
/// How an unset secret is shown.
const SECRET_UNSET: &str = "<unset>";

fn is_hidden(text: &str) -> bool {
    text == SECRET_SET || text == SECRET_UNSET
}

fn hidden<S: Serializer>(secret: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if secret.is_some() {
        SECRET_SET
    } else {
        SECRET_UNSET
    })
}

fn redacted_url<S: Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(url))
}

fn redacted_optional_url<S: Serializer>(url: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match url {
        Some(url) => s.serialize_some(&redact_url(url)),
        None => s.serialize_none(),
    }
}

/// Items in the form their flag takes.
fn display_each<T: fmt::Display, S: Serializer>(items: &[T], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(items.iter().map(ToString::to_string))
}

/// A `ValueEnum` by its name on the command line.
fn value_enum<T: ValueEnum, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    match value.to_possible_value() {
        Some(name) => s.serialize_str(name.get_name()),
        None => Err(serde::ser::Error::custom("a value without a name")),
    }
}

/// The URL without its credentials, for logs.
pub fn redact_url(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let mut out = match (head.find("://"), head.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &head[..scheme], &head[at + 1..])
        }
        _ => head.to_owned(),
    };
    if let Some(query) = query {
        // sqlx takes `?password=`, redis `?pass=`: any parameter that may carry a
        // credential keeps its name and loses its value.
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if is_secret_parameter(key) => format!("{key}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

fn is_secret_parameter(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["pass", "secret", "token", "key", "auth", "cred"]
        .iter()
        .any(|word| key.contains(word))
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{Config, ConfigError};

    /// A config file with `text` in a fresh directory.
    fn file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("livechat.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn load(path: &Path, args: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["livechat-server", "--config", path.to_str().unwrap()];
        argv.extend_from_slice(args);
        Config::load_from(argv)
    }

    fn load_err(text: &str) -> (ConfigError, String) {
        let (_dir, path) = file(text);
        let err = load(&path, &[]).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains(path.to_str().unwrap()),
            "the message names the file: {message}"
        );
        (err, message)
    }

    // Environment variables are process-wide and these tests run in parallel with
    // others that parse settings, so "environment beats file" is tested through the
    // binary (tests/it/binary.rs) rather than by setting one here.

    #[test]
    fn the_file_sets_what_flags_and_the_environment_leave_at_the_default() {
        let (_dir, path) = file(
            r#"
            bind = "0.0.0.0:3100"
            rate_limit_per_sec = 20
            plugins = ["sanitize"]
            change_feed = false
            trusted_proxies = ["10.0.0.1", "192.168.0.0/16"]
            log_format = "json"
            public_url = "https://chat.example.com"
            plugin_configs = ["words=/etc/words.txt"]
            "#,
        );
        let config = load(&path, &[]).unwrap();
        assert_eq!(config.bind, "0.0.0.0:3100".parse().unwrap());
        assert_eq!(config.rate_limit_per_sec, 20);
        assert_eq!(config.plugins, ["sanitize"]);
        assert!(!config.change_feed);
        assert_eq!(config.trusted_proxies.len(), 2);
        assert_eq!(config.log_format, super::LogFormat::Json);
        assert_eq!(
            config.public_url.as_deref(),
            Some("https://chat.example.com")
        );
        assert_eq!(config.plugin_configs[0].plugin, "words");
        // Untouched settings keep their defaults.
        assert_eq!(config.rate_limit_burst, 30);
        assert!(config.demo);
    }

    #[test]
    fn an_empty_origin_list_in_the_file_allows_no_browser_origin() {
        let (_dir, path) = file("allowed_origins = []\n");
        let config = load(&path, &[]).unwrap();
        let policy = config.origin_policy();
        assert!(!policy.allows(Some("http://localhost:3000")));
        assert!(!policy.allows(Some("https://chat.example.com")));
        // Without the key, pages from localhost are allowed.
        let (_dir, path) = file("rate_limit_per_sec = 20\n");
        assert!(
            load(&path, &[])
                .unwrap()
                .origin_policy()
                .allows(Some("http://localhost:3000"))
        );
    }

    #[test]
    fn a_flag_beats_the_file() {
        let (_dir, path) = file("rate_limit_per_sec = 20\nchange_feed = false\n");
        let config = load(
            &path,
            &["--rate-limit-per-sec", "3", "--change-feed", "true"],
        )
        .unwrap();
        assert_eq!(config.rate_limit_per_sec, 3);
        assert!(config.change_feed);
        // Even a flag that repeats the default beats the file.
        let config = load(&path, &["--rate-limit-per-sec=10"]).unwrap();
        assert_eq!(config.rate_limit_per_sec, 10);
    }

    #[test]
    fn secrets_may_be_kept_in_the_file() {
        let (_dir, path) = file(
            r#"
            admin_token = "file-admin-token-0123456789"
            jwt_secret = "file-jwt-secret-0123456789abcdefghijkl"
            twilio_auth_token = "file-twilio-token"
            database_url = "postgres://livechat:pw-in-file@db.internal/livechat"
            redis_url = "redis://:redis-pw@cache.internal:6379/"
            "#,
        );
        let config = load(&path, &[]).unwrap();
        assert_eq!(
            config.admin_token.as_deref(),
            Some("file-admin-token-0123456789")
        );
        assert_eq!(
            config.jwt_secret.as_deref(),
            Some("file-jwt-secret-0123456789abcdefghijkl")
        );
        assert_eq!(
            config.twilio_auth_token.as_deref(),
            Some("file-twilio-token")
        );
        assert_eq!(
            config.database_url,
            "postgres://livechat:pw-in-file@db.internal/livechat"
        );
        let shown = [config.to_toml().unwrap(), format!("{config:?}")];
        for text in shown {
            for secret in [
                "file-admin-token",
                "file-jwt-secret",
                "file-twilio-token",
                "pw-in-file",
                "redis-pw",
            ] {
                assert!(!text.contains(secret), "{secret} shown in:\n{text}");
            }
            assert!(
                text.contains("postgres://***@db.internal/livechat"),
                "{text}"
            );
            assert!(text.contains("redis://***@cache.internal:6379/"), "{text}");
        }
    }

    #[test]
    fn an_unreadable_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.toml");
        let err = load(&path, &[]).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("cannot read the config file {}", path.display())
        );
    }

    #[test]
    fn invalid_toml_is_refused_with_its_line_and_column() {
        let (err, message) = load_err("bind = \"0.0.0.0:3100\"\nplugins = [\n");
        assert!(matches!(err, ConfigError::Toml { .. }), "{err:?}");
        assert!(message.contains("is not valid TOML"), "{message}");
        let cause = std::error::Error::source(&err).unwrap().to_string();
        assert!(cause.contains("line 2, column"), "{cause}");
    }

    #[test]
    fn an_unknown_key_is_named_with_the_closest_setting() {
        for (key, meant) in [
            ("rate_limit_per_second", Some("rate_limit_per_sec")),
            ("rate-limit-burst", Some("rate_limit_burst")),
            ("LIVECHAT_BIND", Some("bind")),
            ("completely_different", None),
        ] {
            let (err, message) = load_err(&format!("{key} = 1\n"));
            let ConfigError::UnknownKey {
                key: named,
                suggestion,
                ..
            } = &err
            else {
                panic!("{err:?}");
            };
            assert_eq!(named, key);
            assert_eq!(suggestion.as_deref(), meant, "{message}");
            assert!(
                message.contains(&format!("`{key}` is not a setting")),
                "{message}"
            );
            if let Some(meant) = meant {
                assert!(
                    message.contains(&format!("did you mean `{meant}`?")),
                    "{message}"
                );
            }
        }
    }

    #[test]
    fn a_value_of_the_wrong_type_says_what_was_expected() {
        for (line, expected) in [
            (
                "rate_limit_per_sec = \"fast\"",
                "a whole number (0 or more), not string \"fast\"",
            ),
            (
                "rate_limit_per_sec = -1",
                "a whole number (0 or more), not integer -1",
            ),
            ("change_feed = \"yes\"", "true or false, not string \"yes\""),
            ("bind = 3000", "a string, not integer 3000"),
            (
                "plugins = \"sanitize\"",
                "an array, each item a string, not string",
            ),
            (
                "plugins = [1]",
                "an array, each item a string, not array [1]",
            ),
            (
                "log_format = \"xml\"",
                "one of \"human\", \"json\", not string \"xml\"",
            ),
        ] {
            let (err, message) = load_err(line);
            assert!(matches!(err, ConfigError::WrongType { .. }), "{err:?}");
            let key = line.split(' ').next().unwrap();
            assert!(
                message.contains(&format!("`{key}` must be {expected}")),
                "{line}: {message}"
            );
        }
    }

    #[test]
    fn a_value_the_setting_refuses_is_named_with_its_key() {
        for (line, expected) in [
            (
                "bind = \"nowhere\"",
                "`bind` = \"nowhere\": invalid socket address syntax",
            ),
            (
                "rate_limit_per_sec = 99999999999",
                "`rate_limit_per_sec` = 99999999999: 99999999999 is not in 0..=4294967295",
            ),
            (
                "trusted_proxies = [\"10.0.0.1\", \"nope\"]",
                "`trusted_proxies` = \"nope\": `nope` is neither an IP address nor a CIDR range",
            ),
            ("plugins = []", "`plugins` = []: cannot be empty"),
            ("plugin_paths = [\"a,b.wasm\"]", "`,` separates items"),
        ] {
            let (err, message) = load_err(line);
            assert!(matches!(err, ConfigError::InvalidValue { .. }), "{err:?}");
            assert!(message.contains(expected), "{line}: {message}");
        }
    }

    #[test]
    fn command_line_only_arguments_are_refused_in_the_file() {
        for key in ["config", "print_config"] {
            let (err, message) = load_err(&format!("{key} = \"x\"\n"));
            assert!(matches!(err, ConfigError::NotInFile { .. }), "{err:?}");
            assert!(
                message.contains(&format!("`{key}` cannot be set in a config file")),
                "{message}"
            );
        }
    }

    #[test]
    fn conflicting_settings_are_refused() {
        let (err, _) = load_err(
            "jwt_public_key = \"/etc/jwt.pem\"\njwt_secret = \"0123456789abcdef0123456789abcdef\"\n",
        );
        assert!(matches!(err, ConfigError::Conflict { .. }), "{err:?}");
    }

    #[test]
    fn without_a_file_load_from_is_parse_from() {
        let config = Config::load_from(["livechat-server", "--rate-limit-burst", "7"]).unwrap();
        assert_eq!(config.rate_limit_burst, 7);
        assert!(config.config.is_none());
        assert!(matches!(
            Config::load_from(["livechat-server", "--no-such-flag"]),
            Err(ConfigError::Args(_))
        ));
    }

    #[test]
    fn the_printed_configuration_loads_back_to_the_same_settings() {
        let config = Config::load_from([
            "livechat-server",
            "--bind=0.0.0.0:4000",
            "--database-url=postgres://livechat:pw@db/livechat",
            "--redis-url=redis://cache:6379/",
            "--change-feed=false",
            "--admin-token=an-admin-token-0123456789",
            "--jwt-secret=a-jwt-secret-0123456789abcdefghijklmn",
            "--trusted-proxies=10.0.0.1,192.168.0.0/16",
            "--allowed-origins=https://a.example,https://b.example",
            "--plugins=moderation",
            "--plugin-paths=/opt/words.wasm",
            "--plugin-configs=words=/etc/words.json",
            "--moderation-config=/etc/moderation.json",
            "--sqlite-durability=normal",
            "--log-format=json",
            "--plugin-fail-open=true",
            "--sms-retry-ms=500",
        ])
        .unwrap();
        let printed = config.to_toml().unwrap();
        assert!(
            printed.contains("\n# admin_token = <set, hidden>\n"),
            "{printed}"
        );
        assert!(
            printed.contains("\n# jwt_secret = <set, hidden>\n"),
            "{printed}"
        );
        assert!(
            printed.contains("\n# twilio_auth_token = <unset>\n"),
            "{printed}"
        );
        assert!(printed.contains("\n# public_url = (unset)\n"), "{printed}");
        assert!(
            printed.contains("\nsqlite_durability = \"normal\"\n"),
            "{printed}"
        );
        assert!(
            printed.contains("\ntrusted_proxies = [\"10.0.0.1/32\", \"192.168.0.0/16\"]\n"),
            "{printed}"
        );
        assert!(!printed.contains("print_config"), "{printed}");
        assert!(!printed.contains("an-admin-token"), "{printed}");

        let (_dir, path) = file(&printed);
        let reloaded = load(&path, &[]).unwrap();
        let without_source = |text: &str| {
            text.lines()
                .filter(|l| !l.starts_with("# config file:"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        // The hidden secrets stay comments, so only they differ.
        let expected = without_source(&printed)
            .replace("# admin_token = <set, hidden>", "# admin_token = <unset>")
            .replace("# jwt_secret = <set, hidden>", "# jwt_secret = <unset>");
        assert_eq!(without_source(&reloaded.to_toml().unwrap()), expected);
        assert_eq!(reloaded.bind, config.bind);
        assert_eq!(reloaded.plugin_configs, config.plugin_configs);
        assert_eq!(reloaded.allowed_origins, config.allowed_origins);
    }

    #[test]
    fn debug_shows_every_setting_with_secrets_hidden() {
        let config = Config::load_from([
            "livechat-server",
            "--admin-token=an-admin-token-0123456789",
            "--database-url=postgres://u:pw@h/db",
        ])
        .unwrap();
        let debug = format!("{config:?}");
        assert!(debug.contains("admin_token: <set, hidden>"), "{debug}");
        assert!(debug.contains("jwt_secret: <unset>"), "{debug}");
        assert!(
            debug.contains("database_url: \"postgres://***@h/db\""),
            "{debug}"
        );
        assert!(debug.contains("shutdown_timeout_secs: 10"), "{debug}");
        assert!(!debug.contains("an-admin-token"), "{debug}");
    }

    #[test]
    fn help_states_the_precedence() {
        use clap::CommandFactory as _;
        let help = Config::command().render_long_help().to_string();
        assert!(
            help.contains(
                "Precedence: command-line flag > environment variable > config file > built-in default"
            ),
            "{help}"
        );
        assert!(help.contains("LIVECHAT_CONFIG"), "{help}");
    }
}
