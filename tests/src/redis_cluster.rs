//! A private Redis Cluster on loopback for tests: three `redis-server --cluster-enabled yes`
//! masters in a temporary directory, joined with `redis-cli --cluster create`. Every wait is
//! bounded; the servers are killed when it is dropped (a failed test included).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::RedisServer;

/// How long the cluster may take to form.
const FORM_CAP: Duration = Duration::from_secs(30);

/// A running three-master cluster.
pub struct RedisCluster {
    servers: Vec<Child>,
    /// The masters' ports on 127.0.0.1.
    pub ports: Vec<u16>,
    dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts three masters, creates the cluster and waits until every node says
    /// `cluster_state:ok`.
    pub async fn start() -> RedisCluster {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut cluster = RedisCluster {
            servers: Vec::new(),
            ports: Vec::new(),
            dir,
        };
        for _ in 0..3 {
            let port = bus_free_port();
            let child = Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                .args(["--save", "", "--appendonly", "no"])
                .args(["--logfile", &format!("redis-{port}.log")])
                .current_dir(cluster.dir.path())
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server (scripts/test.sh installs it)");
            cluster.servers.push(child);
            cluster.ports.push(port);
        }
        for &port in &cluster.ports {
            crate::eventually("a cluster node listening", FORM_CAP, || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            })
            .await;
        }
        let mut create = tokio::process::Command::new("redis-cli");
        create
            .arg("--cluster")
            .arg("create")
            .args(cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .arg("--cluster-yes")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let created = tokio::time::timeout(FORM_CAP, create.output())
            .await
            .expect("redis-cli --cluster create within 30 s")
            .expect("redis-cli (package redis-tools, installed with redis-server)");
        assert!(
            created.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&created.stdout),
            String::from_utf8_lossy(&created.stderr)
        );
        for port in cluster.ports.clone() {
            crate::eventually("the cluster formed", FORM_CAP, || async move {
                let info: Result<String, _> = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async(&mut node(port).await)
                    .await;
                info.is_ok_and(|info| info.contains("cluster_state:ok"))
            })
            .await;
        }
        cluster
    }

    /// `redis-cluster://127.0.0.1:<p1>,127.0.0.1:<p2>,127.0.0.1:<p3>/`, as `REDIS_URL`.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis-cluster://{}/", nodes.join(","))
    }

    /// The keys matching `pattern` on each master, in the order of [`RedisCluster::ports`].
    pub async fn keys_per_node(&self, pattern: &str) -> Vec<Vec<String>> {
        let mut per_node = Vec::new();
        for &port in &self.ports {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(pattern)
                .query_async(&mut node(port).await)
                .await
                .expect("KEYS on a cluster node");
            per_node.push(keys);
        }
        per_node
    }

    /// The hash slot of `key` (`CLUSTER KEYSLOT`).
    pub async fn keyslot(&self, key: &str) -> u16 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut node(self.ports[0]).await)
            .await
            .expect("CLUSTER KEYSLOT")
    }

    /// What the nodes logged, for a failure message.
    pub fn logs(&self) -> String {
        self.ports
            .iter()
            .map(|p| std::fs::read_to_string(self.dir.path().join(format!("redis-{p}.log"))))
            .filter_map(Result::ok)
            .collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in &mut self.servers {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A plain connection to the node on `port`.
async fn node(port: u16) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .expect("a node URL")
        .get_multiplexed_async_connection()
        .await
        .expect("a connection to a cluster node")
}

/// A free loopback port whose cluster-bus port (the port + 10000) is free too.
fn bus_free_port() -> u16 {
    for _ in 0..200 {
        let port = RedisServer::free_port();
        if port < 55_535 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
    panic!("no free port with a free cluster-bus port in 200 tries");
}
