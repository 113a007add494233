//! Registrar operations for the admin API: listing bindings and removing an AOR.
//! Rare and operator-driven, so they may walk every AOR.

use std::sync::Arc;

use super::{unix_now_ms, Binding, BindingEvent, BindingEventKind, Registrar};
use super::{StoreError, StoreOp};

impl Registrar {
    /// [`Registrar::find_aors`] from wherever the truth is (Redis for several nodes:
    /// a `SCAN` over every AOR, fine for an operator's request).
    pub async fn matching_aors(&self, name: &str) -> Result<Vec<String>, StoreError> {
        let Some(shared) = self.shared() else {
            return Ok(self.find_aors(name));
        };
        let want = normalized(name);
        let bare = !name.contains('@');
        let mut out: Vec<String> = shared
            .aors()
            .await?
            .into_iter()
            .filter(|aor| matches_name(aor, &want, bare))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Several nodes: the live nodes with the bindings each owns, and how many
    /// bindings belong to nodes whose heartbeat lapsed. Walks every AOR (an
    /// operator's request). `Ok` with no nodes for a single node.
    pub async fn cluster_view(&self) -> Result<ClusterView, StoreError> {
        let Some(shared) = self.shared() else {
            return Ok(ClusterView::default());
        };
        let nodes = shared.nodes().await?;
        let mut owned = vec![0usize; nodes.len()];
        let mut orphans = 0;
        let now = unix_now_ms();
        for aor in shared.aors().await? {
            for b in self.find(&aor, now).await? {
                match nodes.iter().position(|n| b.node() == Some(n.id.as_str())) {
                    Some(i) => owned[i] += 1,
                    None => orphans += 1,
                }
            }
        }
        Ok(ClusterView {
            nodes: nodes.into_iter().zip(owned).collect(),
            orphans,
        })
    }

    /// [`Registrar::snapshot`] from wherever the truth is.
    pub async fn page(
        &self,
        aors: Option<&[String]>,
        offset: usize,
        limit: usize,
    ) -> Result<(usize, Vec<Arc<Binding>>), StoreError> {
        let Some(shared) = self.shared() else {
            return Ok(self.snapshot(aors, offset, limit));
        };
        let names = match aors {
            Some(a) => a.to_vec(),
            None => shared.aors().await?,
        };
        let now = unix_now_ms();
        let mut all = Vec::new();
        for aor in &names {
            all.extend(self.find(aor, now).await?);
        }
        let total = all.len();
        Ok((total, all.into_iter().skip(offset).take(limit).collect()))
    }

    /// AORs (sorted) matching `name`: the AOR itself when it has bindings (`user@host`,
    /// host case-insensitive), or, for a bare user name, every AOR with that user part.
    pub fn find_aors(&self, name: &str) -> Vec<String> {
        let want = normalized(name);
        let bare = !name.contains('@');
        let map = self.inner.bindings.lock();
        let mut out: Vec<String> = map
            .values()
            .filter_map(|list| list.first().map(|b| b.aor()))
            .filter(|aor| matches_name(aor, &want, bare))
            .map(str::to_owned)
            .collect();
        out.sort();
        out
    }

    /// Bindings still kept (live, or push bindings within their grace time), ordered
    /// by AOR then as [`Registrar::lookup`] orders them, restricted to `aors` when
    /// given; skips `offset` and returns at most `limit`, with the total count.
    pub fn snapshot(
        &self,
        aors: Option<&[String]>,
        offset: usize,
        limit: usize,
    ) -> (usize, Vec<Arc<Binding>>) {
        let now = unix_now_ms();
        let ttl = self.rules().ttl_secs;
        let mut lists: Vec<(String, Vec<Arc<Binding>>)> = {
            let map = self.inner.bindings.lock();
            match aors {
                Some(aors) => aors
                    .iter()
                    .filter_map(|a| map.get(a).map(|l| (a.clone(), l.to_vec())))
                    .collect(),
                None => map
                    .values()
                    .filter_map(|l| Some((l.first()?.aor().to_owned(), l.to_vec())))
                    .collect(),
            }
        };
        lists.sort_by(|a, b| a.0.cmp(&b.0));
        let all: Vec<Arc<Binding>> = lists
            .into_iter()
            .flat_map(|(_, l)| super::live_sorted(&l, now, ttl))
            .collect();
        let total = all.len();
        let page = all.into_iter().skip(offset).take(limit).collect();
        (total, page)
    }

    /// Removes every binding of `aor` (expired ones too) from memory and the store,
    /// announces them as `Removed`, and returns how many were kept (0: the AOR had
    /// none). Returns once the store commit is durable.
    pub async fn remove_aor(&self, aor: &str) -> Result<usize, StoreError> {
        let now = unix_now_ms();
        let ttl = self.rules().ttl_secs;
        if let Some(shared) = self.shared() {
            let removed = shared
                .update(aor, |state| {
                    let ops = state
                        .bindings
                        .iter()
                        .map(|b| StoreOp::Delete {
                            aor: b.aor().to_owned(),
                            key: b.key().to_owned(),
                        })
                        .collect();
                    (ops, 0, String::new(), state.bindings.clone())
                })
                .await?;
            return Ok(self.announce_removed(removed, now, ttl));
        }
        let (removed, commit) = {
            let mut map = self.inner.bindings.lock();
            let Some(list) = map.remove(aor) else {
                return Ok(0);
            };
            let ops = list
                .iter()
                .map(|b| StoreOp::Delete {
                    aor: b.aor().to_owned(),
                    key: b.key().to_owned(),
                })
                .collect();
            // submitted under the lock, like REGISTERs, so the store sees the same order
            (list.into_vec(), self.inner.store.submit(ops))
        };
        let result = commit.await.unwrap_or(Err(StoreError::Closed));
        let kept = self.announce_removed(removed, now, ttl);
        result.map(|()| kept)
    }

    /// Announces `removed` as `Removed` events; returns how many of them were kept at
    /// `now` (what [`Registrar::remove_aor`] reports).
    fn announce_removed(&self, removed: Vec<Arc<Binding>>, now: u64, ttl: u64) -> usize {
        let kept = removed.iter().filter(|b| b.is_kept(now, ttl)).count();
        self.publish(
            removed
                .into_iter()
                .map(|binding| BindingEvent::local(BindingEventKind::Removed, binding))
                .collect(),
        );
        kept
    }
}

/// The nodes of a cluster as [`Registrar::cluster_view`] sees them.
#[derive(Debug, Default)]
pub struct ClusterView {
    /// Each live node and the bindings it owns.
    pub nodes: Vec<(super::nodes::NodeInfo, usize)>,
    /// Bindings whose owner's heartbeat lapsed.
    pub orphans: usize,
}

/// `name` with its host part lowercased.
fn normalized(name: &str) -> String {
    match name.rsplit_once('@') {
        Some((user, host)) => format!("{user}@{}", host.to_ascii_lowercase()),
        None => name.to_string(),
    }
}

/// Whether `aor` is `want`, or (for a bare user name) has `want` as its user part.
fn matches_name(aor: &str, want: &str, bare: bool) -> bool {
    if bare {
        aor.rsplit_once('@').map_or(aor, |(u, _)| u) == want
    } else {
        aor == want
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RegistrarMode, RegistrarSettings};
    use crate::registrar::{ContactSpec, Contacts, MemoryStore, RegisterRequest, Store};

    fn request(aor: &str, host: u8) -> RegisterRequest {
        let uri = format!("sip:u@10.0.0.{host}:5060");
        RegisterRequest {
            aor: aor.into(),
            call_id: format!("c{host}"),
            cseq: 1,
            expires_header: Some(600),
            contacts: Contacts::List(vec![ContactSpec {
                match_key: uri.clone(),
                uri,
                ..Default::default()
            }]),
            now_ms: unix_now_ms(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn find_list_and_remove() {
        let store = Arc::new(MemoryStore::new());
        let settings = RegistrarSettings {
            mode: RegistrarMode::Local,
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_contacts: 10,
        };
        let reg = Registrar::new(settings, store.clone()).unwrap();
        for (aor, host) in [
            ("alice@a.example", 1),
            ("alice@b.example", 2),
            ("bob@a.example", 3),
        ] {
            reg.register(request(aor, host)).await.unwrap();
        }
        reg.register(request("alice@a.example", 4)).await.unwrap();
        assert_eq!(
            reg.find_aors("alice"),
            ["alice@a.example", "alice@b.example"]
        );
        assert_eq!(reg.find_aors("alice@A.example"), ["alice@a.example"]);
        assert!(reg.find_aors("carol").is_empty());

        let (total, page) = reg.snapshot(None, 1, 2);
        assert_eq!((total, page.len()), (4, 2));
        assert_eq!(page[0].aor(), "alice@a.example");
        assert_eq!(page[1].aor(), "alice@b.example");
        let only = reg.find_aors("bob");
        assert_eq!(reg.snapshot(Some(&only), 0, 10).0, 1);

        let mut events = reg.subscribe();
        assert_eq!(reg.remove_aor("alice@a.example").await.unwrap(), 2);
        assert_eq!(reg.remove_aor("alice@a.example").await.unwrap(), 0);
        assert!(reg.lookup("alice@a.example", unix_now_ms()).is_empty());
        assert_eq!(reg.count(), 2);
        assert_eq!(store.load().unwrap().len(), 2, "the store follows");
        let e = events.recv().await.unwrap();
        assert_eq!(e.kind, BindingEventKind::Removed);
    }
}
