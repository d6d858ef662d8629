//! Runs livechat moderation plugins — WebAssembly components of the
//! `livechat:plugin/moderator` world (`plugins/wit/`) — in a wasmtime sandbox, as a
//! [`livechat_core::moderation::Moderator`].
//!
//! Each plugin is compiled once and pre-linked once. Calls run on the caller's async
//! runtime, at most `max_concurrency` at a time, on warm instances that are reused; a
//! call that runs longer than one epoch tick (1 ms) yields to the runtime at every
//! tick, so a slow plugin never holds a runtime thread; every call has a deadline
//! (epoch interruption), every instance a memory and table cap and a wasm
//! stack limit; answers and logs are bounded. A trap, a timeout, a memory bomb or an
//! oversized answer is contained, logged, counted, and handled by the plugin's
//! failure policy — and the instance it happened on is thrown away, so the next
//! message never runs on its state. Plugins get no files, sockets or environment:
//! WASI is linked with an empty context.
//!
//! ```no_run
//! # async fn demo() -> Result<(), livechat_plugins::PluginError> {
//! use livechat_plugins::{PluginEngine, PluginSettings, bundled};
//! let engine = PluginEngine::new()?;
//! let sanitize = engine
//!     .load(bundled::SANITIZE, PluginSettings::new("sanitize"))
//!     .await?;
//! let (_layer, _chat) = livechat_core::LiveChat::builder().moderator(sanitize).build_layer();
//! # Ok(()) }
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use livechat_core::moderation::{Candidate, FailurePolicy, ModerationError, Moderator, Verdict};
use tokio::sync::Semaphore;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

mod bindings {
    wasmtime::component::bindgen!({
        world: "moderator",
        path: "../wit",
        exports: { default: async },
    });
}

use bindings::livechat::plugin::{host, types};

/// The bundled plugins, built from `plugins/guests` by this crate's build script.
pub mod bundled {
    /// `sanitize`: plain text only (markup, script, dangerous URLs, control and bidi
    /// characters removed), NFC, a length limit.
    pub const SANITIZE: &[u8] =
        include_bytes!(concat!(env!("LIVECHAT_GUESTS_DIR"), "/sanitize.wasm"));
    /// `moderation`: word lists per workspace, links, flooding.
    pub const MODERATION: &[u8] =
        include_bytes!(concat!(env!("LIVECHAT_GUESTS_DIR"), "/moderation.wasm"));
    /// The template plugin of `plugins/README.md`: refuses a configured word.
    pub const TEMPLATE: &[u8] =
        include_bytes!(concat!(env!("LIVECHAT_GUESTS_DIR"), "/template.wasm"));
    /// A plugin that misbehaves as configured (`spin`, `memory`, `trap`, `huge`,
    /// `slow`, `logs`), for tests of the sandbox.
    pub const HOSTILE: &[u8] =
        include_bytes!(concat!(env!("LIVECHAT_GUESTS_DIR"), "/hostile.wasm"));
}

/// How long one epoch tick is: the granularity of deadlines.
const TICK: Duration = Duration::from_millis(1);

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// The engine could not be set up.
    #[error("wasmtime engine: {0}")]
    Engine(String),
    /// The bytes are not a component of the `livechat:plugin/moderator` world.
    #[error("plugin {name} is not a valid livechat plugin: {reason}")]
    Invalid {
        /// The plugin.
        name: String,
        /// What was wrong.
        reason: String,
    },
    /// `configure` refused the configuration, or failed.
    #[error("plugin {name} refused its configuration: {reason}")]
    Configure {
        /// The plugin.
        name: String,
        /// Its answer.
        reason: String,
    },
}

/// The settings of one plugin.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PluginSettings {
    /// Its name in logs and flags.
    pub name: String,
    /// What `configure` is given. Defaults to empty.
    pub config: String,
    /// Longest a `check` may run. Defaults to 20 ms.
    pub deadline: Duration,
    /// Linear memory an instance may grow to. Defaults to 64 MiB.
    pub memory_limit: usize,
    /// Largest answer (rewritten body or reason) in bytes. Defaults to 64 KiB.
    pub max_output_bytes: usize,
    /// Log lines a call may write; more are dropped. Defaults to 16.
    pub max_log_lines: usize,
    /// Longest log line kept, in bytes. Defaults to 512.
    pub max_log_line_bytes: usize,
    /// Checks running at once; more wait, up to `deadline`, then count as overloaded.
    /// Defaults to 4.
    pub max_concurrency: usize,
    /// What happens to a message when the plugin fails. Defaults to closed.
    pub failure_policy: FailurePolicy,
}

impl PluginSettings {
    /// Defaults for a plugin called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            config: String::new(),
            deadline: Duration::from_millis(20),
            memory_limit: 64 << 20,
            max_output_bytes: 64 << 10,
            max_log_lines: 16,
            max_log_line_bytes: 512,
            max_concurrency: 4,
            failure_policy: FailurePolicy::Closed,
        }
    }

    /// Sets what `configure` is given.
    pub fn config(mut self, config: impl Into<String>) -> Self {
        self.config = config.into();
        self
    }

    /// Sets the deadline of a call: how long the guest may run. The time a call waits
    /// for the runtime after yielding does not count.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Sets the memory cap.
    pub fn memory_limit(mut self, bytes: usize) -> Self {
        self.memory_limit = bytes;
        self
    }

    /// Sets the failure policy.
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.failure_policy = policy;
        self
    }
}

/// Counters of one plugin's calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PluginStats {
    /// Checks that returned a verdict.
    pub verdicts: u64,
    /// Checks stopped at their deadline.
    pub timeouts: u64,
    /// Checks that trapped (memory cap included).
    pub traps: u64,
    /// Answers over the output limit.
    pub oversized: u64,
    /// Instances created (the first, and one after each failure).
    pub instances: u64,
    /// Log lines dropped over the per-call bound.
    pub logs_dropped: u64,
}

#[derive(Default)]
struct Counters {
    verdicts: AtomicU64,
    timeouts: AtomicU64,
    traps: AtomicU64,
    oversized: AtomicU64,
    instances: AtomicU64,
    logs_dropped: AtomicU64,
}

/// One engine for all plugins, with the epoch ticker that enforces deadlines.
#[derive(Clone)]
pub struct PluginEngine {
    engine: Engine,
    linker: Arc<Linker<HostState>>,
}

impl std::fmt::Debug for PluginEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginEngine").finish_non_exhaustive()
    }
}

impl PluginEngine {
    /// Sets up wasmtime: component model, epoch interruption, a 512 KiB wasm stack.
    pub fn new() -> Result<Self, PluginError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.max_wasm_stack(512 << 10);
        let engine = Engine::new(&config).map_err(|e| PluginError::Engine(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| PluginError::Engine(e.to_string()))?;
        bindings::Moderator::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| PluginError::Engine(e.to_string()))?;
        spawn_ticker(engine.weak());
        Ok(Self {
            engine,
            linker: Arc::new(linker),
        })
    }

    /// Compiles and pre-links a plugin, and checks that it accepts its configuration.
    pub async fn load(&self, wasm: &[u8], settings: PluginSettings) -> Result<Plugin, PluginError> {
        let invalid = |e: wasmtime::Error| PluginError::Invalid {
            name: settings.name.clone(),
            reason: format!("{e:#}"),
        };
        let component = Component::new(&self.engine, wasm).map_err(invalid)?;
        let pre = self.linker.instantiate_pre(&component).map_err(invalid)?;
        let pre = bindings::ModeratorPre::new(pre).map_err(invalid)?;
        let inner = Arc::new(PluginInner {
            engine: self.engine.clone(),
            permits: Semaphore::new(settings.max_concurrency.max(1)),
            settings,
            pre,
            warm: Mutex::new(Vec::new()),
            counters: Counters::default(),
        });
        // A first instance now: a bad configuration fails at load, not per message.
        let warm = inner.instantiate().await?;
        inner.check_in(warm);
        Ok(Plugin { inner })
    }
}

/// Runs plugin code to completion on this thread, for callers outside any runtime.
/// wasmtime's yields need no particular executor.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime")
        .block_on(future)
}

/// Advances every engine's epoch once per tick while the engine lives.
fn spawn_ticker(engine: wasmtime::EngineWeak) {
    std::thread::Builder::new()
        .name("livechat-plugin-epoch".into())
        .spawn(move || {
            while let Some(engine) = engine.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(TICK);
            }
        })
        .ok();
}

struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    logs_left: usize,
    log_line_bytes: usize,
    plugin: String,
    counters: Weak<PluginInner>,
    budget: CallBudget,
}

/// The running call's time limit. It counts the time the guest runs, not the time it
/// waits for the runtime after a yield: on a busy server a quick check could otherwise
/// wait past its deadline behind other tasks and be failed (rejected, under a closed
/// policy) for the server's load, not its own.
struct CallBudget {
    deadline: Instant,
    /// Nanoseconds the call's yields spent waiting to be polled again, not yet added
    /// to the deadline.
    waited: Arc<AtomicU64>,
}

impl CallBudget {
    fn new(limit: Duration) -> Self {
        Self {
            deadline: Instant::now() + limit,
            waited: Arc::default(),
        }
    }

    fn restart(&mut self, limit: Duration) {
        self.deadline = Instant::now() + limit;
        self.waited.store(0, Ordering::Relaxed);
    }

    /// At an epoch tick: whether the call is out of time, or else the yield to take.
    fn tick(&mut self) -> UpdateDeadline {
        self.deadline += Duration::from_nanos(self.waited.swap(0, Ordering::Relaxed));
        if Instant::now() >= self.deadline {
            return UpdateDeadline::Interrupt;
        }
        let waited = Arc::clone(&self.waited);
        // tokio's `yield_now` lets the runtime poll its timers and sockets before the
        // call goes on; a plain yield would leave them waiting while yielding calls
        // take turns.
        UpdateDeadline::YieldCustom(
            1,
            Box::pin(async move {
                let yielded = Instant::now();
                tokio::task::yield_now().await;
                let nanos = u64::try_from(yielded.elapsed().as_nanos()).unwrap_or(u64::MAX);
                waited.fetch_add(nanos, Ordering::Relaxed);
            }),
        )
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl host::Host for HostState {
    fn log(&mut self, level: host::Level, message: String) {
        if self.logs_left == 0 {
            if let Some(p) = self.counters.upgrade() {
                p.counters.logs_dropped.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        self.logs_left -= 1;
        let mut end = message.len().min(self.log_line_bytes);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let line = &message[..end];
        let plugin = self.plugin.as_str();
        match level {
            host::Level::Debug => tracing::debug!(plugin, "{line}"),
            host::Level::Info => tracing::info!(plugin, "{line}"),
            host::Level::Warn => tracing::warn!(plugin, "{line}"),
            host::Level::Error => tracing::error!(plugin, "{line}"),
        }
    }
}

impl types::Host for HostState {}

struct Warm {
    store: Store<HostState>,
    instance: bindings::Moderator,
}

struct PluginInner {
    engine: Engine,
    settings: PluginSettings,
    pre: bindings::ModeratorPre<HostState>,
    warm: Mutex<Vec<Warm>>,
    permits: Semaphore,
    counters: Counters,
}

/// A loaded plugin: a [`Moderator`] for `LiveChat::builder().moderator(..)`.
#[derive(Clone)]
pub struct Plugin {
    inner: Arc<PluginInner>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.inner.settings.name)
            .finish_non_exhaustive()
    }
}

/// How a call ended, before the policy is applied.
enum Outcome {
    Verdict(types::Verdict),
    Timeout,
    Trap(String),
}

impl PluginInner {
    async fn instantiate(self: &Arc<Self>) -> Result<Warm, PluginError> {
        let s = &self.settings;
        let state = HostState {
            // No preopened directories, no environment, no arguments, no inherited
            // stdio, no network: WASI is linked only because std guests import it.
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(s.memory_limit)
                .table_elements(100_000)
                .instances(8)
                .tables(8)
                .memories(4)
                .trap_on_grow_failure(true)
                .build(),
            logs_left: s.max_log_lines,
            log_line_bytes: s.max_log_line_bytes,
            plugin: s.name.clone(),
            counters: Arc::downgrade(self),
            // `configure` may take longer than a check: it may build tables.
            budget: CallBudget::new(s.deadline.max(Duration::from_millis(100))),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        // At every tick: past the deadline the call traps with `Interrupt`; before it,
        // the call yields to the runtime.
        store.epoch_deadline_callback(|mut ctx| Ok(ctx.data_mut().budget.tick()));
        store.set_epoch_deadline(1);
        let fail = |reason: String| PluginError::Configure {
            name: s.name.clone(),
            reason,
        };
        let instance = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| fail(format!("{e:#}")))?;
        instance
            .call_configure(&mut store, &s.config)
            .await
            .map_err(|e| fail(format!("{e:#}")))?
            .map_err(fail)?;
        self.counters.instances.fetch_add(1, Ordering::Relaxed);
        Ok(Warm { store, instance })
    }

    async fn check_out(self: &Arc<Self>) -> Result<Warm, PluginError> {
        let reused = self.warm.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match reused {
            Some(w) => Ok(w),
            None => self.instantiate().await,
        }
    }

    fn check_in(&self, warm: Warm) {
        self.warm
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(warm);
    }

    /// One call. Dropping the future mid-call drops the instance with it.
    async fn call(self: &Arc<Self>, message: types::Message) -> Result<Outcome, PluginError> {
        let mut warm = self.check_out().await?;
        let s = &self.settings;
        let state = warm.store.data_mut();
        state.logs_left = s.max_log_lines;
        state.budget.restart(s.deadline);
        warm.store.set_epoch_deadline(1);
        match warm.instance.call_check(&mut warm.store, &message).await {
            Ok(verdict) => {
                self.check_in(warm);
                Ok(Outcome::Verdict(verdict))
            }
            // The instance is dropped here: whatever state the failure left behind
            // never sees another message.
            Err(e) => match e.downcast_ref::<wasmtime::Trap>() {
                Some(wasmtime::Trap::Interrupt) => Ok(Outcome::Timeout),
                _ => Ok(Outcome::Trap(format!("{e:#}"))),
            },
        }
    }
}

impl Plugin {
    /// The counters of this plugin's calls.
    pub fn stats(&self) -> PluginStats {
        let c = &self.inner.counters;
        PluginStats {
            verdicts: c.verdicts.load(Ordering::Relaxed),
            timeouts: c.timeouts.load(Ordering::Relaxed),
            traps: c.traps.load(Ordering::Relaxed),
            oversized: c.oversized.load(Ordering::Relaxed),
            instances: c.instances.load(Ordering::Relaxed),
            logs_dropped: c.logs_dropped.load(Ordering::Relaxed),
        }
    }

    /// Checks one message outside any runtime: for tools.
    pub fn check_blocking(&self, message: Candidate<'_>) -> Result<Verdict, ModerationError> {
        let outcome =
            block_on(self.inner.call(to_wit(message))).map_err(|e| ModerationError::Failed {
                name: self.inner.settings.name.clone(),
                reason: e.to_string(),
            })?;
        self.judge(outcome)
    }

    fn judge(&self, outcome: Outcome) -> Result<Verdict, ModerationError> {
        let c = &self.inner.counters;
        let name = || self.inner.settings.name.clone();
        let verdict = match outcome {
            Outcome::Timeout => {
                c.timeouts.fetch_add(1, Ordering::Relaxed);
                return Err(ModerationError::Timeout(name()));
            }
            Outcome::Trap(reason) => {
                c.traps.fetch_add(1, Ordering::Relaxed);
                return Err(ModerationError::Failed {
                    name: name(),
                    reason,
                });
            }
            Outcome::Verdict(v) => v,
        };
        let text_len = match &verdict {
            types::Verdict::Allow => 0,
            types::Verdict::Rewrite(t) | types::Verdict::Reject(t) | types::Verdict::Flag(t) => {
                t.len()
            }
        };
        if text_len > self.inner.settings.max_output_bytes {
            c.oversized.fetch_add(1, Ordering::Relaxed);
            return Err(ModerationError::InvalidOutput {
                name: name(),
                reason: format!(
                    "{text_len} bytes, over the limit of {}",
                    self.inner.settings.max_output_bytes
                ),
            });
        }
        c.verdicts.fetch_add(1, Ordering::Relaxed);
        Ok(match verdict {
            types::Verdict::Allow => Verdict::Allow,
            types::Verdict::Rewrite(t) => Verdict::Rewrite(t),
            types::Verdict::Reject(t) => Verdict::Reject(t),
            types::Verdict::Flag(t) => Verdict::Flag(t),
        })
    }
}

fn to_wit(m: Candidate<'_>) -> types::Message {
    types::Message {
        workspace_id: m.workspace_id.to_string(),
        contact_id: m.contact_id.to_string(),
        sender: m.sender.map(str::to_owned),
        body: m.body.to_owned(),
        direction: match m.direction {
            livechat_core::model::Direction::Inbound => types::Direction::Inbound,
            livechat_core::model::Direction::Outbound => types::Direction::Outbound,
        },
        msg_type: m.msg_type.as_str().to_owned(),
    }
}

impl Moderator for Plugin {
    fn name(&self) -> &str {
        &self.inner.settings.name
    }

    async fn check(&self, message: Candidate<'_>) -> Result<Verdict, ModerationError> {
        let name = || self.inner.settings.name.clone();
        // Bounded concurrency: wait for a permit no longer than a call may take.
        let permit =
            tokio::time::timeout(self.inner.settings.deadline, self.inner.permits.acquire())
                .await
                .map_err(|_| ModerationError::Overloaded(name()))?
                .map_err(|_| ModerationError::Overloaded(name()))?;
        // On this runtime thread: a typical check takes microseconds, far less than a
        // hand-off to a blocking thread and back, and a long one yields every tick.
        let outcome =
            self.inner
                .call(to_wit(message))
                .await
                .map_err(|e| ModerationError::Failed {
                    name: name(),
                    reason: e.to_string(),
                })?;
        drop(permit);
        if let Outcome::Trap(reason) = &outcome {
            tracing::warn!(plugin = %self.inner.settings.name, %reason, "plugin trapped");
        }
        if let Outcome::Timeout = &outcome {
            tracing::warn!(plugin = %self.inner.settings.name, deadline = ?self.inner.settings.deadline, "plugin ran past its deadline");
        }
        self.judge(outcome)
    }

    fn failure_policy(&self) -> FailurePolicy {
        self.inner.settings.failure_policy
    }
}
