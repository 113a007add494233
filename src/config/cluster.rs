//! `[cluster]`: this node among several sharing their bindings in Redis
//! (`store.backend = "redis"`): how the other nodes name and reach it.

use serde::{Deserialize, Serialize};

use super::{ConfigError, SipSettings, StoreBackend, StoreSettings};

/// `[cluster]` section. As written, empty values mean "derive it"; once validated
/// both are filled (or empty for a single node listening on a wildcard address).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// This node's SIP URI as the other nodes reach it (`sip:host:port`, optionally
    /// `;transport=tcp`); a request for a phone whose flow this node holds is sent
    /// here. Empty: `sip:<first sip.listen address>`.
    pub advertise_uri: String,
    /// This node's name in the shared store (bindings it owns, heartbeat,
    /// `/cluster`). Empty: host:port of `advertise_uri`.
    pub node_id: String,
}

impl ClusterSettings {
    pub(super) fn validate(
        self,
        sip: &SipSettings,
        store: &StoreSettings,
    ) -> Result<ClusterSettings, ConfigError> {
        let given = self.advertise_uri.trim();
        let advertise_uri = if given.is_empty() {
            match sip.listen.first() {
                Some(a) if !a.ip().is_unspecified() => format!("sip:{a}"),
                _ if store.backend == StoreBackend::Redis => {
                    return Err(ConfigError::invalid(
                        "cluster.advertise_uri",
                        "",
                        "with store.backend = \"redis\" the other nodes must know how to \
                         reach this one: set it (e.g. sip:10.0.0.11:5060) or listen on a \
                         specific address",
                    ))
                }
                _ => String::new(),
            }
        } else {
            given.to_owned()
        };
        let hostport = if advertise_uri.is_empty() {
            String::new()
        } else {
            match crate::sip::Uri::parse(&advertise_uri) {
                Ok(u) if u.user.is_none() && u.scheme != crate::sip::Scheme::Tel => {
                    format!("{}:{}", u.host, u.port_or_default())
                }
                _ => {
                    return Err(ConfigError::invalid(
                        "cluster.advertise_uri",
                        given,
                        "expected a SIP URI without user part, e.g. sip:10.0.0.11:5060",
                    ))
                }
            }
        };
        let id = self.node_id.trim();
        let node_id = if id.is_empty() {
            hostport
        } else {
            id.to_owned()
        };
        if node_id.contains(['{', '}', ' ', '*']) {
            return Err(ConfigError::invalid(
                "cluster.node_id",
                node_id,
                "must not contain braces, spaces or '*'",
            ));
        }
        Ok(ClusterSettings {
            advertise_uri,
            node_id,
        })
    }
}
