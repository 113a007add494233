//! SIGHUP: read the same settings file and environment again and apply what can
//! change while calls run — the push providers' credentials and endpoints, the log
//! filter, and the TLS listeners' certificate (read again even when its path did not
//! change, since renewals replace the file). Every other changed key is reported as needing a restart. A file that
//! does not load or validate, or push credentials that cannot be read, change nothing:
//! the error is logged with the key it is about and the running settings stay.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use tracing::{error, info, warn};

use crate::config::{self, PushSettings, RawSettings};
use crate::proxy::Core;
use crate::push::Pusher;

/// Sets the log filter (directives as in `log.level`); an error says why not.
pub type LogFilterFn = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Keys applied by a reload (exact keys, or prefixes ending in `.`).
const LIVE_KEYS: &[&str] = &[
    "log.level",
    "push.apns.key_file",
    "push.apns.key_id",
    "push.apns.team_id",
    "push.apns.cert_file",
    "push.apns.production_url",
    "push.apns.sandbox_url",
    "push.apns.ca_file",
    "push.apns.payload_template",
    "push.fcm.",
    "push.webhook.",
    "tls.cert_file",
    "tls.key_file",
];

fn is_live(key: &str) -> bool {
    LIVE_KEYS
        .iter()
        .any(|k| key == *k || (k.ends_with('.') && key.starts_with(k)))
}

/// What one reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Changed keys now in effect.
    pub applied: Vec<String>,
    /// Changed keys that only a restart applies.
    pub need_restart: Vec<String>,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file or the environment does not load or validate.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The new push credentials cannot be used.
    #[error("push: {0}")]
    Push(#[from] crate::push::PushError),
    /// The TLS certificate or key cannot be used (the message names the key).
    #[error("{0}")]
    Tls(#[from] crate::transport::tls::TlsError),
}

/// Re-reads the settings on SIGHUP; remembers what is in effect.
pub struct Reloader {
    config: Option<PathBuf>,
    /// The settings in effect, as raw values (keys changed on disk that need a
    /// restart keep their old values here, so each reload reports them again).
    running: RawSettings,
    set_log_filter: Option<LogFilterFn>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Reloader {
    /// A reloader for settings loaded from `config` (None: built-in defaults plus
    /// environment) that are `running` now.
    pub fn new(
        config: Option<PathBuf>,
        running: RawSettings,
        set_log_filter: Option<LogFilterFn>,
    ) -> Reloader {
        Reloader {
            config,
            running,
            set_log_filter,
        }
    }

    /// Reloads and logs the outcome: info for what was applied, warn for what needs a
    /// restart, error (naming the key) when nothing could be applied.
    pub fn reload_and_log(&mut self, core: &Core) {
        match self.reload(core) {
            Ok(r) if r.applied.is_empty() && r.need_restart.is_empty() => {
                info!("reload: no setting changed");
            }
            Ok(r) => {
                if !r.applied.is_empty() {
                    info!(keys = %r.applied.join(", "), "reload: settings applied");
                }
                if !r.need_restart.is_empty() {
                    warn!(keys = %r.need_restart.join(", "), "reload: changed settings need a restart; they keep their old values until then");
                }
            }
            Err(e) => error!(error = %e, "reload failed; the running settings stay"),
        }
    }

    /// Reads the settings again and applies the keys that can change at run time.
    pub fn reload(&mut self, core: &Core) -> Result<ReloadReport, ReloadError> {
        let raw = config::load_raw_settings(self.config.as_deref())?;
        let new = raw.clone().validate()?;
        let old = to_value(&self.running);
        let fresh = to_value(&raw);
        let mut changed = Vec::new();
        diff("", &old, &fresh, &mut changed);
        // a TLS listener runs: its certificate is read first, so a bad one changes nothing
        let tls_cert = core.transport.tls_cert();
        let tls_key = match (tls_cert, &new.tls.cert_file, &new.tls.key_file) {
            (Some(_), Some(cert), Some(key)) => {
                Some(crate::transport::tls::load_certified_key(cert, key)?)
            }
            _ => None,
        };
        let (applied, need_restart): (Vec<String>, Vec<String>) = changed
            .into_iter()
            .partition(|k| is_live(k) && (tls_cert.is_some() || !k.starts_with("tls.")));
        if applied.iter().any(|k| k.starts_with("push.")) {
            // built before anything changes, so bad credentials change nothing
            let pusher = Arc::new(Pusher::new(&push_for_reload(
                &core.settings.push,
                &new.push,
            ))?);
            tokio::spawn(pusher.warm_up());
            core.set_pusher(pusher);
        }
        let mut report = ReloadReport {
            applied: Vec::new(),
            need_restart,
        };
        if let (Some(cert), Some(key)) = (tls_cert, tls_key) {
            core.names
                .set_cert_names(crate::transport::tls::dns_names_of(&key));
            let renewed = cert.replace(key);
            if renewed && !applied.iter().any(|k| k.starts_with("tls.")) {
                // same paths, new files: say so, though no key changed
                info!("reload: new TLS certificate from tls.cert_file");
            }
        }
        for key in applied {
            if key == "log.level" {
                match &self.set_log_filter {
                    Some(set) => {
                        if let Err(why) = set(&raw.log.level) {
                            warn!(key = "log.level", "reload: log filter not changed: {why}");
                            continue;
                        }
                    }
                    None => {
                        report.need_restart.push(key);
                        continue;
                    }
                }
            }
            report.applied.push(key);
        }
        // what is in effect now: the new values of the applied keys, the old ones of
        // the rest
        let mut running = old;
        for key in &report.applied {
            if let Some(v) = get(&fresh, key) {
                set(&mut running, key, v.clone());
            }
        }
        if let Ok(r) = serde_json::from_value(running) {
            self.running = r;
        }
        Ok(report)
    }
}

/// The push settings the new providers are built from: credentials and endpoints
/// from `new`; what token parsing reads at REGISTER time (`bundle_id`, `sandbox`)
/// stays as running, so providers and bindings agree until a restart.
fn push_for_reload(running: &PushSettings, new: &PushSettings) -> PushSettings {
    let mut p = running.clone();
    p.fcm = new.fcm.clone();
    p.webhook = new.webhook.clone();
    p.apns = match (&running.apns, &new.apns) {
        (Some(old), Some(n)) => {
            let mut a = n.clone();
            a.bundle_id = old.bundle_id.clone();
            a.sandbox = old.sandbox;
            Some(a)
        }
        (_, n) => n.clone(),
    };
    p
}

fn to_value(raw: &RawSettings) -> Value {
    // plain strings, numbers, bools and lists: serializing cannot fail
    serde_json::to_value(raw).unwrap_or(Value::Null)
}

/// Dotted keys whose values differ between `a` and `b`.
fn diff(prefix: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                diff(&key, va, y.get(k).unwrap_or(&Value::Null), out);
            }
            for (k, _) in y.iter().filter(|(k, _)| !x.contains_key(*k)) {
                out.push(if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                });
            }
        }
        _ if a != b => out.push(prefix.to_owned()),
        _ => {}
    }
}

fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    key.split('.').try_fold(v, |v, k| v.get(k))
}

fn set(v: &mut Value, key: &str, value: Value) {
    let mut cur = v;
    for k in key.split('.') {
        match cur.get_mut(k) {
            Some(next) => cur = next,
            None => return,
        }
    }
    *cur = value;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_names_changed_keys() {
        let a = RawSettings::default();
        let mut b = a.clone();
        b.log.level = "debug".into();
        b.push.webhook.url = "http://127.0.0.1:1/x".into();
        b.sip.listen = vec!["127.0.0.1:5070".parse().unwrap()];
        let mut out = Vec::new();
        diff("", &to_value(&a), &to_value(&b), &mut out);
        out.sort();
        assert_eq!(out, ["log.level", "push.webhook.url", "sip.listen"]);
    }

    #[test]
    fn live_keys() {
        assert!(is_live("log.level"));
        assert!(is_live("push.webhook.url"));
        assert!(is_live("push.fcm.service_account_file"));
        assert!(is_live("push.apns.key_file"));
        assert!(!is_live("push.apns.bundle_id"));
        assert!(!is_live("push.wake_timeout_ms"));
        assert!(!is_live("log.format"));
        assert!(!is_live("sip.listen"));
        assert!(!is_live("server.drain_timeout_secs"));
    }

    #[test]
    fn set_and_get_by_key() {
        let mut v = to_value(&RawSettings::default());
        set(&mut v, "push.webhook.url", Value::String("u".into()));
        assert_eq!(
            get(&v, "push.webhook.url"),
            Some(&Value::String("u".into()))
        );
        let raw: RawSettings = serde_json::from_value(v).unwrap();
        assert_eq!(raw.push.webhook.url, "u");
    }

    #[test]
    fn bundle_and_sandbox_stay_until_restart() {
        let old = crate::config::from_toml_str(
            "[push.apns]\ncert_file = \"a.pem\"\nbundle_id = \"com.a\"\nsandbox = true",
        )
        .unwrap();
        let new = crate::config::from_toml_str(
            "[push.apns]\ncert_file = \"b.pem\"\nbundle_id = \"com.b\"\nsandbox = false",
        )
        .unwrap();
        let p = push_for_reload(&old.push, &new.push);
        let apns = p.apns.unwrap();
        assert_eq!(
            apns.cert_file.as_deref(),
            Some(std::path::Path::new("b.pem"))
        );
        assert_eq!(apns.bundle_id.as_deref(), Some("com.a"));
        assert!(apns.sandbox);
    }
}
