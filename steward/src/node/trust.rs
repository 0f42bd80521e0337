//! What a node tells about its own trust: its key, the trust version it applied, the access
//! list in force.

use crate::security::access::AccessList;
use crate::security::keys::PublicKey;

impl crate::Node {
    /// This node's public key (also in `node.pub` beside its private key).
    pub fn public_key(&self) -> PublicKey {
        self.inner.d.security.keys.public()
    }

    /// The version of the newest trust bundle this node applied (0: none).
    pub fn trust_version(&self) -> u64 {
        self.inner.d.security.state().version
    }

    /// The access list in force: central's for this node if it sent one, else the configured one.
    pub fn access_list(&self) -> AccessList {
        let st = self.inner.d.security.state();
        st.access
            .clone()
            .unwrap_or_else(|| self.inner.d.cfg.access.clone())
    }
}
