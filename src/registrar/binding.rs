//! The input and output of one REGISTER (the binding record itself is in `packed`).
//!
//! Parsing is not done here: the proxy fills [`RegisterRequest`] from the parsed
//! message (normalized AOR, canonical contact match keys, Contact parameters), so the
//! registrar only applies the RFC 3261 §10.3 rules to plain values.

use std::sync::Arc;

use super::packed::Binding;

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
