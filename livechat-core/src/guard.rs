//! Abuse limits: connection counts and rates, send rates, allowed origins, and the
//! client address they are keyed by.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::model::{UserId, WorkspaceId};

/// The address of the peer of a connection, as the host saw it. Hosts insert it into
/// the request extensions (axum: from `ConnectInfo<SocketAddr>`) so that per-address
/// limits apply; without it, those limits are skipped.
///
/// ```
/// # use livechat_core::PeerAddr;
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(PeerAddr("203.0.113.7:52000".parse().unwrap()));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// A budget: `per_sec` sustained with bursts of up to `burst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Sustained requests per second.
    pub per_sec: u32,
    /// Requests allowed at once.
    pub burst: u32,
}

impl Rate {
    /// A budget of `per_sec` with bursts of `burst` (both at least 1).
    pub const fn new(per_sec: u32, burst: u32) -> Self {
        Self { per_sec, burst }
    }

    fn quota(self) -> Quota {
        let nz = |n: u32| NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN);
        Quota::per_second(nz(self.per_sec)).allow_burst(nz(self.burst))
    }
}

/// The browser origins allowed to connect.
///
/// ```
/// use livechat_core::OriginPolicy;
/// let policy = OriginPolicy::local_only().with_origin("https://inbox.example.com");
/// assert!(policy.allows(Some("https://inbox.example.com")));
/// assert!(policy.allows(Some("http://localhost:5173")));
/// assert!(!policy.allows(Some("https://evil.example")));
/// assert!(policy.allows(None), "no Origin: not a browser");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginPolicy {
    any: bool,
    local: bool,
    origins: Vec<String>,
}

impl Default for OriginPolicy {
    /// [`OriginPolicy::local_only`].
    fn default() -> Self {
        Self::local_only()
    }
}

impl OriginPolicy {
    /// Only pages served from `localhost`, `127.0.0.1` or `[::1]` (any port): the safe
    /// development default.
    pub fn local_only() -> Self {
        Self {
            any: false,
            local: true,
            origins: Vec::new(),
        }
    }

    /// Exactly these origins (`scheme://host[:port]`, compared without case).
    pub fn list<I: IntoIterator<Item = S>, S: Into<String>>(origins: I) -> Self {
        Self {
            any: false,
            local: false,
            origins: origins.into_iter().map(Into::into).collect(),
        }
    }

    /// Any origin. Only for deployments where no browser holds credentials that an
    /// attacker's page could ride on.
    pub fn any() -> Self {
        Self {
            any: true,
            local: false,
            origins: Vec::new(),
        }
    }

    /// Also allows `origin`.
    pub fn with_origin(mut self, origin: impl Into<String>) -> Self {
        self.origins.push(origin.into());
        self
    }

    /// Whether any origin is allowed.
    pub fn allows_any(&self) -> bool {
        self.any
    }

    /// Whether a request with this `Origin` header may connect. Requests without one
    /// (not from a browser: apps, servers, tests) are always allowed — the check
    /// exists against cross-site pages, and browsers always send `Origin` on
    /// cross-origin and websocket requests.
    pub fn allows(&self, origin: Option<&str>) -> bool {
        let Some(origin) = origin else { return true };
        let origin = origin.trim_end_matches('/');
        self.any
            || self
                .origins
                .iter()
                .any(|o| o.trim_end_matches('/').eq_ignore_ascii_case(origin))
            || (self.local && is_local(origin))
    }
}

fn is_local(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let host = match rest.strip_prefix('[') {
        Some(v6) => v6
            .split(']')
            .next()
            .map(|h| format!("[{h}]"))
            .unwrap_or_default(),
        None => rest.split([':', '/']).next().unwrap_or_default().to_owned(),
    };
    matches!(host.as_str(), "localhost" | "127.0.0.1" | "[::1]")
}

/// Proxies whose `X-Forwarded-For` is believed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(pub Vec<ipnet::IpNet>);

impl TrustedProxies {
    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address: the peer, unless the peer is a trusted proxy, in which
    /// case the right-most `X-Forwarded-For` entry that is not itself a trusted proxy.
    /// Entries a client wrote itself sit to the left of those its proxies added, so
    /// they are never believed over a proxy's word.
    pub fn client_ip(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let Some(chain) = forwarded_for else {
            return peer;
        };
        let mut client = peer;
        for hop in chain.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) if self.trusts(ip) => client = ip,
                Ok(ip) => return ip,
                // A malformed entry: stop at the last address we could vouch for.
                Err(_) => return client,
            }
        }
        client
    }
}

/// Counts of open connections, for the per-address, per-user and global limits.
#[derive(Debug, Default)]
struct Counts {
    global: usize,
    by_ip: HashMap<IpAddr, usize>,
    by_user: HashMap<UserId, usize>,
}

/// Why a connection is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    ConnectRate,
    TooManyFromAddress,
    TooManyForUser,
    ServerFull,
}

impl Refusal {
    /// The `reason` label of the refusal in the metrics.
    pub(crate) fn metric_reason(self) -> &'static str {
        match self {
            Self::ConnectRate => "rate_limited",
            Self::TooManyFromAddress | Self::TooManyForUser => "too_many_connections",
            Self::ServerFull => "server_full",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ConnectRate => "rate_limited: too many connection attempts from this address",
            Self::TooManyFromAddress => "rate_limited: too many connections from this address",
            Self::TooManyForUser => "rate_limited: too many connections for this user",
            Self::ServerFull => "unavailable: the server is at its connection limit",
        })
    }
}

/// The connection and send limits of one livechat.
pub(crate) struct Guard {
    limits: GuardLimits,
    connect_by_ip: DefaultKeyedRateLimiter<IpAddr>,
    /// Namespace connects (token checks) per address, apart from transport opens: a
    /// client may send any number of them over one transport.
    handshake_by_ip: DefaultKeyedRateLimiter<IpAddr>,
    send_by_user: DefaultKeyedRateLimiter<UserId>,
    send_by_workspace: DefaultKeyedRateLimiter<WorkspaceId>,
    /// Made once: creating a clock calibrates it (cpuid and a timing loop).
    clock: DefaultClock,
    counts: Arc<Mutex<Counts>>,
    checks: std::sync::atomic::AtomicU64,
}

/// The subset of [`crate::Limits`] the guard needs.
#[derive(Clone, Debug)]
pub(crate) struct GuardLimits {
    pub(crate) connect_rate_per_ip: Rate,
    pub(crate) max_connections_per_ip: usize,
    pub(crate) max_connections_per_user: usize,
    pub(crate) max_connections: usize,
    pub(crate) send_per_socket: Rate,
    pub(crate) send_per_user: Rate,
    pub(crate) send_per_workspace: Rate,
    pub(crate) signals_per_socket: Rate,
    pub(crate) trusted_proxies: TrustedProxies,
}

/// A held connection slot; dropping it (with the socket) frees the slot.
#[derive(Debug)]
pub(crate) struct Slot {
    counts: Arc<Mutex<Counts>>,
    ip: Option<IpAddr>,
    user: UserId,
    since: std::time::Instant,
}

impl Slot {
    /// The client address the connection counts against, when the host gave one.
    pub(crate) fn ip(&self) -> Option<IpAddr> {
        self.ip
    }

    /// How long the connection has been open.
    pub(crate) fn age(&self) -> std::time::Duration {
        self.since.elapsed()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.global = c.global.saturating_sub(1);
        if let Some(ip) = self.ip {
            decrement(&mut c.by_ip, &ip);
        }
        decrement(&mut c.by_user, &self.user);
    }
}

fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

/// A per-socket send budget, kept in the socket's extensions.
pub(crate) type SocketBudget = Arc<DefaultDirectRateLimiter>;

/// A per-socket budget for typing, read receipts, reactions and unread counts.
#[derive(Clone)]
pub(crate) struct SignalBudget(Arc<DefaultDirectRateLimiter>);

impl Guard {
    pub(crate) fn new(limits: GuardLimits) -> Self {
        Self {
            connect_by_ip: RateLimiter::keyed(limits.connect_rate_per_ip.quota()),
            handshake_by_ip: RateLimiter::keyed(limits.connect_rate_per_ip.quota()),
            send_by_user: RateLimiter::keyed(limits.send_per_user.quota()),
            send_by_workspace: RateLimiter::keyed(limits.send_per_workspace.quota()),
            clock: DefaultClock::default(),
            counts: Arc::default(),
            checks: Default::default(),
            limits,
        }
    }

    pub(crate) fn client_ip(
        &self,
        extensions: &http::Extensions,
        headers: &http::HeaderMap,
    ) -> Option<IpAddr> {
        let peer = extensions.get::<PeerAddr>()?.0.ip();
        let xff = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
        Some(self.limits.trusted_proxies.client_ip(peer, xff))
    }

    /// Counts a connection attempt against its address's budget.
    pub(crate) fn check_connect_rate(&self, ip: Option<IpAddr>) -> Result<(), Refusal> {
        self.tidy();
        match ip {
            Some(ip) => self
                .connect_by_ip
                .check_key(&ip)
                .map_err(|_| Refusal::ConnectRate),
            None => Ok(()),
        }
    }

    /// Counts a namespace connect (a token to check) against its address's budget,
    /// the same size as the budget of transport opens but its own.
    pub(crate) fn check_handshake_rate(&self, ip: Option<IpAddr>) -> Result<(), Refusal> {
        match ip {
            Some(ip) => self
                .handshake_by_ip
                .check_key(&ip)
                .map_err(|_| Refusal::ConnectRate),
            None => Ok(()),
        }
    }

    /// Takes a connection slot, or says which limit is full.
    pub(crate) fn acquire(&self, ip: Option<IpAddr>, user: &UserId) -> Result<Slot, Refusal> {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if c.global >= self.limits.max_connections {
            return Err(Refusal::ServerFull);
        }
        if let Some(ip) = ip
            && c.by_ip.get(&ip).copied().unwrap_or(0) >= self.limits.max_connections_per_ip
        {
            return Err(Refusal::TooManyFromAddress);
        }
        if c.by_user.get(user).copied().unwrap_or(0) >= self.limits.max_connections_per_user {
            return Err(Refusal::TooManyForUser);
        }
        c.global += 1;
        if let Some(ip) = ip {
            *c.by_ip.entry(ip).or_default() += 1;
        }
        *c.by_user.entry(user.clone()).or_default() += 1;
        Ok(Slot {
            counts: self.counts.clone(),
            ip,
            user: user.clone(),
            since: std::time::Instant::now(),
        })
    }

    pub(crate) fn socket_budget(&self) -> SocketBudget {
        Arc::new(RateLimiter::direct(self.limits.send_per_socket.quota()))
    }

    pub(crate) fn signal_budget(&self) -> SignalBudget {
        SignalBudget(Arc::new(RateLimiter::direct(
            self.limits.signals_per_socket.quota(),
        )))
    }

    /// Checks a typing, read or reaction request against its socket's budget.
    pub(crate) fn check_signal(&self, budget: &SignalBudget) -> Result<(), Duration> {
        let now = self.clock.now();
        budget.0.check().map_err(|n| n.wait_time_from(now))
    }

    /// Checks a send against the socket's, the user's and the workspace's budgets.
    pub(crate) fn check_send(
        &self,
        socket: Option<&SocketBudget>,
        user: &UserId,
        workspace: WorkspaceId,
    ) -> Result<(), Duration> {
        self.tidy();
        let now = self.clock.now();
        if let Some(budget) = socket {
            budget.check().map_err(|n| n.wait_time_from(now))?;
        }
        self.send_by_user
            .check_key(user)
            .map_err(|n| n.wait_time_from(now))?;
        self.send_by_workspace
            .check_key(&workspace)
            .map_err(|n| n.wait_time_from(now))
    }

    /// Keyed limiters keep an entry per key they have seen; now and then drop those
    /// whose budget is full again, so that idle keys cost no memory.
    fn tidy(&self) {
        use std::sync::atomic::Ordering;
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            self.connect_by_ip.retain_recent();
            self.handshake_by_ip.retain_recent();
            self.send_by_user.retain_recent();
            self.send_by_workspace.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let local = OriginPolicy::local_only();
        assert!(local.allows(None));
        assert!(local.allows(Some("http://localhost:5173")));
        assert!(local.allows(Some("http://127.0.0.1:3000")));
        assert!(local.allows(Some("http://[::1]:3000")));
        assert!(!local.allows(Some("https://evil.example")));
        assert!(!local.allows(Some("http://localhost.evil.example")));
        assert!(!local.allows(Some("null")));
        let list = OriginPolicy::list(["https://app.example.com"]);
        assert!(list.allows(Some("https://APP.example.com")));
        assert!(!list.allows(Some("https://app.example.com.evil.example")));
        assert!(!list.allows(Some("http://localhost:3000")));
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = TrustedProxies(vec!["10.0.0.0/8".parse().unwrap()]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // Not from a proxy: the header is ignored.
        assert_eq!(
            trusted.client_ip(ip("203.0.113.9"), Some("1.2.3.4")),
            ip("203.0.113.9")
        );
        // From a proxy: the right-most untrusted entry.
        assert_eq!(
            trusted.client_ip(ip("10.0.0.2"), Some("1.2.3.4, 198.51.100.7")),
            ip("198.51.100.7")
        );
        assert_eq!(
            trusted.client_ip(ip("10.0.0.2"), Some("198.51.100.7, 10.0.0.5")),
            ip("198.51.100.7")
        );
        assert_eq!(trusted.client_ip(ip("10.0.0.2"), None), ip("10.0.0.2"));
        assert_eq!(
            trusted.client_ip(ip("10.0.0.2"), Some("garbage")),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn slots_are_freed_on_drop() {
        let guard = Guard::new(GuardLimits {
            connect_rate_per_ip: Rate::new(100, 100),
            max_connections_per_ip: 2,
            max_connections_per_user: 10,
            max_connections: 10,
            send_per_socket: Rate::new(1, 1),
            send_per_user: Rate::new(1, 1),
            send_per_workspace: Rate::new(1, 1),
            signals_per_socket: Rate::new(1, 1),
            trusted_proxies: TrustedProxies::default(),
        });
        let ip = Some("192.0.2.1".parse().unwrap());
        let u = UserId::from("u");
        let a = guard.acquire(ip, &u).unwrap();
        let _b = guard.acquire(ip, &u).unwrap();
        assert_eq!(
            guard.acquire(ip, &u).unwrap_err(),
            Refusal::TooManyFromAddress
        );
        assert!(
            guard
                .acquire(Some("192.0.2.2".parse().unwrap()), &u)
                .is_ok(),
            "another address is fine"
        );
        drop(a);
        assert!(
            guard.acquire(ip, &u).is_ok(),
            "a freed slot can be taken again"
        );
    }
}
