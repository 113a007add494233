//! The binding record and the input/output of one REGISTER.
//!
//! Parsing is not done here: the proxy fills [`RegisterRequest`] from the parsed
//! message (normalized AOR, canonical contact match keys, Contact parameters), so the
//! registrar only applies the RFC 3261 §10.3 rules to plain values.

use std::sync::Arc;

/// Value used for a binding without a `q` parameter when ordering bindings.
///
/// RFC 3261 leaves the default unspecified; treating an absent `q` as the top value
/// matches what UAs expect (a plain registration is not demoted below explicit ones).
pub const DEFAULT_Q: u16 = 1000;

/// One registered contact of an address-of-record. Serialized (JSON) only by the
/// shared Redis store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Binding {
    /// Normalized AOR key, e.g. `alice@example.com` (computed by the caller).
    pub aor: String,
    /// Identity within the AOR: `i:<instance>`, `i:<instance>;reg-id=<n>`, or
    /// `u:<match_key>` when the contact carries no `+sip.instance`.
    pub key: String,
    /// Contact URI exactly as sent, without angle brackets.
    pub contact: String,
    /// Canonical form of the contact URI for RFC 3261 §19.1.4 comparison.
    pub match_key: String,
    /// q-value × 1000.
    pub q: Option<u16>,
    /// Expiry as unix time in seconds.
    pub expires_at: u64,
    /// Call-ID of the REGISTER that created or last refreshed this binding.
    pub call_id: String,
    /// CSeq number of that REGISTER.
    pub cseq: u32,
    /// Opaque flow descriptor (encoded by the transport module).
    pub flow: Option<String>,
    /// `+sip.instance` value, if given.
    pub instance: Option<String>,
    /// RFC 5626 `reg-id`; only kept when `instance` is present.
    pub reg_id: Option<u32>,
    /// User-Agent header of the REGISTER.
    pub user_agent: Option<String>,
    /// Path header values (RFC 3327), in order.
    pub path: Vec<String>,
    /// Opaque push information (JSON), stored and returned as is.
    pub push: Option<String>,
    /// Unix time in ms of the REGISTER that created or last refreshed this binding.
    pub updated_at_ms: u64,
    /// Several nodes: the node that holds the binding's flow (`cluster.node_id`);
    /// only it may send over that flow. `None` with a single node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

#[cfg(test)]
impl Binding {
    /// A binding for tests: `contact` (its own match key) for `aor` under `key`, from
    /// REGISTER `c`/1, that never expires; no flow, instance, path or push. Tests set
    /// what they look at with `Binding { field, ..Binding::for_test(…) }`.
    pub(crate) fn for_test(aor: &str, key: &str, contact: &str) -> Binding {
        Binding {
            aor: aor.into(),
            key: key.into(),
            contact: contact.into(),
            match_key: contact.into(),
            q: None,
            expires_at: u64::MAX,
            call_id: "c".into(),
            cseq: 1,
            flow: None,
            instance: None,
            reg_id: None,
            user_agent: None,
            path: Vec::new(),
            push: None,
            updated_at_ms: 0,
            node: None,
        }
    }
}

impl Binding {
    /// Whether the binding still counts at `now_ms` (unix ms).
    ///
    /// Every liveness decision of the registrar goes through here, so a later rule
    /// (e.g. keeping push-capable bindings past their expiry) changes one place.
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.expires_at.saturating_mul(1000) > now_ms
    }

    /// Whether the binding is still kept at `now_ms`: a binding with push info stays
    /// callable by push for `push_ttl_secs` after its SIP expiry, because a sleeping
    /// phone cannot refresh its registration.
    pub fn is_kept(&self, now_ms: u64, push_ttl_secs: u64) -> bool {
        let grace = if self.push.is_some() {
            push_ttl_secs
        } else {
            0
        };
        self.expires_at.saturating_add(grace).saturating_mul(1000) > now_ms
    }

    /// Whole seconds left until expiry at `now_ms`, for the `expires` parameter of
    /// the Contact in a 200 OK; 0 once expired.
    pub fn expires_in(&self, now_ms: u64) -> u32 {
        let left_ms = self.expires_at.saturating_mul(1000).saturating_sub(now_ms);
        u32::try_from(left_ms / 1000).unwrap_or(u32::MAX)
    }

    /// The q-value used for ordering ([`DEFAULT_Q`] when absent).
    pub fn effective_q(&self) -> u16 {
        self.q.unwrap_or(DEFAULT_Q)
    }
}

/// A REGISTER as the registrar needs it, filled by the proxy from the parsed message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegisterRequest {
    /// Normalized AOR key (from the To header).
    pub aor: String,
    /// Call-ID header.
    pub call_id: String,
    /// CSeq number.
    pub cseq: u32,
    /// Expires header value.
    pub expires_header: Option<u32>,
    /// The Contact header fields.
    pub contacts: Contacts,
    /// Flow the REGISTER arrived on (opaque, from the transport module).
    pub flow: Option<String>,
    /// User-Agent header.
    pub user_agent: Option<String>,
    /// Path header values, in order.
    pub path: Vec<String>,
    /// Current unix time in ms (injected so results are deterministic in tests).
    pub now_ms: u64,
    /// Several nodes: this node's id, recorded as the owner of the flow.
    pub node: Option<String>,
}

/// A change the proxy makes to a REGISTER in view of the AOR's bindings as they are
/// (e.g. a bare APNs token keeps the environment a push learnt for it). With a
/// shared store the registrar applies it to the bindings it reads from Redis for the
/// REGISTER anyway, so it costs no extra round trip; one node applies it itself
/// against memory before registering.
pub type ContactRule = Arc<dyn Fn(&mut RegisterRequest, &[Arc<Binding>]) + Send + Sync>;

/// The Contact header fields of a REGISTER.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Contacts {
    /// No Contact header: a query for the current bindings.
    #[default]
    Query,
    /// `Contact: *`: remove every binding of the AOR.
    Star,
    /// Ordinary contacts. A `*` among them (uri `"*"`) is rejected as invalid.
    List(Vec<ContactSpec>),
}

/// One Contact of a REGISTER.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContactSpec {
    /// Contact URI exactly as sent, without angle brackets.
    pub uri: String,
    /// Canonical form of `uri` for RFC 3261 §19.1.4 comparison.
    pub match_key: String,
    /// `expires` Contact parameter.
    pub expires: Option<u32>,
    /// `q` parameter × 1000.
    pub q: Option<u16>,
    /// `+sip.instance` parameter.
    pub instance: Option<String>,
    /// `reg-id` parameter (RFC 5626).
    pub reg_id: Option<u32>,
    /// Opaque push information (JSON).
    pub push: Option<String>,
    /// Device identity from the push token (e.g. `apns:<token>`), for phones that send
    /// no `+sip.instance`: a relaunched app registers from a new address with the same
    /// token, and must replace its binding rather than add one.
    pub token_key: Option<String>,
}

impl ContactSpec {
    /// The binding key this contact maps to within its AOR.
    ///
    /// With `+sip.instance` the device, not its current address, is the identity, so a
    /// device re-registering from a new address replaces its binding; with `reg-id` too,
    /// each (instance, reg-id) pair is a separate flow (RFC 5626 §6). A `reg-id`
    /// without an instance is ignored, as RFC 5626 requires.
    pub fn binding_key(&self) -> String {
        match (&self.instance, self.reg_id) {
            (Some(instance), Some(reg_id)) => format!("i:{instance};reg-id={reg_id}"),
            (Some(instance), None) => format!("i:{instance}"),
            (None, _) => match &self.token_key {
                Some(t) => format!("t:{t}"),
                None => format!("u:{}", self.match_key),
            },
        }
    }
}

/// What the registrar decided for one REGISTER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterOutcome {
    /// Accepted (or a query): every live binding of the AOR after the update, ordered
    /// as [`crate::registrar::Registrar::lookup`] orders them, for the 200's Contacts.
    Ok {
        /// The AOR's live bindings.
        bindings: Vec<Arc<Binding>>,
    },
    /// A requested expiry is below the minimum: answer 423 with this Min-Expires.
    IntervalTooBrief {
        /// Value for the Min-Expires header.
        min_expires: u32,
    },
    /// The request is malformed: answer 400 with this reason phrase.
    Invalid(&'static str),
    /// Same Call-ID with a CSeq not above the stored one (RFC 3261 §10.3 step 7):
    /// nothing was applied; answer 400 "CSeq out of order".
    OutOfOrder,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(expires_at: u64) -> Binding {
        Binding {
            expires_at,
            ..Binding::for_test("a@x", "u:k", "sip:a@1.2.3.4")
        }
    }

    #[test]
    fn liveness_boundary_is_exclusive() {
        let b = binding(100);
        assert!(b.is_live(99_999));
        assert!(!b.is_live(100_000));
        assert!(!b.is_live(100_001));
    }

    #[test]
    fn expires_in_rounds_down_and_saturates() {
        let b = binding(100);
        assert_eq!(b.expires_in(40_000), 60);
        assert_eq!(b.expires_in(40_001), 59);
        assert_eq!(b.expires_in(200_000), 0);
    }

    #[test]
    fn binding_keys() {
        let mut c = ContactSpec {
            match_key: "sip:a@h".into(),
            ..Default::default()
        };
        assert_eq!(c.binding_key(), "u:sip:a@h");
        c.reg_id = Some(1);
        assert_eq!(
            c.binding_key(),
            "u:sip:a@h",
            "reg-id without instance is ignored"
        );
        c.instance = Some("<urn:uuid:1>".into());
        assert_eq!(c.binding_key(), "i:<urn:uuid:1>;reg-id=1");
        c.reg_id = None;
        assert_eq!(c.binding_key(), "i:<urn:uuid:1>");
    }
}
