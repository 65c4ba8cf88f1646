//! [`NodeLink`]: how the panel's services reach a node, whatever holds its stream. The
//! services (servers, backups, renewals, the admin routes) see only this trait; the gRPC
//! edge, which owns the streams, sees the [`NodeRegistry`] behind it. A registry that spans
//! several panel replicas ([`super::fleet::Fleet`]: a node's stream held by another process,
//! woken through `NOTIFY`) implements the same trait and the callers do not change.

use futures::future::BoxFuture;
use proto::node::v1::PanelMessage;

use super::registry::{Kick, NodeRegistry};

/// Reaching connected nodes.
pub trait NodeLink: Send + Sync + 'static {
    /// Whether `node_id` has a live stream now.
    fn is_online(&self, node_id: &str) -> bool;

    /// How many nodes have a live stream.
    fn online_count(&self) -> usize;

    /// Delivers `message` down `node_id`'s live stream. False when the node has none or its
    /// stream did not take the message in time: the caller fails what it was doing.
    fn send<'a>(&'a self, node_id: &'a str, message: PanelMessage) -> BoxFuture<'a, bool>;

    /// Whether this process holds `node_id`'s live stream (others may, on other replicas).
    fn holds(&self, node_id: &str) -> bool;

    /// Delivers the command `command_id` (its row is written): down the node's stream when
    /// this process holds it, else by waking the process that does with `wake` (nothing
    /// is woken without it).
    fn deliver<'a>(
        &'a self,
        node_id: &'a str,
        command_id: &'a str,
        message: PanelMessage,
        wake: Option<String>,
    ) -> BoxFuture<'a, Delivery>;

    /// Drops every stream and connection of `node_id`, telling the node `reason`. Returns
    /// whether there was anything to drop.
    fn kick(&self, node_id: &str, reason: Kick) -> bool;
}

/// What became of a command handed to [`NodeLink::deliver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// It went down the node's stream, held here.
    Sent,
    /// The replica holding the node was woken to send it.
    Routed,
    /// Nobody could take it: the node has no stream, or its stream did not take it in time.
    Unreachable,
}

impl NodeLink for NodeRegistry {
    fn is_online(&self, node_id: &str) -> bool {
        NodeRegistry::is_online(self, node_id)
    }

    fn online_count(&self) -> usize {
        self.len()
    }

    fn send<'a>(&'a self, node_id: &'a str, message: PanelMessage) -> BoxFuture<'a, bool> {
        Box::pin(NodeRegistry::send(self, node_id, message))
    }

    fn holds(&self, node_id: &str) -> bool {
        NodeRegistry::is_online(self, node_id)
    }

    fn deliver<'a>(
        &'a self,
        node_id: &'a str,
        _command_id: &'a str,
        message: PanelMessage,
        _wake: Option<String>,
    ) -> BoxFuture<'a, Delivery> {
        Box::pin(async move {
            if NodeRegistry::send(self, node_id, message).await {
                Delivery::Sent
            } else {
                Delivery::Unreachable
            }
        })
    }

    fn kick(&self, node_id: &str, reason: Kick) -> bool {
        NodeRegistry::kick(self, node_id, reason)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    use super::*;

    #[tokio::test]
    async fn the_registry_reaches_a_node_through_the_trait() {
        let registry = Arc::new(NodeRegistry::default());
        let link: Arc<dyn NodeLink> = registry.clone();
        assert!(!link.is_online("n1"));
        assert!(!link.send("n1", PanelMessage::default()).await);
        let (tx, mut rx) = mpsc::channel(1);
        let connection = registry
            .connections
            .add("n1", "aa", CancellationToken::new());
        let session = registry.register("n1", "aa", &connection, tx);
        assert!(link.is_online("n1"));
        assert_eq!(link.online_count(), 1);
        assert!(link.send("n1", PanelMessage::default()).await);
        assert!(matches!(rx.recv().await, Some(Ok(_))));
        assert!(link.kick("n1", Kick::Disabled));
        assert_eq!(session.kick_reason(), Some(Kick::Disabled));
    }
}
