//! The journal's record format: how one store write becomes a few hundred bytes
//! appended to a file, and back.
//!
//! A file is a 16-byte header (magic, format version, kind) followed by records. A
//! record is `len: u32 LE`, `crc32(payload): u32 LE`, then `payload`: a tag byte and
//! the fields, integers as LEB128 varints, strings and byte strings as a varint
//! length and the bytes, optional fields behind a 0/1 byte. The key of every record
//! (AOR and binding key, message id, meta key) comes first, so compaction can keep
//! the newest record per key without decoding the rest.

use crate::registrar::{Binding, BindingFields, StoredMessage};

/// First bytes of every journal file.
pub(super) const MAGIC: &[u8; 8] = b"SWJOURNL";
/// Format version written in every header; a file with a higher one is refused, so a
/// later format can migrate older files.
pub const FORMAT_VERSION: u32 = 1;
/// Header length: magic, version (u32 LE), kind byte, 3 reserved zero bytes.
pub(super) const HEADER_LEN: usize = 16;
/// Bytes before a record's payload (length and checksum).
pub(super) const RECORD_HEAD: usize = 8;
/// Largest payload accepted when reading (a MESSAGE body is bounded far below this);
/// a larger length can only be a torn or damaged record.
const MAX_PAYLOAD: usize = 16 << 20;

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// Appended records, one group commit after another.
    Log,
    /// The state at a point: one record per live key.
    Snapshot,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Log => b'L',
            Kind::Snapshot => b'S',
        }
    }
}

const PUT_BINDING: u8 = 1;
const DELETE_BINDING: u8 = 2;
const PUT_MESSAGE: u8 = 3;
const DELETE_MESSAGE: u8 = 4;
const PUT_META: u8 = 5;

/// The header of a new file of `kind`.
pub(super) fn header(kind: Kind) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12] = kind.byte();
    h
}

/// Why a header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BadHeader {
    /// Shorter than a header (a file cut right after creation).
    Short,
    /// Not a journal file, or of another kind.
    Foreign,
    /// Written by a newer format.
    Newer(u32),
}

/// Checks a file's header.
pub(super) fn check_header(bytes: &[u8], kind: Kind) -> Result<(), BadHeader> {
    let h = bytes.get(..HEADER_LEN).ok_or(BadHeader::Short)?;
    if &h[..8] != MAGIC || h[12] != kind.byte() {
        return Err(BadHeader::Foreign);
    }
    let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if version > FORMAT_VERSION {
        return Err(BadHeader::Newer(version));
    }
    Ok(())
}

/// Identity of a record: later records with the same key replace earlier ones.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Key {
    /// A binding, by AOR and binding key.
    Binding(String, String),
    /// A kept MESSAGE, by id.
    Message(String),
    /// A meta value, by name.
    Meta(String),
}

/// A record's key, and whether it removes the key (a delete) or sets it.
pub(super) fn key_of(payload: &[u8]) -> Option<(Key, bool)> {
    let (&tag, rest) = payload.split_first()?;
    let mut r = Reader(rest);
    Some(match tag {
        PUT_BINDING | DELETE_BINDING => (
            Key::Binding(r.string()?, r.string()?),
            tag == DELETE_BINDING,
        ),
        PUT_MESSAGE | DELETE_MESSAGE => (Key::Message(r.string()?), tag == DELETE_MESSAGE),
        PUT_META => (Key::Meta(r.string()?), false),
        _ => return None,
    })
}

/// Appends one framed record to `out`, its payload written by `fill`.
fn record(out: &mut Vec<u8>, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; RECORD_HEAD]);
    fill(out);
    let payload = &out[start + RECORD_HEAD..];
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let crc = crc32fast::hash(payload);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Frames an already encoded payload (compaction copies payloads as they are).
pub(super) fn frame(out: &mut Vec<u8>, payload: &[u8]) {
    record(out, |o| o.extend_from_slice(payload));
}

/// Appends the record of a binding write.
pub(super) fn put_binding(out: &mut Vec<u8>, b: &Binding) {
    record(out, |o| {
        o.push(PUT_BINDING);
        put_str(o, b.aor());
        put_str(o, b.key());
        put_str(o, b.contact());
        put_str(o, b.match_key());
        put_opt(o, b.q, |o, q| put_uint(o, u64::from(q)));
        put_uint(o, b.expires_at);
        put_str(o, b.call_id());
        put_uint(o, u64::from(b.cseq));
        put_opt(o, b.flow(), put_str);
        put_opt(o, b.instance(), put_str);
        put_opt(o, b.reg_id, |o, r| put_uint(o, u64::from(r)));
        put_opt(o, b.user_agent(), put_str);
        put_uint(o, b.path.len() as u64);
        for p in &b.path {
            put_str(o, p);
        }
        put_opt(o, b.push().as_deref(), put_str);
        put_uint(o, b.updated_at_ms);
        put_opt(o, b.node(), put_str);
    });
}

/// Appends the record of a binding removal.
pub(super) fn delete_binding(out: &mut Vec<u8>, aor: &str, key: &str) {
    record(out, |o| {
        o.push(DELETE_BINDING);
        put_str(o, aor);
        put_str(o, key);
    });
}

/// Appends the record of a kept MESSAGE.
pub(super) fn put_message(out: &mut Vec<u8>, m: &StoredMessage) {
    record(out, |o| {
        o.push(PUT_MESSAGE);
        put_str(o, &m.id);
        put_str(o, &m.aor);
        put_uint(o, m.seq);
        put_str(o, &m.from);
        put_str(o, &m.to);
        put_str(o, &m.call_id);
        put_uint(o, u64::from(m.cseq));
        put_opt(o, m.content_type.as_deref(), put_str);
        put_bytes(o, &m.body);
        put_uint(o, m.received_at_ms);
        put_uint(o, m.expires_at_ms);
    });
}

/// Appends the record of a MESSAGE removal.
pub(super) fn delete_message(out: &mut Vec<u8>, id: &str) {
    record(out, |o| {
        o.push(DELETE_MESSAGE);
        put_str(o, id);
    });
}

/// Appends the record of a meta value.
pub(super) fn put_meta(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    record(out, |o| {
        o.push(PUT_META);
        put_str(o, key);
        put_bytes(o, value);
    });
}

/// A decoded record that sets a key.
#[derive(Debug)]
pub(super) enum Value {
    /// A binding.
    Binding(Binding),
    /// A kept MESSAGE.
    Message(StoredMessage),
    /// A meta value.
    Meta(String, Vec<u8>),
}

/// Decodes a record that sets a key (`None` for a delete or a damaged payload).
pub(super) fn decode(payload: &[u8]) -> Option<Value> {
    let (&tag, rest) = payload.split_first()?;
    let mut r = Reader(rest);
    let v = match tag {
        PUT_BINDING => Value::Binding(Binding::new(BindingFields {
            aor: r.string()?,
            key: r.string()?,
            contact: r.string()?,
            match_key: r.string()?,
            q: r.opt(|r| r.uint().and_then(|v| u16::try_from(v).ok()))?,
            expires_at: r.uint()?,
            call_id: r.string()?,
            cseq: r.u32()?,
            flow: r.opt(Reader::string)?,
            instance: r.opt(Reader::string)?,
            reg_id: r.opt(Reader::u32)?,
            user_agent: r.opt(Reader::string)?,
            path: {
                let n = r.uint()?;
                let mut path = Vec::new();
                for _ in 0..n {
                    path.push(r.string()?);
                }
                path
            },
            push: r.opt(Reader::string)?,
            updated_at_ms: r.uint()?,
            node: r.opt(Reader::string)?,
        })),
        PUT_MESSAGE => Value::Message(StoredMessage {
            id: r.string()?,
            aor: r.string()?,
            seq: r.uint()?,
            from: r.string()?,
            to: r.string()?,
            call_id: r.string()?,
            cseq: r.u32()?,
            content_type: r.opt(Reader::string)?,
            body: r.bytes()?.to_vec(),
            received_at_ms: r.uint()?,
            expires_at_ms: r.uint()?,
        }),
        PUT_META => Value::Meta(r.string()?, r.bytes()?.to_vec()),
        _ => return None,
    };
    r.0.is_empty().then_some(v)
}

/// How a scan of a file's records ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tail {
    /// Every byte belonged to a whole record.
    Clean,
    /// A record was cut short or failed its checksum at this offset: the rest of the
    /// file is not used (the end of a write interrupted by a crash).
    Torn(usize),
}

/// Calls `each` with every whole, intact record's payload after the header, in order;
/// returns the offset just past the last good record and how the scan ended.
pub(super) fn scan(bytes: &[u8], mut each: impl FnMut(&[u8])) -> (usize, Tail) {
    let mut at = HEADER_LEN.min(bytes.len());
    loop {
        let rest = &bytes[at..];
        if rest.is_empty() {
            return (at, Tail::Clean);
        }
        let Some(head) = rest.get(..RECORD_HEAD) else {
            return (at, Tail::Torn(at));
        };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let payload = match rest.get(RECORD_HEAD..RECORD_HEAD + len) {
            Some(p) if len <= MAX_PAYLOAD && crc32fast::hash(p) == crc => p,
            _ => return (at, Tail::Torn(at)),
        };
        each(payload);
        at += RECORD_HEAD + len;
    }
}

fn put_uint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_uint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

fn put_opt<T>(out: &mut Vec<u8>, v: Option<T>, put: impl FnOnce(&mut Vec<u8>, T)) {
    match v {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            put(out, v);
        }
    }
}

/// Reads fields off the front of a payload; every method returns `None` on damage.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn uint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.0.split_first()?;
            self.0 = rest;
            v |= u64::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn u32(&mut self) -> Option<u32> {
        self.uint().and_then(|v| u32::try_from(v).ok())
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.uint()?).ok()?;
        let (b, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(b)
    }

    fn string(&mut self) -> Option<String> {
        std::str::from_utf8(self.bytes()?).ok().map(str::to_owned)
    }

    fn opt<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        let (&flag, rest) = self.0.split_first()?;
        self.0 = rest;
        match flag {
            0 => Some(None),
            1 => read(self).map(Some),
            _ => None,
        }
    }
}
