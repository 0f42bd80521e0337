//! The key registry as the node offers it: central only (see `central/registry.rs`).

use crate::central::registry::KeyInfo;
use crate::error::Result;
use crate::security::access::AccessList;
use crate::security::join::{JoinToken, JoinTokenInfo};
use crate::security::keys::PublicKey;

impl crate::Node {
    /// Central only: every key in the registry (pending, approved, revoked), by node.
    pub fn keys(&self) -> Result<Vec<KeyInfo>> {
        self.inner.central()?.keys()
    }

    /// Central only: approves a node's key — the one given, or its only pending key — and
    /// sends every node a new trust bundle. A key approved for a node replaces (revokes) the
    /// one approved before. A key not registered yet (read from the node's `node.pub`) may be
    /// approved directly. Returns the new trust version.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo(central: steward::Node) -> steward::Result<()> {
    /// for k in central.keys()? {
    ///     println!("{} {:?} {}", k.node, k.state, k.key);
    /// }
    /// central.approve_key("ship1", None).await?;
    /// # Ok(()) }
    /// ```
    pub async fn approve_key(&self, node: &str, key: Option<PublicKey>) -> Result<u64> {
        self.inner.central()?.approve_key(node, key).await
    }

    /// Central only: revokes a node's key — the one given, or all its keys (approved and
    /// pending) — and sends every node a new trust bundle; from then on messages signed with it
    /// are refused. Returns the new trust version.
    pub async fn revoke_key(&self, node: &str, key: Option<PublicKey>) -> Result<u64> {
        self.inner.central()?.revoke_key(node, key).await
    }

    /// Central only: forgets every key waiting for approval (pending), for instance after a
    /// flood of registrations from unknown parties. Approved and revoked keys, access lists and
    /// the trust version stay as they are (pending keys are in no bundle). A real node whose key
    /// was forgotten registers again at its next start or within 5 minutes; its key can also be
    /// approved directly from its `node.pub`. Returns how many keys were forgotten.
    pub async fn purge_pending_keys(&self) -> Result<usize> {
        self.inner.central()?.purge_pending_keys().await
    }

    /// Central only: makes a join token, valid for `valid_for` (`None`: until revoked). A node
    /// started with it ([`crate::NodeBuilder::join`], `steward --join TOKEN`) pins central's key
    /// and has its key approved when it registers — unless its name has an approved key
    /// already. Central keeps only the public half of the token's join key.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo(central: steward::Node) -> steward::Result<()> {
    /// let token = central.join_token(Some(std::time::Duration::from_secs(3600))).await?;
    /// println!("steward --node ship1 --join {token}");
    /// # Ok(()) }
    /// ```
    pub async fn join_token(&self, valid_for: Option<std::time::Duration>) -> Result<JoinToken> {
        self.inner.central()?.join_token(valid_for).await
    }

    /// Central only: the join tokens that can still enrol nodes (expired ones are left out).
    pub fn join_tokens(&self) -> Result<Vec<JoinTokenInfo>> {
        self.inner.central()?.join_tokens()
    }

    /// Central only: revokes the join token with this id (as [`Node::join_tokens`] lists
    /// it); nodes already enrolled with it stay approved. Errors with `NotFound` for an
    /// unknown id.
    pub async fn revoke_join_token(&self, id: &str) -> Result<()> {
        self.inner.central()?.revoke_join_token(id).await
    }

    /// Central only: sets (or with `None` clears) the access list of `node`, sent in the next
    /// trust bundle; that node then uses it instead of its configured list. Returns the new
    /// trust version.
    pub async fn set_node_access(&self, node: &str, access: Option<AccessList>) -> Result<u64> {
        self.inner.central()?.set_node_access(node, access).await
    }
}
