//! A store that keeps everything in memory: for tests and for deployments that accept
//! losing registrations on restart.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;

use super::messages::StoredMessage;
use super::store::{Done, Store, StoreError, StoreOp};
use super::Binding;

/// In-memory [`Store`]. Writes are "durable" as soon as `submit` returns.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    // Ordered so `load` returns a stable order, which keeps tests deterministic.
    bindings: BTreeMap<(String, String), Arc<Binding>>,
    meta: HashMap<String, Vec<u8>>,
    messages: HashMap<String, Arc<StoredMessage>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of bindings held (diagnostic).
    pub fn len(&self) -> usize {
        self.inner.lock().bindings.len()
    }

    /// Whether no binding is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Store for MemoryStore {
    fn load(&self) -> Result<Vec<Binding>, StoreError> {
        Ok(self
            .inner
            .lock()
            .bindings
            .values()
            .map(|b| Binding::clone(b))
            .collect())
    }

    fn load_messages(&self) -> Result<Vec<StoredMessage>, StoreError> {
        Ok(self
            .inner
            .lock()
            .messages
            .values()
            .map(|m| StoredMessage::clone(m))
            .collect())
    }

    fn submit_then(&self, ops: Vec<StoreOp>, done: Done) {
        let mut inner = self.inner.lock();
        for op in ops {
            match op {
                StoreOp::Put(b) => {
                    inner
                        .bindings
                        .insert((b.aor().to_owned(), b.key().to_owned()), b);
                }
                StoreOp::Delete { aor, key } => {
                    inner.bindings.remove(&(aor, key));
                }
                StoreOp::PutMessage(m) => {
                    inner.messages.insert(m.id.clone(), m);
                }
                StoreOp::DeleteMessage { id } => {
                    inner.messages.remove(&id);
                }
            }
        }
        drop(inner);
        done(Ok(()));
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.inner.lock().meta.get(key).cloned())
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.inner
            .lock()
            .meta
            .insert(key.to_owned(), value.to_vec());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registrar::BindingFields;

    fn binding(aor: &str, key: &str) -> Arc<Binding> {
        Arc::new(Binding::new(BindingFields {
            q: Some(500),
            expires_at: 10,
            path: vec!["<sip:p>".into()],
            updated_at_ms: 1,
            ..BindingFields::for_test(aor, key, "sip:x@h")
        }))
    }

    #[tokio::test]
    async fn put_delete_load() {
        let s = MemoryStore::new();
        s.submit(vec![
            StoreOp::Put(binding("a", "1")),
            StoreOp::Put(binding("a", "2")),
            StoreOp::Put(binding("b", "1")),
        ])
        .await
        .unwrap()
        .unwrap();
        s.submit(vec![StoreOp::Delete {
            aor: "a".into(),
            key: "1".into(),
        }])
        .await
        .unwrap()
        .unwrap();
        let loaded = s.load().unwrap();
        assert_eq!(
            loaded,
            vec![(*binding("a", "2")).clone(), (*binding("b", "1")).clone()]
        );
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn meta_roundtrip() {
        let s = MemoryStore::new();
        assert_eq!(s.get_meta("k").unwrap(), None);
        s.put_meta("k", b"v1").unwrap();
        s.put_meta("k", b"v2").unwrap();
        assert_eq!(s.get_meta("k").unwrap(), Some(b"v2".to_vec()));
    }
}
