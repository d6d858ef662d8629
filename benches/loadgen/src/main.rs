//! `livechat-loadgen`: drives a Socket.IO chat server (livechat-server, or the Node.js
//! baseline) with many websocket clients and prints one JSON line of results.
//!
//! It speaks the wire protocol itself through this package's library
//! ([`livechat_loadgen::Client`]), so that it stays cheap enough never to be the
//! bottleneck.
//!
//! Each client joins one workspace room and one contact room; the first `senders`
//! clients also send to their contact, at a fixed total `rate` or as fast as a window
//! of in-flight acks allows. A message's body carries its send time, so every receiver
//! measures end-to-end latency. Only messages sent inside the measured window (after
//! the warm-up) count, and the delivery ratio (received / expected) shows broadcasts
//! lost on the way.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use livechat_loadgen::{Client, ack_of};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message as Frame;

/// jemalloc, as the server uses: in fan-out the load generator is near a full core too,
/// and it allocates per frame it reads.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How the server under test is prepared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Setup {
    /// livechat-server: workspaces, contacts and members through its REST API (admin
    /// token), agent tokens signed with the JWT secret.
    Livechat,
    /// A server without auth or directory (the Node.js baseline): random ids.
    None,
}

#[derive(Debug, Parser)]
#[command(name = "livechat-loadgen", about)]
struct Args {
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    url: String,
    /// How the server is prepared.
    #[arg(long, value_enum, default_value_t = Setup::Livechat)]
    setup: Setup,
    /// Admin token (setup livechat).
    #[arg(long, env = "LIVECHAT_ADMIN_TOKEN", default_value = "")]
    admin_token: String,
    /// HS256 secret the server verifies agent tokens with (setup livechat).
    #[arg(long, env = "LIVECHAT_JWT_SECRET", default_value = "")]
    jwt_secret: String,
    /// Connected clients.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Workspaces the clients are spread over.
    #[arg(long, default_value_t = 1)]
    workspaces: usize,
    /// Contacts, spread over the workspaces.
    #[arg(long, default_value_t = 1)]
    contacts: usize,
    /// How many of the clients send.
    #[arg(long, default_value_t = 1)]
    senders: usize,
    /// Total messages per second over all senders; 0: as fast as the window allows.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Acks in flight per sender (max-rate mode).
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Idle mode: open this many connections, join nothing, report RSS per connection.
    #[arg(long)]
    idle: Option<usize>,
    /// The server's process id, for its CPU time and RSS from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Connections opened at once while connecting.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// A label copied into the output line.
    #[arg(long, default_value = "")]
    label: String,
}

/// One client's place: its user token, workspace and contact.
#[derive(Clone, Debug)]
struct Seat {
    token: String,
    workspace: String,
    contact: String,
    workspace_index: usize,
    /// Unique to this seat in this run: the clientIds it sends are `<prefix>-<ack id>`.
    key_prefix: String,
}

/// Counters shared by every client.
#[derive(Default)]
struct Shared {
    measuring: AtomicBool,
    stopping: AtomicBool,
    /// Send times (µs since `start`) that are inside the measured window.
    window_from: AtomicU64,
    window_to: AtomicU64,
    sent: AtomicU64,
    acked: AtomicU64,
    deliveries: AtomicU64,
    expected: AtomicU64,
    errors: Mutex<HashMap<String, u64>>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // One thread: pinned to its own core by the compare script, and cheap.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let line = runtime.block_on(run(args))?;
    println!("{line}");
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<Value> {
    if let Some(k) = args.idle {
        return idle(&args, k).await;
    }
    let seats = setup(&args, args.clients).await?;
    let start = Instant::now();
    let (done_tx, done) = tokio::sync::watch::channel(false);
    let shared = Arc::new(Shared::default());
    let mut per_workspace = vec![0u64; args.workspaces];
    for seat in &seats {
        per_workspace[seat.workspace_index] += 1;
    }
    let per_workspace = Arc::new(per_workspace);

    // Connect and join, a bounded number at a time.
    let mut clients = Vec::with_capacity(seats.len());
    for chunk in seats.chunks(args.connect_concurrency.max(1)) {
        let connected = futures_util::future::join_all(
            chunk
                .iter()
                .map(|seat| Client::connect(&args.url, &seat.token)),
        )
        .await;
        for c in connected {
            clients.push(c?);
        }
    }
    for (client, seat) in clients.iter_mut().zip(&seats) {
        client
            .emit_ack(
                1,
                "join_workspace",
                json!({ "workspaceId": seat.workspace }),
            )
            .await?;
        client
            .emit_ack(2, "join_contact", json!({ "contactId": seat.contact }))
            .await?;
    }
    for client in &mut clients {
        client.wait_acks(&[1, 2]).await?;
    }

    let senders = args.senders.min(clients.len());
    let mut tasks = Vec::new();
    for (i, (client, seat)) in clients.into_iter().zip(seats).enumerate() {
        let shared = shared.clone();
        let per_workspace = per_workspace.clone();
        let plan = (i < senders).then(|| SendPlan {
            rate_per_sender: if args.rate == 0 {
                None
            } else {
                Some(args.rate as f64 / senders as f64)
            },
            window: args.window.max(1),
        });
        tasks.push(tokio::spawn(drive(
            client,
            seat,
            plan,
            shared,
            per_workspace,
            (start, done.clone()),
        )));
    }

    let cpu_before = args.server_pid.map(cpu_seconds).transpose()?;
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    let from = start.elapsed().as_micros() as u64;
    shared.window_from.store(from, Ordering::SeqCst);
    shared.window_to.store(u64::MAX, Ordering::SeqCst);
    shared.measuring.store(true, Ordering::SeqCst);
    let cpu_from = args.server_pid.map(cpu_seconds).transpose()?.or(cpu_before);
    // Our own CPU too: a load generator near one full core is the bottleneck, and the
    // server's numbers then say nothing.
    let own_from = cpu_seconds(std::process::id())?;
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    let to = start.elapsed().as_micros() as u64;
    shared.window_to.store(to, Ordering::SeqCst);
    let cpu_to = args.server_pid.map(cpu_seconds).transpose()?;
    let own_to = cpu_seconds(std::process::id())?;
    let rss = args.server_pid.map(rss_bytes).transpose()?;
    // Let what was sent in the window arrive, then stop.
    shared.stopping.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    shared.measuring.store(false, Ordering::SeqCst);

    let _ = done_tx.send(true);
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for t in tasks {
        if let Ok(Ok(h)) = tokio::time::timeout(Duration::from_secs(5), t).await {
            latency.add(h)?;
        }
    }
    let seconds = (to - from) as f64 / 1e6;
    let deliveries = shared.deliveries.load(Ordering::SeqCst);
    let expected = shared.expected.load(Ordering::SeqCst);
    let errors = shared.errors.lock().await.clone();
    Ok(json!({
        "label": args.label,
        "clients": args.clients,
        "workspaces": args.workspaces,
        "contacts": args.contacts,
        "senders": senders,
        "rate": args.rate,
        "window": args.window,
        "seconds": seconds,
        "sent": shared.sent.load(Ordering::SeqCst),
        "acked_per_sec": shared.acked.load(Ordering::SeqCst) as f64 / seconds,
        "deliveries_per_sec": deliveries as f64 / seconds,
        "delivery_ratio": if expected == 0 { 0.0 } else { deliveries as f64 / expected as f64 },
        "latency_us": {
            "p50": latency.value_at_quantile(0.50),
            "p99": latency.value_at_quantile(0.99),
            "p999": latency.value_at_quantile(0.999),
            "max": latency.max(),
        },
        "errors": errors,
        "server_cpu_cores": match (cpu_from, cpu_to) {
            (Some(a), Some(b)) => json!((b - a) / seconds),
            _ => Value::Null,
        },
        "server_rss_bytes": rss,
        "loadgen_cpu_cores": (own_to - own_from) / seconds,
    }))
}

async fn setup(args: &Args, clients: usize) -> anyhow::Result<Vec<Seat>> {
    if args.workspaces == 0 || args.contacts < args.workspaces {
        bail!("need at least one workspace and one contact per workspace");
    }
    let (workspaces, contacts) = match args.setup {
        Setup::None => (
            (0..args.workspaces)
                .map(|_| random_id())
                .collect::<Vec<_>>(),
            (0..args.contacts).map(|_| random_id()).collect::<Vec<_>>(),
        ),
        Setup::Livechat => {
            let http = reqwest::Client::new();
            let mut workspaces = Vec::new();
            for w in 0..args.workspaces {
                let ws: Value = admin(
                    &http,
                    args,
                    "/api/workspaces",
                    json!({ "name": format!("load {w}") }),
                )
                .await?;
                workspaces.push(ws["id"].as_str().context("workspace id")?.to_owned());
            }
            let mut contacts = Vec::new();
            for c in 0..args.contacts {
                let ws = &workspaces[c % args.workspaces];
                let contact: Value = admin(
                    &http,
                    args,
                    &format!("/api/workspaces/{ws}/contacts"),
                    json!({ "name": format!("contact {c}") }),
                )
                .await?;
                contacts.push(contact["id"].as_str().context("contact id")?.to_owned());
            }
            (workspaces, contacts)
        }
    };
    let http = reqwest::Client::new();
    let run = random_id();
    let mut seats = Vec::with_capacity(clients);
    for i in 0..clients {
        let w = i % args.workspaces;
        // Contacts of workspace w are w, w + W, w + 2W, ...
        let per_ws = (args.contacts - w).div_ceil(args.workspaces);
        let contact = &contacts[w + ((i / args.workspaces) % per_ws) * args.workspaces];
        let user = format!("load-{i}");
        let token = match args.setup {
            Setup::None => user.clone(),
            Setup::Livechat => {
                admin::<Value>(
                    &http,
                    args,
                    &format!("/api/workspaces/{}/members", workspaces[w]),
                    json!({ "userId": user, "role": "agent" }),
                )
                .await?;
                livechat_core::auth::Claims::new(user, chrono::Duration::hours(2))
                    .sign_hs256(args.jwt_secret.as_bytes())?
            }
        };
        seats.push(Seat {
            token,
            workspace: workspaces[w].clone(),
            contact: contact.clone(),
            workspace_index: w,
            key_prefix: format!("{run}-{i}"),
        });
    }
    Ok(seats)
}

async fn admin<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    args: &Args,
    path: &str,
    body: Value,
) -> anyhow::Result<T> {
    let response = http
        .post(format!("{}{path}", args.url))
        .bearer_auth(&args.admin_token)
        .json(&body)
        .send()
        .await?;
    let status = response.status();
    if !status.is_success() {
        bail!(
            "POST {path}: {status}: {}",
            response.text().await.unwrap_or_default()
        );
    }
    Ok(response.json().await?)
}

fn random_id() -> String {
    // No uuid crate needed for opaque ids: time and a counter are unique enough here.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default() as u64;
    format!("{:08x}-0000-4000-8000-{:012x}", t as u32, n)
}

struct SendPlan {
    rate_per_sender: Option<f64>,
    window: usize,
}

/// Reads everything; sends by plan; counts and measures, until `done`. Returns the
/// latencies it saw.
async fn drive(
    client: Client,
    seat: Seat,
    plan: Option<SendPlan>,
    shared: Arc<Shared>,
    per_workspace: Arc<Vec<u64>>,
    (start, mut done): (Instant, tokio::sync::watch::Receiver<bool>),
) -> Histogram<u64> {
    let (mut sink, mut stream) = client.ws.split();
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    // Sends in flight: ack id → send time (µs).
    let mut in_flight: HashMap<u64, u64> = HashMap::new();
    let mut next_id = 10u64;
    let fanout = per_workspace[seat.workspace_index];
    let mut tick = plan.as_ref().and_then(|p| p.rate_per_sender).map(|r| {
        let mut i = tokio::time::interval(Duration::from_secs_f64(1.0 / r.max(0.001)));
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        i
    });
    let window = plan.as_ref().map_or(0, |p| p.window);
    let sending = plan.is_some();
    let send_one = |in_flight: &mut HashMap<u64, u64>, next_id: &mut u64| -> Option<String> {
        if shared.stopping.load(Ordering::Relaxed) {
            return None;
        }
        let t = start.elapsed().as_micros() as u64;
        let id = *next_id;
        *next_id += 1;
        in_flight.insert(id, t);
        if in_window(&shared, t) {
            shared.sent.fetch_add(1, Ordering::Relaxed);
        }
        // A clientId on every send, as the seed frontend does for safe retries; the
        // server then checks it against the stored keys.
        Some(format!(
            "42{id}[\"send_message\",{{\"contactId\":\"{}\",\"clientId\":\"{}-{id}\",\"body\":\"{t}\"}}]",
            seat.contact, seat.key_prefix
        ))
    };
    // Max-rate mode: fill the window at once.
    if sending && tick.is_none() {
        for _ in 0..window {
            if let Some(frame) = send_one(&mut in_flight, &mut next_id)
                && sink.send(Frame::text(frame)).await.is_err()
            {
                return latency;
            }
        }
    }
    loop {
        let frame = tokio::select! {
            frame = stream.next() => frame,
            _ = done.changed() => break,
            _ = async {
                match tick.as_mut() {
                    Some(t) => { t.tick().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {
                if let Some(frame) = send_one(&mut in_flight, &mut next_id)
                    && sink.send(Frame::text(frame)).await.is_err()
                {
                    break;
                }
                continue;
            }
        };
        let Some(Ok(Frame::Text(text))) = frame else {
            break;
        };
        let text = text.as_str();
        if text == "2" {
            if sink.send(Frame::text("3")).await.is_err() {
                break;
            }
        } else if let Some(body) = text.strip_prefix("42[\"new_message\",") {
            if let Some(t) = sent_at(body)
                && shared.measuring.load(Ordering::Relaxed)
                && in_window(&shared, t)
            {
                shared.deliveries.fetch_add(1, Ordering::Relaxed);
                let now = start.elapsed().as_micros() as u64;
                let _ = latency.record(now.saturating_sub(t).max(1));
            }
        } else if let Some((id, rest)) = ack_of(text) {
            let Some(t) = in_flight.remove(&id) else {
                continue;
            };
            let counted = in_window(&shared, t);
            if rest.contains("\"ok\":true") {
                if counted {
                    shared.acked.fetch_add(1, Ordering::Relaxed);
                    shared.expected.fetch_add(fanout, Ordering::Relaxed);
                }
            } else if counted {
                let code = serde_json::from_str::<Value>(rest)
                    .ok()
                    .and_then(|v| v[0]["error"]["code"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| "unreadable".into());
                *shared.errors.lock().await.entry(code).or_default() += 1;
            }
            if tick.is_none()
                && let Some(frame) = send_one(&mut in_flight, &mut next_id)
                && sink.send(Frame::text(frame)).await.is_err()
            {
                break;
            }
        }
    }
    latency
}

fn in_window(shared: &Shared, t: u64) -> bool {
    t >= shared.window_from.load(Ordering::Relaxed)
        && t < shared.window_to.load(Ordering::Relaxed)
        && shared.window_from.load(Ordering::Relaxed) > 0
}

/// The send time a loadgen body carries: `..."body":"<µs>"...`.
fn sent_at(message: &str) -> Option<u64> {
    let at = message.find("\"body\":\"")? + 8;
    let rest = &message[at..];
    let end = rest.find('"')?;
    rest[..end].parse().ok()
}

async fn idle(args: &Args, k: usize) -> anyhow::Result<Value> {
    let pid = args.server_pid.context("--idle needs --server-pid")?;
    let seats = setup(args, 1).await?;
    let seat = seats.into_iter().next().context("a seat")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_bytes(pid)?;
    let mut open = Vec::with_capacity(k);
    for chunk in (0..k)
        .collect::<Vec<_>>()
        .chunks(args.connect_concurrency.max(1))
    {
        let connected = futures_util::future::join_all(
            chunk
                .iter()
                .map(|_| Client::connect(&args.url, &seat.token)),
        )
        .await;
        for c in connected {
            let client = c?;
            // Keep answering pings so the server keeps the connection.
            open.push(tokio::spawn(async move {
                let (mut sink, mut stream) = client.ws.split();
                while let Some(Ok(Frame::Text(t))) = stream.next().await {
                    if t.as_str() == "2" && sink.send(Frame::text("3")).await.is_err() {
                        break;
                    }
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_bytes(pid)?;
    for t in &open {
        t.abort();
    }
    Ok(json!({
        "label": args.label,
        "idle_connections": k,
        "rss_before_bytes": before,
        "rss_after_bytes": after,
        "rss_per_connection_bytes": (after.saturating_sub(before)) as f64 / k as f64,
    }))
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').context("stat format")? + 2..]
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(ticks as f64 / 100.0)
}

/// Resident set size of `pid`, in bytes.
fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("VmRSS")?;
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?;
    Ok(kb * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_send_times() {
        assert_eq!(
            super::sent_at("{\"body\":\"123456\",\"seq\":1}]"),
            Some(123456)
        );
        assert_eq!(super::sent_at("{\"body\":\"hi\"}"), None);
    }
}
