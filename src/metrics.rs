//! Counters and histograms for `/metrics`, as plain atomics, rendered by hand in the
//! Prometheus text exposition format 0.0.4.
//!
//! Recording an event is one relaxed atomic add into a fixed slot (labels are array
//! indices chosen at compile time): no allocation, no lock, no string formatting.
//! Strings are only made when `/metrics` is scraped. Gauges that mirror state the
//! proxy already keeps (bindings, transactions, parked calls) are not counted here
//! at all: the admin API reads them from their owners when it renders.
//!
//! The set lives in one process-wide static ([`global`]) rather than in a handle passed
//! down from `main` like other shared state: the events come from deep inside the
//! transaction, push and store code (the SQLite thread has no `Core`), and threading a
//! handle through every constructor for a write-only sink would touch every signature
//! for nothing. A process runs one sipwake, and tests read values as deltas.
//!
//! Why not `prometheus-client`: its pre-registered counters cost the same relaxed add
//! as these (measured side by side), but it writes only OpenMetrics text (`# EOF`,
//! counter families without `_total`, another content type), which is not the 0.0.4
//! format scrapers and the admin tests read today, and its histograms take a lock per
//! observation. Why not `procfs`: two values from two short reads of `/proc/self` do
//! not earn a crate that brings `rustix` with it.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::push::{Provider, PushResult};
use crate::sip::Method;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Zero.
    pub const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }

    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Most buckets a histogram may have (its `+Inf` bucket excluded).
const MAX_BUCKETS: usize = 16;

/// A latency histogram with fixed upper bounds, in seconds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Non-cumulative counts per bucket; the last used slot is `+Inf`.
    buckets: [AtomicU64; MAX_BUCKETS + 1],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    /// A histogram with these upper bounds (seconds, increasing, at most 16).
    pub const fn new(bounds: &'static [f64]) -> Histogram {
        assert!(bounds.len() <= MAX_BUCKETS);
        Histogram {
            bounds,
            buckets: [const { AtomicU64::new(0) }; MAX_BUCKETS + 1],
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }
    }

    /// Records one duration: three relaxed adds.
    #[inline]
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(self.bounds.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum_ns
            .fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        header(out, name, help, "histogram");
        let mut cumulative = 0;
        for (i, b) in self.bounds.iter().enumerate() {
            cumulative += self.buckets[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        cumulative += self.buckets[self.bounds.len()].load(Relaxed);
        // count is read after the buckets, so `+Inf` may trail it by an observation
        // in flight; Prometheus wants them equal, and the buckets are what we summed
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_ns.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

/// Kind of push, a label of `sipwake_pushes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushKind {
    /// The push that wakes a phone for a call.
    Call = 0,
    /// The notice that a call ended before the phone got it.
    Cancel = 1,
    /// A test push from the admin API.
    Test = 2,
    /// The notice of a MESSAGE kept for a sleeping phone.
    Message = 3,
    /// The push asking an app to register before its binding ends.
    Refresh = 4,
}

const PUSH_KINDS: [&str; 5] = ["call", "cancel", "test", "message", "refresh"];

/// Why a kept MESSAGE was dropped undelivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageDrop {
    /// Its time to live ran out.
    Expired = 0,
    /// The phone refused it with a final error.
    Undeliverable = 1,
}

const MESSAGE_DROPS: [&str; 2] = ["expired", "undeliverable"];
const PROVIDERS: [&str; 3] = ["apns", "fcm", "webhook"];
const PUSH_OUTCOMES: [&str; 3] = ["sent", "dead_token", "failed"];

/// Label values of `sipwake_calls_total{outcome}`: how a call ended for the caller
/// (the words of the per-call log line).
pub const CALL_OUTCOMES: [&str; 6] = [
    "answered",
    "woken",
    "push_timeout",
    "push_failed",
    "cancelled",
    "rejected",
];

/// Label values of `sipwake_sip_requests_total{method}`, in [`Method`] order.
const METHODS: [&str; 16] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "REGISTER",
    "OPTIONS",
    "INFO",
    "UPDATE",
    "PRACK",
    "SUBSCRIBE",
    "NOTIFY",
    "REFER",
    "MESSAGE",
    "PUBLISH",
    "other",
    "unparsed",
];

/// Label values of `sipwake_registrations_total{result}`.
const REG_RESULTS: [&str; 10] = [
    "ok",
    "challenged",
    "forbidden",
    "not_found",
    "invalid",
    "too_brief",
    "push_unsupported",
    "unavailable",
    "server_error",
    "refused",
];

/// Which `result` a final response to a REGISTER counts as.
fn reg_result(code: u16) -> usize {
    match code {
        200..=299 => 0,
        401 | 407 => 1,
        403 => 2,
        404 => 3,
        400 => 4,
        423 => 5,
        555 => 6,
        408 | 480 | 503 | 504 => 7,
        500..=599 => 8,
        _ => 9,
    }
}

fn class(code: u16) -> Option<usize> {
    matches!(code, 100..=699).then(|| usize::from(code / 100 - 1))
}

/// Every counter and histogram of the process.
#[derive(Debug)]
pub struct Metrics {
    requests: [Counter; METHODS.len()],
    responses_sent: [Counter; 6],
    responses_received: [Counter; 6],
    registrations: [Counter; REG_RESULTS.len()],
    pushes: [[[Counter; PUSH_OUTCOMES.len()]; PUSH_KINDS.len()]; PROVIDERS.len()],
    /// Push tokens removed because the provider reported them dead.
    pub dead_tokens_removed: Counter,
    /// MESSAGEs kept for sleeping phones.
    pub messages_kept: Counter,
    /// Kept MESSAGEs a phone took (2xx).
    pub messages_delivered: Counter,
    messages_dropped: [Counter; MESSAGE_DROPS.len()],
    /// Initial INVITEs that got their final answer, by outcome ([`CALL_OUTCOMES`]).
    calls: [Counter; CALL_OUTCOMES.len()],
    /// Qualify OPTIONS answered by sipwake for a phone that sleeps.
    qualify_answered: Counter,
    /// Push sent (call parked) → woken phone registered → INVITE forwarded to it.
    pub wake: Histogram,
    /// One group commit of the SQLite store.
    pub store_commit: Histogram,
    store_commits: [Counter; 2],
    store_ok: AtomicBool,
    /// One Redis command or script (`store.backend = "redis"`).
    pub redis_command: Histogram,
    /// Redis commands that failed or timed out.
    pub redis_errors: Counter,
    /// Times Redis answered again after failing.
    pub redis_reconnects: Counter,
    /// Binding writes retried because another node changed the AOR first.
    pub redis_conflicts: Counter,
    /// Another node's REGISTER to its binding event arriving here.
    pub redis_event_lag: Histogram,
    /// AORs whose event channel this node is subscribed to now (one per AOR with a
    /// parked call); set by the subscriber, which alone knows it.
    pub redis_subscriptions: AtomicU64,
    started: OnceLock<Instant>,
}

/// Bounds of the wake latency histogram: a phone takes from a few hundred ms to
/// several seconds to wake and register.
const WAKE_BOUNDS: [f64; 13] = [
    0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 30.0,
];

/// Bounds of the store commit histogram: an fsync is ~0.1-10 ms on most disks.
const COMMIT_BOUNDS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

static METRICS: Metrics = Metrics::new();

/// The process-wide metrics (see the module doc for why a static).
#[inline]
pub fn global() -> &'static Metrics {
    &METRICS
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// All zero.
    pub const fn new() -> Metrics {
        Metrics {
            requests: [const { Counter::new() }; METHODS.len()],
            responses_sent: [const { Counter::new() }; 6],
            responses_received: [const { Counter::new() }; 6],
            registrations: [const { Counter::new() }; REG_RESULTS.len()],
            pushes: [const { [const { [const { Counter::new() }; 3] }; 5] }; 3],
            dead_tokens_removed: Counter::new(),
            messages_kept: Counter::new(),
            messages_delivered: Counter::new(),
            messages_dropped: [const { Counter::new() }; MESSAGE_DROPS.len()],
            calls: [const { Counter::new() }; CALL_OUTCOMES.len()],
            qualify_answered: Counter::new(),
            wake: Histogram::new(&WAKE_BOUNDS),
            store_commit: Histogram::new(&COMMIT_BOUNDS),
            store_commits: [const { Counter::new() }; 2],
            store_ok: AtomicBool::new(true),
            redis_command: Histogram::new(&COMMIT_BOUNDS),
            redis_errors: Counter::new(),
            redis_reconnects: Counter::new(),
            redis_conflicts: Counter::new(),
            redis_event_lag: Histogram::new(&COMMIT_BOUNDS),
            redis_subscriptions: AtomicU64::new(0),
            started: OnceLock::new(),
        }
    }

    /// Starts the uptime clock (once; later calls do nothing).
    pub fn mark_start(&self) {
        let _ = self.started.set(Instant::now());
    }

    /// A request arrived (`None`: its request line could not be read).
    #[inline]
    pub fn request_received(&self, method: Option<Method>) {
        let i = method.map_or(METHODS.len() - 1, |m| m as usize);
        if let Some(c) = self.requests.get(i) {
            c.inc();
        }
    }

    /// A response arrived from another element.
    #[inline]
    pub fn response_received(&self, code: Option<u16>) {
        if let Some(i) = code.and_then(class) {
            self.responses_received[i].inc();
        }
    }

    /// sipwake sent (or forwarded) a response to a `method` request. A final response
    /// to a REGISTER also counts as a registration result.
    #[inline]
    pub fn response_sent(&self, method: Option<Method>, code: u16) {
        if let Some(i) = class(code) {
            self.responses_sent[i].inc();
        }
        if code >= 200 && method == Some(Method::Register) {
            self.registrations[reg_result(code)].inc();
        }
    }

    /// A push finished with `result`.
    #[inline]
    pub fn push_done(&self, provider: Provider, kind: PushKind, result: &PushResult) {
        let outcome = match result {
            PushResult::Sent | PushResult::SentOtherEnv { .. } => 0,
            PushResult::DeadToken { .. } => 1,
            PushResult::Failed(_) => 2,
        };
        self.pushes[provider as usize][kind as usize][outcome].inc();
    }

    /// A kept MESSAGE was dropped undelivered.
    pub fn message_dropped(&self, why: MessageDrop) {
        self.messages_dropped[why as usize].inc();
    }

    /// A woken phone was handed the call. `wake_at` is the parked call's deadline,
    /// set to parking time + `wake_timeout` when the pushes went out.
    #[inline]
    pub fn woken(&self, wake_at: Instant, wake_timeout: Duration) {
        let left = wake_at.saturating_duration_since(Instant::now());
        self.wake.observe(wake_timeout.saturating_sub(left));
    }

    /// A call (initial INVITE) got its final answer; `outcome` is one of
    /// [`CALL_OUTCOMES`].
    #[inline]
    pub fn call_finished(&self, outcome: &str) {
        if let Some(i) = CALL_OUTCOMES.iter().position(|o| *o == outcome) {
            self.calls[i].inc();
        }
    }

    /// Calls that ended with `outcome` so far.
    pub fn calls(&self, outcome: &str) -> u64 {
        CALL_OUTCOMES
            .iter()
            .position(|o| *o == outcome)
            .map_or(0, |i| self.calls[i].get())
    }

    /// sipwake answered a PBX's qualify (OPTIONS) for a sleeping phone itself.
    #[inline]
    pub fn qualify_answered(&self) {
        self.qualify_answered.inc();
    }

    /// Runs one store commit, timing it and remembering whether it worked.
    #[inline]
    pub fn timed_commit<T, E>(&self, commit: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let start = Instant::now();
        let r = commit();
        self.store_commit.observe(start.elapsed());
        self.store_commits[usize::from(r.is_err())].inc();
        self.store_ok.store(r.is_ok(), Relaxed);
        r
    }

    /// False when the last store commit failed.
    pub fn store_ok(&self) -> bool {
        self.store_ok.load(Relaxed)
    }

    /// Requests received with this method name (as in the `method` label).
    pub fn requests(&self, method: &str) -> u64 {
        METHODS
            .iter()
            .position(|m| *m == method)
            .map_or(0, |i| self.requests[i].get())
    }

    /// Writes every counter and histogram in the text exposition format.
    pub fn render(&self, out: &mut String) {
        header(
            out,
            "sipwake_sip_requests_total",
            "SIP requests received, by method (retransmissions included).",
            "counter",
        );
        for (m, c) in METHODS.iter().zip(&self.requests) {
            let _ = writeln!(
                out,
                "sipwake_sip_requests_total{{method=\"{m}\"}} {}",
                c.get()
            );
        }
        for (name, help, counters) in [
            (
                "sipwake_sip_responses_sent_total",
                "SIP responses sent or forwarded by sipwake, by class (retransmissions not counted).",
                &self.responses_sent,
            ),
            (
                "sipwake_sip_responses_received_total",
                "SIP responses received from other elements, by class.",
                &self.responses_received,
            ),
        ] {
            header(out, name, help, "counter");
            for (i, c) in counters.iter().enumerate() {
                let _ = writeln!(out, "{name}{{class=\"{}xx\"}} {}", i + 1, c.get());
            }
        }
        header(
            out,
            "sipwake_registrations_total",
            "Final answers to REGISTER requests, by result.",
            "counter",
        );
        for (r, c) in REG_RESULTS.iter().zip(&self.registrations) {
            let _ = writeln!(
                out,
                "sipwake_registrations_total{{result=\"{r}\"}} {}",
                c.get()
            );
        }
        header(
            out,
            "sipwake_pushes_total",
            "Pushes sent, by provider, kind (call, cancel notice, admin test) and outcome.",
            "counter",
        );
        for (p, per_provider) in PROVIDERS.iter().zip(&self.pushes) {
            for (k, per_kind) in PUSH_KINDS.iter().zip(per_provider) {
                for (o, c) in PUSH_OUTCOMES.iter().zip(per_kind) {
                    let _ = writeln!(
                        out,
                        "sipwake_pushes_total{{provider=\"{p}\",kind=\"{k}\",outcome=\"{o}\"}} {}",
                        c.get()
                    );
                }
            }
        }
        counter(
            out,
            "sipwake_dead_tokens_removed_total",
            "Push tokens removed because the provider reported them dead.",
            self.dead_tokens_removed.get(),
        );
        counter(
            out,
            "sipwake_messages_kept_total",
            "MESSAGEs kept for sleeping phones (answered 202).",
            self.messages_kept.get(),
        );
        counter(
            out,
            "sipwake_messages_delivered_total",
            "Kept MESSAGEs a phone took (2xx) after registering again.",
            self.messages_delivered.get(),
        );
        header(
            out,
            "sipwake_messages_dropped_total",
            "Kept MESSAGEs dropped undelivered, by reason.",
            "counter",
        );
        for (r, c) in MESSAGE_DROPS.iter().zip(&self.messages_dropped) {
            let _ = writeln!(
                out,
                "sipwake_messages_dropped_total{{reason=\"{r}\"}} {}",
                c.get()
            );
        }
        header(
            out,
            "sipwake_calls_total",
            "Calls (initial INVITEs) by how they ended for the caller: answered at once, \
             woken by push, push_timeout, push_failed, cancelled, rejected.",
            "counter",
        );
        for (o, c) in CALL_OUTCOMES.iter().zip(&self.calls) {
            let _ = writeln!(out, "sipwake_calls_total{{outcome=\"{o}\"}} {}", c.get());
        }
        counter(
            out,
            "sipwake_qualify_answered_total",
            "OPTIONS (a PBX's qualify) answered by sipwake for a push-capable phone whose \
             flow is not known to be alive.",
            self.qualify_answered.get(),
        );
        self.wake.render(
            out,
            "sipwake_wake_seconds",
            "Push sent to INVITE forwarded to the woken phone (its REGISTER in between).",
        );
        self.store_commit.render(
            out,
            "sipwake_store_commit_seconds",
            "One group commit of the SQLite store (one transaction, one fsync).",
        );
        header(
            out,
            "sipwake_store_commits_total",
            "Store commits, by result.",
            "counter",
        );
        for (r, c) in ["ok", "error"].iter().zip(&self.store_commits) {
            let _ = writeln!(
                out,
                "sipwake_store_commits_total{{result=\"{r}\"}} {}",
                c.get()
            );
        }
        self.redis_command.render(
            out,
            "sipwake_redis_command_seconds",
            "One Redis command or script of the shared binding store (store.backend = \"redis\").",
        );
        counter(
            out,
            "sipwake_redis_errors_total",
            "Redis commands that failed or timed out.",
            self.redis_errors.get(),
        );
        counter(
            out,
            "sipwake_redis_reconnects_total",
            "Times Redis answered again after failing.",
            self.redis_reconnects.get(),
        );
        self.redis_event_lag.render(
            out,
            "sipwake_redis_event_lag_seconds",
            "Another node's REGISTER to its binding event arriving here (pub/sub lag, clocks of both nodes).",
        );
        gauge(
            out,
            "sipwake_redis_subscriptions",
            "AORs whose binding event channel this node is subscribed to (those with a parked call).",
            self.redis_subscriptions.load(Relaxed) as f64,
        );
        counter(
            out,
            "sipwake_redis_conflicts_total",
            "Binding writes retried because another node changed the same AOR first.",
            self.redis_conflicts.get(),
        );
        let uptime = self
            .started
            .get()
            .map_or(0.0, |s| s.elapsed().as_secs_f64());
        gauge(
            out,
            "sipwake_uptime_seconds",
            "Seconds since sipwake started.",
            uptime,
        );
        header(
            out,
            "sipwake_build_info",
            "Always 1; the version is a label.",
            "gauge",
        );
        let _ = writeln!(
            out,
            "sipwake_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        process(out);
    }
}

/// Writes the `# HELP` and `# TYPE` lines of a metric.
pub fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes a gauge without labels.
pub fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    header(out, name, help, "gauge");
    let _ = writeln!(out, "{name} {value}");
}

/// Writes a counter without labels.
pub fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, help, "counter");
    let _ = writeln!(out, "{name} {value}");
}

/// Resident memory and open file descriptors, from `/proc` (Linux; nothing elsewhere).
fn process(out: &mut String) {
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        });
    if let Some(kb) = rss {
        gauge(
            out,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            (kb * 1024) as f64,
        );
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        gauge(
            out,
            "process_open_fds",
            "Open file descriptors.",
            dir.count() as f64,
        );
    }
}

/// Awaits a push and counts its outcome.
pub async fn count_push(
    provider: Provider,
    kind: PushKind,
    push: impl std::future::Future<Output = PushResult>,
) -> PushResult {
    let r = push.await;
    global().push_done(provider, kind, &r);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_in_the_text() {
        let h = Histogram::new(&[0.1, 1.0]);
        h.observe(Duration::from_millis(50));
        h.observe(Duration::from_millis(500));
        h.observe(Duration::from_secs(5));
        let mut s = String::new();
        h.render(&mut s, "x_seconds", "test");
        assert!(s.contains("x_seconds_bucket{le=\"0.1\"} 1\n"), "{s}");
        assert!(s.contains("x_seconds_bucket{le=\"1\"} 2\n"), "{s}");
        assert!(s.contains("x_seconds_bucket{le=\"+Inf\"} 3\n"), "{s}");
        assert!(s.contains("x_seconds_count 3\n"), "{s}");
        assert!(s.contains("x_seconds_sum 5.55\n"), "{s}");
    }

    #[test]
    fn method_labels_follow_the_enum() {
        assert_eq!(METHODS[Method::Invite as usize], "INVITE");
        assert_eq!(METHODS[Method::Publish as usize], "PUBLISH");
        assert_eq!(METHODS[Method::Other as usize], "other");
        assert_eq!(PROVIDERS[Provider::Webhook as usize], "webhook");
        assert_eq!(PROVIDERS[Provider::Apns as usize], "apns");
    }

    #[test]
    fn registration_results() {
        let m = Metrics::new();
        m.response_sent(Some(Method::Register), 200);
        m.response_sent(Some(Method::Register), 423);
        m.response_sent(Some(Method::Register), 100);
        m.response_sent(Some(Method::Invite), 480);
        let mut s = String::new();
        m.render(&mut s);
        assert!(s.contains("sipwake_registrations_total{result=\"ok\"} 1\n"));
        assert!(s.contains("sipwake_registrations_total{result=\"too_brief\"} 1\n"));
        assert!(s.contains("sipwake_sip_responses_sent_total{class=\"4xx\"} 2\n"));
        assert!(s.contains("sipwake_sip_responses_sent_total{class=\"1xx\"} 1\n"));
    }
}
