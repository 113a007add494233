//! The `messages` table: MESSAGEs kept for sleeping phones
//! ([`crate::registrar::MessageQueue`]), next to the bindings in the same file and
//! written in the same group commits.

use rusqlite::{params, Connection};

use crate::registrar::messages::StoredMessage;
use crate::registrar::store::StoreError;

/// Created with the bindings' schema (no version change: older files just lack it).
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    id             TEXT    PRIMARY KEY NOT NULL,
    aor            TEXT    NOT NULL,
    seq            INTEGER NOT NULL,
    from_hdr       TEXT    NOT NULL,
    to_hdr         TEXT    NOT NULL,
    call_id        TEXT    NOT NULL,
    cseq           INTEGER NOT NULL,
    content_type   TEXT,
    body           BLOB    NOT NULL,
    received_at_ms INTEGER NOT NULL,
    expires_at_ms  INTEGER NOT NULL
) WITHOUT ROWID;
";

const PUT: &str = "INSERT OR REPLACE INTO messages
    (id, aor, seq, from_hdr, to_hdr, call_id, cseq, content_type, body, received_at_ms,
     expires_at_ms)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
const DELETE: &str = "DELETE FROM messages WHERE id = ?1";
const LOAD: &str = "SELECT id, aor, seq, from_hdr, to_hdr, call_id, cseq,
    content_type, body, received_at_ms, expires_at_ms FROM messages ORDER BY seq";

/// Unix ms and sequence numbers as SQLite integers.
fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Inserts or replaces `m`.
pub(super) fn put(tx: &Connection, m: &StoredMessage) -> Result<(), StoreError> {
    tx.prepare_cached(PUT)?.execute(params![
        m.id,
        m.aor,
        int(m.seq),
        m.from,
        m.to,
        m.call_id,
        m.cseq,
        m.content_type,
        m.body,
        int(m.received_at_ms),
        int(m.expires_at_ms),
    ])?;
    Ok(())
}

/// Deletes the message `id`, if present.
pub(super) fn delete(tx: &Connection, id: &str) -> Result<(), StoreError> {
    tx.prepare_cached(DELETE)?.execute(params![id])?;
    Ok(())
}

/// Every kept message, in arrival order.
pub(super) fn load(conn: &Connection) -> Result<Vec<StoredMessage>, StoreError> {
    let mut stmt = conn.prepare_cached(LOAD)?;
    let rows = stmt.query_map([], |r| {
        let n = |i: usize| r.get::<_, i64>(i).map(|v| u64::try_from(v).unwrap_or(0));
        Ok(StoredMessage {
            id: r.get(0)?,
            aor: r.get(1)?,
            seq: n(2)?,
            from: r.get(3)?,
            to: r.get(4)?,
            call_id: r.get(5)?,
            cseq: r.get(6)?,
            content_type: r.get(7)?,
            body: r.get(8)?,
            received_at_ms: n(9)?,
            expires_at_ms: n(10)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}
