//! One Redis or a Redis Cluster, named by one URL, behind one connection type: what the rate
//! limiter and the panel's event fan-out share.
//!
//! - `redis://host:port/` (or `rediss://`, `unix://`): one server, through a
//!   [`redis::aio::ConnectionManager`] (it reconnects by itself).
//! - `redis-cluster://[user:password@]host:port[,host:port…][/]`: a Redis Cluster, through
//!   [`redis::cluster_async::ClusterConnection`] (it learns the slot map from any listed node,
//!   follows `MOVED`/`ASK` and failovers, and reconnects by itself). The listed nodes are only
//!   where it starts; any reachable one is enough.
//!
//! A cluster refuses a script or a transaction whose keys lie in different hash slots, and the
//! cluster client refuses such a pipeline (`CROSSSLOT`): callers put a hash tag in the keys one
//! call touches together (see [`hash_tag`]). Classic pub/sub is broadcast over the cluster bus,
//! so one subscriber connection to any node hears what is published on every node:
//! [`Target::pubsub_clients`] names each listed node, to subscribe on one and move on to the
//! next when it goes.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::Error;

/// The URL scheme of a Redis Cluster.
pub const CLUSTER_SCHEME: &str = "redis-cluster://";
/// The most nodes a cluster URL may list.
const MAX_NODES: usize = 64;

/// Where Redis is: parsed from the URL, not yet connected.
#[derive(Clone)]
pub enum Target {
    /// One server.
    Single(redis::Client),
    /// A cluster, with a client for each listed node (for pub/sub).
    Cluster {
        /// The slot-aware client.
        client: ClusterClient,
        /// One client per listed node.
        nodes: Vec<redis::Client>,
    },
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it may carry a password.
        match self {
            Target::Single(_) => f.write_str("Target::Single"),
            Target::Cluster { nodes, .. } => write!(f, "Target::Cluster({} nodes)", nodes.len()),
        }
    }
}

/// Timeouts of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// To connect to a server.
    pub connect: Duration,
    /// For one answer.
    pub response: Duration,
}

impl Target {
    /// Parses `url`: `redis-cluster://…` is a cluster, anything else one server. The error
    /// names what is wrong but never repeats the URL (it may hold a password).
    pub fn parse(url: &str) -> Result<Target, Error> {
        let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) else {
            return redis::Client::open(url)
                .map(Target::Single)
                .map_err(|e| Error::RedisUrl(format!("not a Redis URL: {}", e.category())));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (credentials, hosts) = match rest.rsplit_once('@') {
            Some((credentials, hosts)) => (format!("{credentials}@"), hosts),
            None => (String::new(), rest),
        };
        let nodes: Vec<&str> = hosts.split(',').map(str::trim).collect();
        if nodes
            .iter()
            .any(|node| node.is_empty() || node.contains('/'))
        {
            return Err(Error::RedisUrl(format!(
                "a cluster URL is {CLUSTER_SCHEME}[user:password@]host:port[,host:port…]"
            )));
        }
        if nodes.len() > MAX_NODES {
            return Err(Error::RedisUrl(format!(
                "a cluster URL lists at most {MAX_NODES} nodes"
            )));
        }
        let urls: Vec<String> = nodes
            .iter()
            .map(|node| format!("redis://{credentials}{node}/"))
            .collect();
        let clients = urls
            .iter()
            .map(|url| redis::Client::open(url.as_str()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::RedisUrl(format!("not a cluster node: {}", e.category())))?;
        let client = ClusterClientBuilder::new(urls)
            .build()
            .map_err(|e| Error::RedisUrl(format!("not a cluster URL: {}", e.category())))?;
        Ok(Target::Cluster {
            client,
            nodes: clients,
        })
    }

    /// Whether this is a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Target::Cluster { .. })
    }

    /// Connects (for a cluster: reads its slot map from a listed node); `None`: the client's
    /// default timeouts.
    pub async fn connect(&self, timeouts: Option<Timeouts>) -> Result<Conn, Error> {
        match self {
            Target::Single(client) => {
                let made = match timeouts {
                    Some(timeouts) => {
                        let config = ConnectionManagerConfig::new()
                            .set_connection_timeout(timeouts.connect)
                            .set_response_timeout(timeouts.response)
                            .set_number_of_retries(1);
                        ConnectionManager::new_with_config(client.clone(), config).await
                    }
                    None => ConnectionManager::new(client.clone()).await,
                };
                made.map(Conn::Single)
                    .map_err(|e| Error::Limiter(e.to_string()))
            }
            Target::Cluster { client, .. } => {
                let mut config = redis::cluster::ClusterConfig::new();
                if let Some(timeouts) = timeouts {
                    config = config
                        .set_connection_timeout(timeouts.connect)
                        .set_response_timeout(timeouts.response);
                }
                client
                    .get_async_connection_with_config(config)
                    .await
                    .map(Conn::Cluster)
                    .map_err(|e| Error::Limiter(e.to_string()))
            }
        }
    }

    /// Where to subscribe: the server, or each listed node of the cluster (any one hears
    /// every publication).
    pub fn pubsub_clients(&self) -> Vec<redis::Client> {
        match self {
            Target::Single(client) => vec![client.clone()],
            Target::Cluster { nodes, .. } => nodes.clone(),
        }
    }
}

/// A connection to one server or to a cluster; cheap to clone (clones share it).
#[derive(Clone)]
pub enum Conn {
    /// One server.
    Single(ConnectionManager),
    /// A cluster.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// `{text}`, with `%`, `{` and `}` in `text` percent-encoded: a hash tag that is the whole of
/// `text`. Redis hashes only what lies between a key's first `{` and the next `}`, so without
/// the encoding a `}` in a client's input (an e-mail address may hold one) would end the tag
/// early and let the input choose the slot.
pub fn hash_tag(text: &str) -> String {
    let mut tagged = String::with_capacity(text.len() + 2);
    tagged.push('{');
    for c in text.chars() {
        match c {
            '%' => tagged.push_str("%25"),
            '{' => tagged.push_str("%7B"),
            '}' => tagged.push_str("%7D"),
            c => tagged.push(c),
        }
    }
    tagged.push('}');
    tagged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_one_server_or_a_cluster() {
        assert!(
            !Target::parse("redis://127.0.0.1:6379/")
                .unwrap()
                .is_cluster()
        );
        let cluster =
            Target::parse("redis-cluster://:secret@127.0.0.1:7001,127.0.0.1:7002/").unwrap();
        assert!(cluster.is_cluster());
        assert_eq!(cluster.pubsub_clients().len(), 2);
        let info = cluster.pubsub_clients()[1].get_connection_info().clone();
        assert_eq!(info.addr.to_string(), "127.0.0.1:7002");
        assert_eq!(info.redis.password.as_deref(), Some("secret"));
        for bad in [
            "redis-cluster://",
            "redis-cluster://a:1,,b:2",
            "redis-cluster://a:1/0",
            "http://x",
        ] {
            let error = Target::parse(bad).unwrap_err().to_string();
            assert!(!error.contains("secret"), "{error}");
        }
        let error = Target::parse("redis-cluster://u:secret@a:1,/x").unwrap_err();
        assert!(!error.to_string().contains("secret"));
    }

    #[test]
    fn a_tag_is_the_whole_text() {
        assert_eq!(hash_tag("login:10.0.0.1"), "{login:10.0.0.1}");
        assert_eq!(hash_tag("a}b{c%"), "{a%7Db%7Bc%25}");
        assert_ne!(hash_tag("a}"), hash_tag("a%7D"));
    }
}
