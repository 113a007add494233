//! The binding record, packed: one buffer holds every text field of a binding, and
//! nothing one field already holds is stored again (the match key of a `u:` key, the
//! instance of an `i:` key, the push token of a `t:` key). The registrar keeps one per
//! registered contact for as long as it lives, so its size is the registrar's memory
//! per binding (issue 13: under 1 KiB, with the map entry and the store's share).
//!
//! [`BindingFields`] is the same binding unpacked: what builds one, and the JSON the
//! shared Redis store keeps (unchanged, so nodes of different versions read each
//! other's bindings).

use std::borrow::Cow;

/// Value used for a binding without a `q` parameter when ordering bindings.
///
/// RFC 3261 leaves the default unspecified; treating an absent `q` as the top value
/// matches what UAs expect (a plain registration is not demoted below explicit ones).
pub const DEFAULT_Q: u16 = 1000;

/// The fields of a [`Binding`], unpacked: what builds one ([`Binding::new`]), what
/// [`Binding::fields`] gives back, and the JSON form the shared Redis store keeps
/// (unchanged by the packed layout, so nodes of different versions read each other).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BindingFields {
    /// Normalized AOR key, e.g. `alice@example.com` (computed by the caller).
    pub aor: String,
    /// Identity within the AOR: `i:<instance>`, `i:<instance>;reg-id=<n>`,
    /// `t:<provider>:<token>`, or `u:<match_key>`.
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

/// The fields of a [`Binding`], borrowed: what [`Binding::pack`] packs.
#[derive(Debug, Clone, Copy)]
pub struct BindingRef<'a> {
    /// See [`BindingFields::aor`].
    pub aor: &'a str,
    /// See [`BindingFields::key`].
    pub key: &'a str,
    /// See [`BindingFields::contact`].
    pub contact: &'a str,
    /// See [`BindingFields::match_key`].
    pub match_key: &'a str,
    /// See [`BindingFields::q`].
    pub q: Option<u16>,
    /// See [`BindingFields::expires_at`].
    pub expires_at: u64,
    /// See [`BindingFields::call_id`].
    pub call_id: &'a str,
    /// See [`BindingFields::cseq`].
    pub cseq: u32,
    /// See [`BindingFields::flow`].
    pub flow: Option<&'a str>,
    /// See [`BindingFields::instance`].
    pub instance: Option<&'a str>,
    /// See [`BindingFields::reg_id`].
    pub reg_id: Option<u32>,
    /// See [`BindingFields::user_agent`].
    pub user_agent: Option<&'a str>,
    /// See [`BindingFields::path`].
    pub path: &'a [String],
    /// See [`BindingFields::push`].
    pub push: Option<&'a str>,
    /// See [`BindingFields::updated_at_ms`].
    pub updated_at_ms: u64,
    /// See [`BindingFields::node`].
    pub node: Option<&'a str>,
}

impl BindingFields {
    /// The fields, borrowed.
    pub fn borrowed(&self) -> BindingRef<'_> {
        BindingRef {
            aor: &self.aor,
            key: &self.key,
            contact: &self.contact,
            match_key: &self.match_key,
            q: self.q,
            expires_at: self.expires_at,
            call_id: &self.call_id,
            cseq: self.cseq,
            flow: self.flow.as_deref(),
            instance: self.instance.as_deref(),
            reg_id: self.reg_id,
            user_agent: self.user_agent.as_deref(),
            path: &self.path,
            push: self.push.as_deref(),
            updated_at_ms: self.updated_at_ms,
            node: self.node.as_deref(),
        }
    }
}

/// The text fields of a [`Binding`], in the order they sit in its buffer.
#[derive(Clone, Copy)]
enum Seg {
    Aor,
    Key,
    Contact,
    MatchKey,
    CallId,
    Flow,
    Instance,
    UserAgent,
    Push,
    Node,
}

const SEGS: usize = 10;

// `flags`: which optional text fields are present, and which are not stored
// because they are read out of another one.
const HAS_FLOW: u16 = 1;
const HAS_INSTANCE: u16 = 1 << 1;
const HAS_USER_AGENT: u16 = 1 << 2;
const HAS_PUSH: u16 = 1 << 3;
const HAS_NODE: u16 = 1 << 4;
/// `match_key` is the key without its `u:`.
const MATCH_KEY_IN_KEY: u16 = 1 << 5;
/// `instance` is the key without its `i:` (and `;reg-id=<n>`).
const INSTANCE_IN_KEY: u16 = 1 << 6;
/// The push JSON's token is left out at `cut`; it is the token of the key.
const TOKEN_IN_KEY: u16 = 1 << 7;

/// One registered contact of an address-of-record.
///
/// Packed: every text field sits in one buffer (one allocation), and what one field
/// already holds is not stored again: the match key of a `u:` key, the instance of an
/// `i:` key, and the push token of a `t:` key (the push JSON is stored without it).
/// Text fields are read through accessors; numbers and the (usually empty) Path are
/// plain fields. Build one from [`BindingFields`]; [`Binding::fields`] unpacks it.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(from = "BindingFields", into = "BindingFields")]
pub struct Binding {
    /// Every text field, back to back, in [`Seg`] order.
    text: Box<str>,
    /// End of each segment in `text` (its start is the previous one's end).
    ends: [u32; SEGS],
    /// Where in the push JSON the key's token goes back in ([`TOKEN_IN_KEY`]).
    cut: u32,
    /// Presence and derivation bits (`HAS_*`, `*_IN_KEY`).
    flags: u16,
    /// q-value × 1000.
    pub q: Option<u16>,
    /// CSeq number of the REGISTER that created or last refreshed this binding.
    pub cseq: u32,
    /// RFC 5626 `reg-id`; only kept when the instance is present.
    pub reg_id: Option<u32>,
    /// Expiry as unix time in seconds.
    pub expires_at: u64,
    /// Unix time in ms of the REGISTER that created or last refreshed this binding.
    pub updated_at_ms: u64,
    /// Path header values (RFC 3327), in order; empty (and unallocated) without Path.
    pub path: Vec<String>,
}

impl From<BindingFields> for Binding {
    fn from(f: BindingFields) -> Self {
        Binding::new(f)
    }
}

impl From<Binding> for BindingFields {
    fn from(b: Binding) -> Self {
        b.fields()
    }
}

impl std::fmt::Debug for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.fields().fmt(f)
    }
}

/// The token of a `t:<provider>:<token>` key.
fn key_token(key: &str) -> Option<&str> {
    key.strip_prefix("t:")?.split_once(':').map(|(_, t)| t)
}

/// The instance an `i:` key was made of, given the binding's reg-id.
fn key_instance(key: &str, reg_id: Option<u32>) -> Option<&str> {
    let rest = key.strip_prefix("i:")?;
    match reg_id {
        None => Some(rest),
        Some(n) => {
            let (inst, id) = rest.rsplit_once(";reg-id=")?;
            // exactly as `binding_key` writes it: digits, no leading zero
            let canonical = (id == "0" || !id.starts_with('0'))
                && id.bytes().all(|c| c.is_ascii_digit())
                && id.parse::<u32>() == Ok(n);
            canonical.then_some(inst)
        }
    }
}

impl Binding {
    /// Packs `f` into one binding.
    pub fn new(f: BindingFields) -> Binding {
        let mut b = Binding::pack(&BindingRef {
            path: &[],
            ..f.borrowed()
        });
        b.path = f.path;
        b
    }

    /// Packs the fields `f` borrows into one binding (what a REGISTER builds one
    /// from, without a copy of each field first).
    pub fn pack(f: &BindingRef<'_>) -> Binding {
        let mut flags = 0;
        let match_key_in_key = f.key.strip_prefix("u:") == Some(f.match_key);
        if match_key_in_key {
            flags |= MATCH_KEY_IN_KEY;
        }
        let instance_in_key = f
            .instance
            .is_some_and(|i| key_instance(f.key, f.reg_id) == Some(i));
        if instance_in_key {
            flags |= INSTANCE_IN_KEY;
        }
        // the push JSON without the key's token, found as `"token":"<token>"`
        let token = key_token(f.key).filter(|t| !t.is_empty());
        let mut push_parts = (f.push.unwrap_or(""), "");
        let mut cut = 0;
        if let (Some(push), Some(token)) = (f.push, token) {
            const FIELD: &str = "\"token\":\"";
            let at = push
                .match_indices(FIELD)
                .map(|(i, _)| i + FIELD.len())
                .find(|&i| {
                    push[i..].starts_with(token) && push[i + token.len()..].starts_with('"')
                });
            if let Some(at) = at {
                flags |= TOKEN_IN_KEY;
                push_parts = (&push[..at], &push[at + token.len()..]);
                cut = u32::try_from(at).unwrap_or(u32::MAX);
            }
        }
        for (bit, present) in [
            (HAS_FLOW, f.flow.is_some()),
            (HAS_INSTANCE, f.instance.is_some()),
            (HAS_USER_AGENT, f.user_agent.is_some()),
            (HAS_PUSH, f.push.is_some()),
            (HAS_NODE, f.node.is_some()),
        ] {
            if present {
                flags |= bit;
            }
        }
        let parts: [(&str, &str); SEGS] = [
            (f.aor, ""),
            (f.key, ""),
            (f.contact, ""),
            (if match_key_in_key { "" } else { f.match_key }, ""),
            (f.call_id, ""),
            (f.flow.unwrap_or(""), ""),
            (
                if instance_in_key {
                    ""
                } else {
                    f.instance.unwrap_or("")
                },
                "",
            ),
            (f.user_agent.unwrap_or(""), ""),
            push_parts,
            (f.node.unwrap_or(""), ""),
        ];
        let len = parts.iter().map(|(a, b)| a.len() + b.len()).sum();
        let mut text = String::with_capacity(len);
        let mut ends = [0u32; SEGS];
        for (end, (a, b)) in ends.iter_mut().zip(parts) {
            text.push_str(a);
            text.push_str(b);
            // a SIP message is far below 4 GiB (sip.max_message_size ≤ 1 MiB)
            *end = u32::try_from(text.len()).unwrap_or(u32::MAX);
        }
        Binding {
            text: text.into_boxed_str(),
            ends,
            cut,
            flags,
            q: f.q,
            cseq: f.cseq,
            reg_id: f.reg_id,
            expires_at: f.expires_at,
            updated_at_ms: f.updated_at_ms,
            path: f.path.to_vec(),
        }
    }

    /// Unpacks every field.
    pub fn fields(&self) -> BindingFields {
        BindingFields {
            aor: self.aor().to_owned(),
            key: self.key().to_owned(),
            contact: self.contact().to_owned(),
            match_key: self.match_key().to_owned(),
            q: self.q,
            expires_at: self.expires_at,
            call_id: self.call_id().to_owned(),
            cseq: self.cseq,
            flow: self.flow().map(str::to_owned),
            instance: self.instance().map(str::to_owned),
            reg_id: self.reg_id,
            user_agent: self.user_agent().map(str::to_owned),
            path: self.path.clone(),
            push: self.push().map(|p| p.into_owned()),
            updated_at_ms: self.updated_at_ms,
            node: self.node().map(str::to_owned),
        }
    }

    /// This binding with other push info (e.g. a dead token removed).
    pub fn with_push(&self, push: Option<String>) -> Binding {
        Binding::new(BindingFields {
            push,
            ..self.fields()
        })
    }

    fn seg(&self, s: Seg) -> &str {
        let i = s as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] } as usize;
        self.text
            .get(start..self.ends[i] as usize)
            .unwrap_or_default()
    }

    fn has(&self, bit: u16) -> bool {
        self.flags & bit != 0
    }

    /// Normalized AOR key, e.g. `alice@example.com`.
    pub fn aor(&self) -> &str {
        self.seg(Seg::Aor)
    }

    /// Identity within the AOR: `i:<instance>`, `i:<instance>;reg-id=<n>`,
    /// `t:<provider>:<token>`, or `u:<match_key>` (see
    /// [`crate::registrar::ContactSpec::binding_key`]).
    pub fn key(&self) -> &str {
        self.seg(Seg::Key)
    }

    /// Contact URI exactly as sent, without angle brackets.
    pub fn contact(&self) -> &str {
        self.seg(Seg::Contact)
    }

    /// Canonical form of the contact URI for RFC 3261 §19.1.4 comparison.
    pub fn match_key(&self) -> &str {
        if self.has(MATCH_KEY_IN_KEY) {
            return self.key().get(2..).unwrap_or_default();
        }
        self.seg(Seg::MatchKey)
    }

    /// Call-ID of the REGISTER that created or last refreshed this binding.
    pub fn call_id(&self) -> &str {
        self.seg(Seg::CallId)
    }

    /// Opaque flow descriptor (encoded by the transport module).
    pub fn flow(&self) -> Option<&str> {
        self.has(HAS_FLOW).then(|| self.seg(Seg::Flow))
    }

    /// `+sip.instance` value, if given.
    pub fn instance(&self) -> Option<&str> {
        if !self.has(HAS_INSTANCE) {
            return None;
        }
        if self.has(INSTANCE_IN_KEY) {
            return key_instance(self.key(), self.reg_id);
        }
        Some(self.seg(Seg::Instance))
    }

    /// User-Agent header of the REGISTER.
    pub fn user_agent(&self) -> Option<&str> {
        self.has(HAS_USER_AGENT).then(|| self.seg(Seg::UserAgent))
    }

    /// Opaque push information (JSON), as stored. Borrowed unless its token had to
    /// be put back from the key.
    pub fn push(&self) -> Option<Cow<'_, str>> {
        if !self.has(HAS_PUSH) {
            return None;
        }
        let stored = self.seg(Seg::Push);
        if !self.has(TOKEN_IN_KEY) {
            return Some(stored.into());
        }
        let token = key_token(self.key()).unwrap_or_default();
        let (head, tail) = stored.split_at(stored.len().min(self.cut as usize));
        Some([head, token, tail].concat().into())
    }

    /// Whether the binding carries push info (cheaper than [`Binding::push`]).
    pub fn has_push(&self) -> bool {
        self.has(HAS_PUSH)
    }

    /// Several nodes: the node that holds the binding's flow (`cluster.node_id`);
    /// only it may send over that flow. `None` with a single node.
    pub fn node(&self) -> Option<&str> {
        self.has(HAS_NODE).then(|| self.seg(Seg::Node))
    }

    /// Whether `self` and `other` differ at most in what a pure refresh moves:
    /// expiry, Call-ID, CSeq and the time of the REGISTER.
    pub fn same_but_refresh(&self, other: &Binding) -> bool {
        const ALL_BUT_CALL_ID: [Seg; SEGS - 1] = [
            Seg::Aor,
            Seg::Key,
            Seg::Contact,
            Seg::MatchKey,
            Seg::Flow,
            Seg::Instance,
            Seg::UserAgent,
            Seg::Push,
            Seg::Node,
        ];
        // every field named, so a new one forces a decision here
        let Binding {
            text: _,
            ends: _,
            cut,
            flags,
            q,
            cseq: _,
            reg_id,
            expires_at: _,
            updated_at_ms: _,
            path,
        } = self;
        // the packing is a function of the fields: equal raw segments and bits are
        // equal fields
        *flags == other.flags
            && *cut == other.cut
            && *q == other.q
            && *reg_id == other.reg_id
            && *path == other.path
            && ALL_BUT_CALL_ID.iter().all(|&s| self.seg(s) == other.seg(s))
    }

    /// Bytes this binding holds on the heap beside its own struct (its text buffer
    /// and Path), for the memory figures.
    pub fn heap_bytes(&self) -> usize {
        self.text.len()
            + self.path.capacity() * std::mem::size_of::<String>()
            + self.path.iter().map(String::capacity).sum::<usize>()
    }
}

#[cfg(test)]
impl BindingFields {
    /// Fields for tests: `contact` (its own match key) for `aor` under `key`, from
    /// REGISTER `c`/1, that never expire; no flow, instance, path or push. Tests set
    /// what they look at with `BindingFields { field, ..BindingFields::for_test(…) }`.
    pub(crate) fn for_test(aor: &str, key: &str, contact: &str) -> BindingFields {
        BindingFields {
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

#[cfg(test)]
impl Binding {
    /// [`BindingFields::for_test`], packed.
    pub(crate) fn for_test(aor: &str, key: &str, contact: &str) -> Binding {
        Binding::new(BindingFields::for_test(aor, key, contact))
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
        let grace = if self.has_push() { push_ttl_secs } else { 0 };
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

#[cfg(test)]
#[path = "packed_tests.rs"]
mod tests;
