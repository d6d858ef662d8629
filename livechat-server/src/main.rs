//! `livechat-server`: loads settings, sets up logging, runs until SIGINT or SIGTERM.

use livechat_server::config::{Config, LogFormat};
use tracing_subscriber::EnvFilter;

/// jemalloc: every delivered frame allocates and frees a few buffers (encoding in
/// socketioxide, engineioxide and tungstenite), and glibc's malloc took a quarter of
/// the runtime thread in scenario (e) of `BENCHMARKS.md`.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let config = Config::load()?;
    if config.print_config {
        // Before the runtime and the logs: printing the configuration starts nothing.
        print!("{}", config.to_toml()?);
        return Ok(());
    }
    runtime(config.worker_threads)?.block_on(serve(config))
}

/// One worker thread (or `--worker-threads 1`) gets a current-thread runtime: on one
/// busy core, the multi-thread scheduler's hand-offs between the I/O driver and the
/// worker cost far more tail latency than they buy.
fn runtime(worker_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let workers = match worker_threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let filter = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    // Logs go to stderr: stdout carries only the address and tokens printed at start.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in files or journals.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match config.log_format {
        LogFormat::Human => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let listener = tokio::net::TcpListener::bind(config.bind).await?;
    livechat_server::run(config, listener, shutdown_signal(), |started| {
        // Printed to stdout, not logged: these are for the person who just started it.
        println!("livechat listening on http://{}", started.addr);
        if let Some(token) = &started.generated_admin_token {
            println!("admin token (generated; set LIVECHAT_ADMIN_TOKEN to choose one): {token}");
        }
        if let Some(demo) = &started.demo {
            println!("demo workspace: {}", demo.workspace_id);
            println!("demo contact:   {}", demo.contact_id);
            let links = demo.inbox_links(started.addr);
            if links.is_empty() {
                println!(
                    "demo inbox: http://{}/ (sign in with a member's token)",
                    started.addr
                );
            }
            for (agent, link) in links {
                println!("demo inbox as {agent}: {link}");
            }
            if let Some(token) = &demo.agent_token {
                println!(
                    "demo agent token (user {}, valid 24 h): {token}",
                    demo.agent
                );
            }
        }
    })
    .await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// Targets held at `info` unless `RUST_LOG` names them: socketioxide and engineioxide
/// log raw packets — tokens and message bodies included — at debug and trace; the
/// wasm compiler logs every function it compiles.
const NOISY_OR_LEAKY: [&str; 5] = [
    "socketioxide",
    "engineioxide",
    "cranelift",
    "wasmtime",
    "regalloc2",
];

/// The log filter: `RUST_LOG`, or `info`, with [`NOISY_OR_LEAKY`] held at `info`.
fn log_filter(rust_log: Option<&str>) -> EnvFilter {
    let spec = rust_log.unwrap_or("info");
    let mut filter = EnvFilter::try_new(spec).unwrap_or_else(|_| EnvFilter::new("info"));
    for target in NOISY_OR_LEAKY {
        if !spec.contains(target)
            && let Ok(directive) = format!("{target}=info").parse()
        {
            filter = filter.add_directive(directive);
        }
    }
    filter
}
