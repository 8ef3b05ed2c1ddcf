//! A real Redis Cluster of module-loaded servers: 3 primaries + 3 replicas on free loopback
//! ports, each with its own temp dir (`nodes.conf`, AOF, log), created with
//! `redis-cli --cluster create` and stopped (SIGKILL) on drop with the dirs.
//!
//! Every wait has a deadline; on failure the panic message carries `CLUSTER NODES` and the
//! logs of every node, never a hang. Failover is real: `kill_primary_of` SIGKILLs a primary and
//! `wait_failover` waits for its replica to be elected by the other primaries after
//! `NODE_TIMEOUT_MS` (with `CLUSTER FAILOVER FORCE` on the replica as a fallback if the
//! election is too slow).

use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use redis::cluster::{ClusterClient, ClusterConnection};
use redis::{Connection, Value};

use crate::process::run_bounded;
use crate::{free_port, text, Flavor, Server, ServerConfig};

/// `cluster-node-timeout`: how long a node may be unreachable before it is suspected failed.
/// Small so failover takes seconds, large enough that a busy 2-core CI box does not fail nodes
/// over by mistake.
pub const NODE_TIMEOUT_MS: u64 = 2000;

const PRIMARIES: usize = 3;
const REPLICAS_PER_PRIMARY: usize = 1;
const SLOT_COUNT: u32 = 16384;
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);

/// One line of `CLUSTER NODES`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeLine {
    pub id: String,
    pub port: u16,
    pub flags: Vec<String>,
    /// For a replica, the id of its primary.
    pub primary_id: Option<String>,
    /// Slot ranges served (primaries only), inclusive.
    pub slots: Vec<(u16, u16)>,
}

impl NodeLine {
    pub fn is_primary(&self) -> bool {
        self.flags.iter().any(|f| f == "master")
    }

    /// Marked `fail` (agreed) or `fail?` (suspected) by the node that answered.
    pub fn is_failed(&self) -> bool {
        self.flags.iter().any(|f| f == "fail" || f == "fail?")
    }

    pub fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
    }
}

/// Parses `CLUSTER NODES` (`<id> <ip:port@cport[,hostname]> <flags> <primary> <ping> <pong>
/// <epoch> <link> <slot>...`); slots being migrated (`[...]`) are ignored.
pub fn parse_cluster_nodes(reply: &str) -> Vec<NodeLine> {
    reply
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            assert!(f.len() >= 8, "bad CLUSTER NODES line: {line}");
            let addr = f[1].split(['@', ',']).next().unwrap_or_default();
            let port = addr
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("bad address in: {line}"));
            let slots = f[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .map(|s| match s.split_once('-') {
                    Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                    None => (s.parse().unwrap(), s.parse().unwrap()),
                })
                .collect();
            NodeLine {
                id: f[0].to_string(),
                port,
                flags: f[2].split(',').map(str::to_string).collect(),
                primary_id: (f[3] != "-").then(|| f[3].to_string()),
                slots,
            }
        })
        .collect()
}

/// A running cluster; every node is a [`Server`] (so its log is printed if a test panics).
pub struct Cluster {
    nodes: Vec<Server>,
}

impl Cluster {
    /// 3 primaries + 3 replicas of Redis 7.0, ready: every slot served, every node
    /// `cluster_state:ok`, every replica in sync.
    pub fn start() -> Cluster {
        Self::start_flavor(Flavor::Redis)
    }

    pub fn start_flavor(flavor: Flavor) -> Cluster {
        let started = Instant::now();
        let count = PRIMARIES * (1 + REPLICAS_PER_PRIMARY);
        let nodes: Vec<Server> = (0..count).map(|_| node_config(flavor).start()).collect();
        let cluster = Cluster { nodes };
        cluster.create();
        cluster.wait_ready();
        eprintln!(
            "cluster of {count} nodes ready in {:.1}s (ports {:?})",
            started.elapsed().as_secs_f64(),
            cluster.ports()
        );
        cluster
    }

    /// `redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes`, bounded in time.
    fn create(&self) {
        let mut cmd = Command::new("redis-cli");
        cmd.arg("--cluster").arg("create");
        for n in &self.nodes {
            cmd.arg(format!("127.0.0.1:{}", n.port));
        }
        cmd.args(["--cluster-replicas", &REPLICAS_PER_PRIMARY.to_string()])
            .arg("--cluster-yes");
        match run_bounded(cmd, READY_TIMEOUT) {
            Ok((status, _, _)) if status.success() => {}
            Ok((status, out, err)) => panic!(
                "redis-cli --cluster create failed ({status}):\n{out}{err}\n{}",
                self.report()
            ),
            Err(e) => panic!("redis-cli --cluster create: {e}\n{}", self.report()),
        }
    }

    /// Ports of every node, dead ones included, in start order.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// Ports of the nodes not killed.
    pub fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.is_started())
            .map(|n| n.port)
            .collect()
    }

    /// `redis://127.0.0.1:port` of every live node (any one is enough to seed a client).
    pub fn seed_urls(&self) -> Vec<String> {
        self.live_ports()
            .into_iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// A redis-rs cluster client over the live nodes (MOVED/ASK and topology refresh).
    pub fn client(&self) -> ClusterClient {
        ClusterClient::builder(self.seed_urls())
            .connection_timeout(Duration::from_secs(2))
            .response_timeout(Duration::from_secs(10))
            .retries(8)
            .build()
            .expect("cluster client")
    }

    pub fn conn(&self) -> ClusterConnection {
        self.client()
            .get_connection()
            .unwrap_or_else(|e| panic!("cluster connection: {e}\n{}", self.report()))
    }

    /// The node listening on `port`.
    pub fn node(&self, port: u16) -> &Server {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no node on port {port}"))
    }

    /// A plain connection to the node on `port` (commands for other slots answer MOVED).
    pub fn node_conn(&self, port: u16) -> Connection {
        self.try_node_conn(port)
            .unwrap_or_else(|e| panic!("connect to node {port}: {e}\n{}", self.report()))
    }

    fn try_node_conn(&self, port: u16) -> redis::RedisResult<Connection> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
        let c = client.get_connection_with_timeout(Duration::from_secs(2))?;
        c.set_read_timeout(Some(Duration::from_secs(10)))?;
        c.set_write_timeout(Some(Duration::from_secs(10)))?;
        Ok(c)
    }

    fn any_live_conn(&self) -> Connection {
        self.live_ports()
            .into_iter()
            .find_map(|p| self.try_node_conn(p).ok())
            .unwrap_or_else(|| panic!("no live node answers\n{}", self.report()))
    }

    /// `CLUSTER KEYSLOT key`, asked of a live node.
    pub fn keyslot(&self, key: &str) -> u16 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut self.any_live_conn())
            .expect("CLUSTER KEYSLOT")
    }

    /// Port of the primary serving `key`'s slot according to `CLUSTER SLOTS` on a live node.
    pub fn primary_for_key(&self, key: &str) -> u16 {
        let slot = self.keyslot(key);
        self.primary_for_slot(&mut self.any_live_conn(), slot)
            .unwrap_or_else(|| panic!("no primary serves slot {slot}\n{}", self.report()))
    }

    fn primary_for_slot(&self, conn: &mut Connection, slot: u16) -> Option<u16> {
        slot_owners(conn)
            .ok()?
            .into_iter()
            .find(|&(a, b, _, _)| (a..=b).contains(&slot))
            .map(|(_, _, port, _)| port)
    }

    /// `CLUSTER NODES` as seen by the node on `port`.
    pub fn nodes_seen_by(&self, port: u16) -> Vec<NodeLine> {
        let reply: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query(&mut self.node_conn(port))
            .expect("CLUSTER NODES");
        parse_cluster_nodes(&reply)
    }

    /// Ports of the live primaries (as seen by a live node).
    pub fn primaries(&self) -> Vec<u16> {
        let live = self.live_ports();
        let mut out: Vec<u16> = self
            .nodes_seen_by(live[0])
            .into_iter()
            .filter(|n| {
                n.is_primary() && !n.is_failed() && !n.slots.is_empty() && live.contains(&n.port)
            })
            .map(|n| n.port)
            .collect();
        out.sort_unstable();
        out
    }

    /// Ports of the live replicas of the primary on `primary_port`.
    pub fn replicas_of(&self, primary_port: u16) -> Vec<u16> {
        self.live_replicas_of_first(|n| n.port == primary_port)
    }

    /// Ports of the live replicas of the first node matching `is_owner`, as seen by a live
    /// node (none if no node matches).
    fn live_replicas_of_first(&self, is_owner: impl Fn(&NodeLine) -> bool) -> Vec<u16> {
        let live = self.live_ports();
        let view = self.nodes_seen_by(live[0]);
        let Some(owner) = view.iter().find(|n| is_owner(n)) else {
            return Vec::new();
        };
        view.iter()
            .filter(|n| n.primary_id.as_ref() == Some(&owner.id) && live.contains(&n.port))
            .map(|n| n.port)
            .collect()
    }

    /// SIGKILLs the primary serving `key`; returns its port.
    pub fn kill_primary_of(&mut self, key: &str) -> u16 {
        let port = self.primary_for_key(key);
        self.kill_node(port);
        port
    }

    /// SIGKILLs the node on `port` (nothing is flushed).
    pub fn kill_node(&mut self, port: u16) {
        let i = self.index(port);
        self.nodes[i].kill();
    }

    /// Starts a killed node again on its port and dir (it reloads `nodes.conf` and its AOF,
    /// and rejoins the cluster; a former primary comes back as a replica of its successor).
    pub fn restart_node(&mut self, port: u16) {
        let i = self.index(port);
        self.nodes[i].restart();
    }

    fn index(&self, port: u16) -> usize {
        self.nodes
            .iter()
            .position(|n| n.port == port)
            .unwrap_or_else(|| panic!("no node on port {port}"))
    }

    /// Waits until `key`'s slot is served by a live primary that every live node agrees on and
    /// every live node reports `cluster_state:ok`; returns that primary's port. After the
    /// automatic election has had `3 x NODE_TIMEOUT_MS + 3 s`, asks the dead primary's replica
    /// for `CLUSTER FAILOVER FORCE` once.
    pub fn wait_failover(&mut self, key: &str) -> u16 {
        let slot = self.keyslot(key);
        let started = Instant::now();
        let force_after = Duration::from_millis(3 * NODE_TIMEOUT_MS + 3000);
        let mut forced = false;
        let mut last = String::new();
        while started.elapsed() < FAILOVER_TIMEOUT {
            match self.failover_done(slot) {
                Ok(port) => {
                    eprintln!(
                        "slot {slot} failed over to {port} in {:.1}s{}",
                        started.elapsed().as_secs_f64(),
                        if forced { " (forced)" } else { "" }
                    );
                    return port;
                }
                Err(why) => last = why,
            }
            if !forced && started.elapsed() > force_after {
                forced = true;
                for port in self.replicas_of_dead_owner(slot) {
                    eprintln!("automatic failover too slow; CLUSTER FAILOVER FORCE on {port}");
                    if let Ok(mut c) = self.try_node_conn(port) {
                        let _: redis::RedisResult<Value> = redis::cmd("CLUSTER")
                            .arg("FAILOVER")
                            .arg("FORCE")
                            .query(&mut c);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "slot {slot} not failed over within {FAILOVER_TIMEOUT:?}: {last}\n{}",
            self.report()
        );
    }

    /// Ok(owner) once the cluster serves `slot` from a live primary everyone agrees on.
    fn failover_done(&self, slot: u16) -> Result<u16, String> {
        let live = self.live_ports();
        let mut owner = None;
        for &port in &live {
            let mut c = self.ok_node_conn(port)?;
            let seen = self.primary_for_slot(&mut c, slot);
            match (owner, seen) {
                (_, None) => return Err(format!("{port}: nobody serves {slot}")),
                (None, Some(p)) => owner = Some(p),
                (Some(o), Some(p)) if o != p => {
                    return Err(format!("{port} says {p} serves {slot}, others {o}"))
                }
                _ => {}
            }
        }
        let owner = owner.ok_or("no live node")?;
        if !live.contains(&owner) {
            return Err(format!("slot {slot} still on dead node {owner}"));
        }
        let role = role(&mut self.try_node_conn(owner).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        if role != "master" {
            return Err(format!("{owner} is a {role}"));
        }
        Ok(owner)
    }

    fn replicas_of_dead_owner(&self, slot: u16) -> Vec<u16> {
        self.live_replicas_of_first(|n| n.is_primary() && n.serves(slot))
    }

    /// Waits (with a deadline, then panics with every log) until every live node reports
    /// `cluster_state:ok` and the same slot map, every slot is served by a live primary, and
    /// every live replica is linked and synced to its primary.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.ready() {
                Ok(()) => return,
                Err(why) => last = why,
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "cluster not ready within {READY_TIMEOUT:?}: {last}\n{}",
            self.report()
        );
    }

    /// A connection to the node on `port`, if it answers and reports `cluster_state:ok`.
    fn ok_node_conn(&self, port: u16) -> Result<Connection, String> {
        let mut c = self
            .try_node_conn(port)
            .map_err(|e| format!("{port}: {e}"))?;
        let state = cluster_state(&mut c).map_err(|e| format!("{port}: {e}"))?;
        if state != "ok" {
            return Err(format!("{port}: cluster_state:{state}"));
        }
        Ok(c)
    }

    fn ready(&self) -> Result<(), String> {
        let live = self.live_ports();
        let mut first_map: Option<Vec<SlotRange>> = None;
        for &port in &live {
            let mut c = self.ok_node_conn(port)?;
            let map = slot_owners(&mut c).map_err(|e| format!("{port}: {e}"))?;
            let covered: u32 = map.iter().map(|&(a, b, _, _)| u32::from(b - a) + 1).sum();
            if covered != SLOT_COUNT {
                return Err(format!("{port}: {covered} slots served"));
            }
            match &first_map {
                None => first_map = Some(map),
                Some(m) if *m != map => {
                    return Err(format!("{port} has another slot map: {map:?} vs {m:?}"))
                }
                _ => {}
            }
            // Roles have spread: every live node is a primary with slots or a replica, and
            // none is suspected failed.
            let nodes: String = redis::cmd("CLUSTER")
                .arg("NODES")
                .query(&mut c)
                .map_err(|e| format!("{port}: {e}"))?;
            for n in parse_cluster_nodes(&nodes) {
                if !live.contains(&n.port) {
                    continue;
                }
                if n.is_failed() || (n.is_primary() && n.slots.is_empty()) {
                    return Err(format!("{port} sees {n:?}"));
                }
            }
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut c)
                .map_err(|e| format!("{port}: {e}"))?;
            if info.contains("role:slave")
                && !(info.contains("master_link_status:up")
                    && info.contains("master_sync_in_progress:0"))
            {
                return Err(format!("replica {port} not in sync"));
            }
        }
        // Every live primary serving slots has its live replicas attached and online.
        for (_, _, primary, replicas) in first_map.unwrap_or_default() {
            if !live.contains(&primary) {
                return Err(format!("slots on dead node {primary}"));
            }
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut self.try_node_conn(primary).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
            let online = info
                .lines()
                .filter(|l| l.starts_with("slave") && l.contains("state=online"))
                .count();
            let expected = replicas.iter().filter(|p| live.contains(p)).count();
            if online < expected {
                return Err(format!(
                    "primary {primary}: {online} of {expected} replicas online"
                ));
            }
        }
        Ok(())
    }

    /// `CLUSTER NODES` of every live node and the log of every node, for failure messages.
    pub fn report(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let alive = n.is_started();
            let _ = writeln!(
                out,
                "=== node {} ({}) ===",
                n.port,
                if alive { "live" } else { "killed" }
            );
            if alive {
                if let Ok(mut c) = self.try_node_conn(n.port) {
                    let nodes: redis::RedisResult<String> =
                        redis::cmd("CLUSTER").arg("NODES").query(&mut c);
                    let _ = writeln!(out, "CLUSTER NODES:\n{}", nodes.unwrap_or_default());
                }
            }
            let log = n.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            let _ = writeln!(out, "log (last {} lines):", tail.len());
            for line in tail.into_iter().rev() {
                let _ = writeln!(out, "  {line}");
            }
        }
        out
    }
}

/// How each node is started: cluster mode, its own `nodes.conf` (relative paths resolve in the
/// node's `--dir`, its own temp dir), AOF on, and an explicit cluster bus port (the default,
/// port + 10000, can be above 65535 for a high ephemeral port).
fn node_config(flavor: Flavor) -> ServerConfig {
    ServerConfig::new(flavor)
        .arg("--cluster-enabled", "yes")
        .arg("--cluster-config-file", "nodes.conf")
        .arg("--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string())
        .arg("--cluster-port", &free_port().to_string())
        .arg("--appendonly", "yes")
        // Replicas start syncing at once instead of waiting 5 s for company.
        .arg("--repl-diskless-sync-delay", "0")
}

/// `cluster_state` from `CLUSTER INFO`.
fn cluster_state(conn: &mut Connection) -> redis::RedisResult<String> {
    let info: String = redis::cmd("CLUSTER").arg("INFO").query(conn)?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("cluster_state:"))
        .unwrap_or("?")
        .trim()
        .to_string())
}

/// First element of `ROLE`: "master", "slave" (Redis) or "replica".
fn role(conn: &mut Connection) -> redis::RedisResult<String> {
    let v: Value = redis::cmd("ROLE").query(conn)?;
    match v {
        Value::Array(items) if !items.is_empty() => Ok(text(&items[0])),
        other => Ok(format!("{other:?}")),
    }
}

/// One range of `CLUSTER SLOTS`: (first slot, last slot, primary port, replica ports).
type SlotRange = (u16, u16, u16, Vec<u16>);

/// `CLUSTER SLOTS`, sorted.
fn slot_owners(conn: &mut Connection) -> redis::RedisResult<Vec<SlotRange>> {
    let v: Value = redis::cmd("CLUSTER").arg("SLOTS").query(conn)?;
    let Value::Array(ranges) = v else {
        return Ok(Vec::new());
    };
    let int = |v: &Value| match v {
        Value::Int(n) => *n,
        other => text(other).parse().unwrap_or(-1),
    };
    let mut out = Vec::new();
    for range in ranges {
        let Value::Array(items) = range else { continue };
        if items.len() < 3 {
            continue;
        }
        let port_of = |node: &Value| match node {
            Value::Array(f) if f.len() >= 2 => int(&f[1]) as u16,
            _ => 0,
        };
        let mut replicas: Vec<u16> = items[3..].iter().map(port_of).collect();
        replicas.sort_unstable();
        out.push((
            int(&items[0]) as u16,
            int(&items[1]) as u16,
            port_of(&items[2]),
            replicas,
        ));
    }
    out.sort();
    Ok(out)
}
