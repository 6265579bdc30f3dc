//! `osprey flows`: per-flow packets, bytes and TCP flags counted in the kernel (XDP on
//! ingress, tcx or tc clsact on egress) in one LRU table; user space exports a record when a
//! flow ends (FIN/RST, after a short grace for the final ACK), when it has been idle for
//! the idle timeout, and at exit for every flow left.
//!
//! Flow times are CLOCK_MONOTONIC_COARSE in the kernel (one tick of resolution, ~20 ns
//! cheaper per packet than a precise clock); `boot_from_mono` turns them into boot time for
//! the shared wall-clock conversion.
//!
//! Accounting is closed: `inserted` (kernel) = `exported` + `evicted` (LRU) + `live`. Bytes
//! are L2 bytes; GSO packets count per wire segment (see bpf/flows.bpf.c). A packet that
//! updates a flow between the scan that exports it and its deletion is lost (a window of
//! microseconds, only for flows that were idle or ended).

use std::collections::HashMap as StdHashMap;
use std::net::IpAddr;

use aya::maps::{HashMap, MapData, PerCpuArray};
use serde_json::{json, Value};

use super::ip_from_bytes;
use crate::abi::{flow_direction, FlowCounters, FlowKey, FlowStats};
use crate::kernel::clock_ns;
use crate::kernel::loader::{Attach, CapabilitySpec, Hook, LoadedCapability, Role, XdpAttachMode};

pub const SPEC: CapabilitySpec = CapabilitySpec {
    name: "flows",
    object: osprey_bpf::FLOWS,
    roles: &[
        Role {
            name: "ingress",
            required: true,
            hooks: &[
                Hook {
                    program: "flows_ingress",
                    attach: Attach::Xdp(XdpAttachMode::Native),
                },
                Hook {
                    program: "flows_ingress",
                    attach: Attach::Xdp(XdpAttachMode::Generic),
                },
            ],
        },
        Role {
            name: "egress",
            required: true,
            hooks: &[
                Hook {
                    program: "flows_egress",
                    attach: Attach::TcxEgress,
                },
                Hook {
                    program: "flows_egress_clsact",
                    attach: Attach::TcClsactEgress,
                },
            ],
        },
    ],
    kinds: &[],
    default_ring_bytes: 4096,
};

/// Now on the kernel side's flow clock. The coarse clock lags the precise one by up to a
/// tick, so comparisons against it are never early.
pub fn flow_clock_now_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC_COARSE)
}

/// A flow time (CLOCK_MONOTONIC) as boot time (they differ by the time spent suspended).
pub fn boot_from_mono(mono_ns: u64) -> u64 {
    let offset = clock_ns(libc::CLOCK_BOOTTIME).saturating_sub(clock_ns(libc::CLOCK_MONOTONIC));
    mono_ns + offset
}

/// The driver of `ifname` when its "native" XDP runs on packets that arrive as socket
/// buffers (veth, tun): there native mode converts every packet into an XDP buffer (a copy
/// when the headroom is short) and back, and veth turns GSO off on the peer, which measured
/// ~3x the cost of generic mode (bench/net.sh). Generic mode, though, sees a GRO/GSO
/// aggregate as one packet, so native stays the default and this only informs the user.
pub fn skb_backed_xdp_driver(ifname: &str) -> Option<&'static str> {
    const ETHTOOL_GDRVINFO: u32 = 0x3;
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        rest: [u8; 160], // version, fw_version, bus_info, ... (unused)
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        data: *mut DrvInfo,
        _pad: [u8; 16],
    }
    let mut info = DrvInfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        rest: [0; 160],
    };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: &mut info,
        _pad: [0; 16],
    };
    let bytes = ifname.as_bytes();
    if bytes.len() >= libc::IFNAMSIZ {
        return None;
    }
    req.name[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: a datagram socket for the ioctl, closed below; `req` and `info` outlive the
    // call and have the layout SIOCETHTOOL expects.
    let ok = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let r = libc::ioctl(fd, libc::SIOCETHTOOL, &mut req);
        libc::close(fd);
        r == 0
    };
    if !ok {
        return None;
    }
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(32);
    match &info.driver[..end] {
        b"veth" => Some("veth"),
        b"tun" => Some("tun"),
        _ => None,
    }
}

const TCP_FIN: u64 = 0x01;
const TCP_RST: u64 = 0x04;

/// Why a flow record was exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// TCP FIN or RST seen (IPFIX flowEndReason 3, end of flow).
    EndOfFlow,
    /// No packet for the idle timeout (IPFIX 1).
    Idle,
    /// Osprey stopped (IPFIX 5, lack of resources / forced end).
    Exit,
}

impl EndReason {
    pub fn name(self) -> &'static str {
        match self {
            EndReason::EndOfFlow => "end_of_flow",
            EndReason::Idle => "idle_timeout",
            EndReason::Exit => "forced_end",
        }
    }
}

#[derive(Debug, Clone)]
pub struct FlowRecord {
    pub key: FlowKey,
    pub stats: FlowStats,
    pub reason: EndReason,
}

pub fn protocol_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        other => other.to_string(),
    }
}

pub fn tcp_flags_text(flags: u64) -> String {
    const NAMES: [&str; 8] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];
    NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| flags & (1 << i) != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join("|")
}

pub fn addresses(key: &FlowKey) -> (IpAddr, IpAddr) {
    let family = u16::from(key.family);
    (
        ip_from_bytes(family, &key.saddr),
        ip_from_bytes(family, &key.daddr),
    )
}

fn has_ports(protocol: u8) -> bool {
    matches!(protocol, 6 | 17 | 132)
}

impl FlowRecord {
    /// An IPFIX-shaped record: information element names in snake case. `wall` formats a
    /// boot-time timestamp.
    pub fn to_json(&self, wall: &dyn Fn(u64) -> String, ifname: &str) -> Value {
        let (src, dst) = addresses(&self.key);
        let k = &self.key;
        let mut v = json!({
            "kind": "flow",
            "flow_start": wall(boot_from_mono(self.stats.first_mono_ns)),
            "flow_end": wall(boot_from_mono(self.stats.last_mono_ns)),
            "flow_end_reason": self.reason.name(),
            "interface": ifname,
            "ifindex": k.ifindex,
            "direction": if k.direction == flow_direction::INGRESS { "ingress" } else { "egress" },
            "ip_version": if src.is_ipv4() { 4 } else { 6 },
            "protocol": protocol_name(k.protocol),
            "protocol_identifier": k.protocol,
            "source_address": src.to_string(),
            "destination_address": dst.to_string(),
            "vlan_id": k.vlan,
            "packets": self.stats.packets,
            "octets": self.stats.bytes,
            "payload_octets": self.stats.payload_bytes,
        });
        let m = v.as_object_mut().expect("object");
        if has_ports(k.protocol) {
            m.insert("source_port".into(), k.sport.into());
            m.insert("destination_port".into(), k.dport.into());
        }
        if k.protocol == 1 || k.protocol == 58 {
            m.insert("icmp_type".into(), k.icmp_type.into());
            m.insert("icmp_code".into(), k.icmp_code.into());
        }
        if k.protocol == 6 {
            m.insert("tcp_flags".into(), self.stats.tcp_flags.into());
            m.insert(
                "tcp_flags_text".into(),
                tcp_flags_text(self.stats.tcp_flags).into(),
            );
        }
        v
    }

    /// The container of the sending socket's cgroup, when the kernel knew it (egress flows
    /// of local sockets); the host's for a host process.
    pub fn container(
        &self,
        containers: &mut crate::container::Containers,
    ) -> Option<std::sync::Arc<crate::container::Container>> {
        let cgroup = self.stats.cgroup_id;
        if cgroup == 0 {
            return None;
        }
        // No process to read: the cgroup is opened by its id.
        containers.note(cgroup, 0);
        containers.get(cgroup).cloned()
    }

    /// Adds `cgroup_id`, `process.container` and `process.k8s` to a record of `to_json` when
    /// the kernel knew the sending socket's cgroup (egress flows of local sockets).
    pub fn add_container(&self, v: &mut Value, containers: &mut crate::container::Containers) {
        if self.stats.cgroup_id == 0 {
            return;
        }
        v["cgroup_id"] = self.stats.cgroup_id.into();
        let Some(c) = self.container(containers) else {
            return;
        };
        let mut process = json!({ "container": &*c });
        if let Some(k8s) = crate::container::k8s_json(&c) {
            process["k8s"] = json!(k8s);
        }
        v["process"] = process;
    }

    /// One line for a table: direction, protocol, endpoints, packets, bytes.
    pub fn table_columns(&self, ifname: &str) -> String {
        let (src, dst) = addresses(&self.key);
        let k = &self.key;
        let ends = if has_ports(k.protocol) {
            format!("{} -> {}", endpoint(src, k.sport), endpoint(dst, k.dport))
        } else if k.protocol == 1 || k.protocol == 58 {
            format!("{src} -> {dst} type {} code {}", k.icmp_type, k.icmp_code)
        } else {
            format!("{src} -> {dst}")
        };
        format!(
            "{:<10} {:<3} {:<6} {:>10} {:>12}  {ends}",
            ifname,
            if k.direction == flow_direction::INGRESS {
                "in"
            } else {
                "out"
            },
            protocol_name(k.protocol),
            self.stats.packets,
            self.stats.bytes,
        )
    }
}

fn endpoint(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

pub const TABLE_HEADER: &str = "IFACE      DIR PROTO     PACKETS        BYTES  FLOW";

/// Totals that account for every flow the kernel created.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct FlowTotals {
    pub inserted: u64,
    pub exported: u64,
    pub evicted: u64,
    pub live: u64,
    pub insert_failed: u64,
    pub non_ip_frames: u64,
    pub truncated_frames: u64,
}

/// The kernel flow table as user space sees it.
pub struct FlowTable {
    flows: HashMap<MapData, FlowKey, FlowStats>,
    counters: PerCpuArray<MapData, FlowCounters>,
    exported: u64,
}

impl FlowTable {
    pub fn take_from(cap: &mut LoadedCapability) -> Result<Self, String> {
        let flows = cap.take_map("flows").map_err(|e| e.to_string())?;
        let counters = cap.take_map("flow_counters").map_err(|e| e.to_string())?;
        Ok(Self {
            flows: HashMap::try_from(flows).map_err(|e| e.to_string())?,
            counters: PerCpuArray::try_from(counters).map_err(|e| e.to_string())?,
            exported: 0,
        })
    }

    /// Every live flow (a snapshot; the kernel keeps counting).
    pub fn live(&self) -> Vec<(FlowKey, FlowStats)> {
        self.flows.iter().filter_map(Result::ok).collect()
    }

    /// Removes and returns flows that ended or went idle; with `all`, every flow.
    /// `now_ns` is `flow_clock_now_ns()`.
    pub fn export(
        &mut self,
        now_ns: u64,
        idle_ns: u64,
        fin_grace_ns: u64,
        all: bool,
    ) -> Vec<FlowRecord> {
        let mut out = Vec::new();
        for (key, stats) in self.live() {
            let quiet = now_ns.saturating_sub(stats.last_mono_ns);
            let reason = if stats.tcp_flags & (TCP_FIN | TCP_RST) != 0 && quiet >= fin_grace_ns {
                EndReason::EndOfFlow
            } else if quiet >= idle_ns {
                EndReason::Idle
            } else if all {
                EndReason::Exit
            } else {
                continue;
            };
            // Only a flow we removed ourselves is exported: one the LRU evicted meanwhile
            // is counted as evicted, never twice.
            if self.flows.remove(&key).is_ok() {
                self.exported += 1;
                out.push(FlowRecord { key, stats, reason });
            }
        }
        out
    }

    /// `export` now, with a FIN grace of at most a second: the final ACK follows a FIN,
    /// and waiting a little lets it join the flow rather than start a new one.
    pub fn export_due(&mut self, idle_ns: u64, all: bool) -> Vec<FlowRecord> {
        let fin_grace_ns = idle_ns.min(1_000_000_000);
        self.export(flow_clock_now_ns(), idle_ns, fin_grace_ns, all)
    }

    pub fn totals(&self) -> FlowTotals {
        let mut t = FlowTotals {
            exported: self.exported,
            ..Default::default()
        };
        if let Ok(per_cpu) = self.counters.get(&0, 0) {
            for c in per_cpu.iter() {
                t.inserted += c.inserts;
                t.insert_failed += c.insert_failed;
                t.non_ip_frames += c.non_ip;
                t.truncated_frames += c.truncated;
            }
        }
        t.live = self.flows.keys().filter(Result::is_ok).count() as u64;
        t.evicted = t.inserted.saturating_sub(t.exported + t.live);
        t
    }
}

/// Bytes per second of each live flow between two scans, for the top-N table.
#[derive(Default)]
pub struct RateTracker {
    last: StdHashMap<FlowKey, u64>,
}

impl RateTracker {
    /// Flows sorted by bytes/s since the previous call, highest first.
    pub fn top(
        &mut self,
        live: &[(FlowKey, FlowStats)],
        secs: f64,
        n: usize,
    ) -> Vec<(FlowKey, FlowStats, f64)> {
        let mut rows: Vec<_> = live
            .iter()
            .map(|(k, s)| {
                let before = self.last.get(k).copied().unwrap_or(0);
                (
                    *k,
                    *s,
                    s.bytes.saturating_sub(before) as f64 / secs.max(1e-3),
                )
            })
            .collect();
        self.last = live.iter().map(|(k, s)| (*k, s.bytes)).collect();
        rows.sort_by(|a, b| b.2.total_cmp(&a.2).then(b.1.bytes.cmp(&a.1.bytes)));
        rows.truncate(n);
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_ipfix_shaped() {
        let mut key = FlowKey {
            ifindex: 3,
            direction: flow_direction::EGRESS,
            family: 2,
            protocol: 6,
            sport: 40000,
            dport: 80,
            ..Default::default()
        };
        key.saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        key.daddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        let rec = FlowRecord {
            key,
            stats: FlowStats {
                packets: 3,
                bytes: 200,
                tcp_flags: 0x13,
                ..Default::default()
            },
            reason: EndReason::EndOfFlow,
        };
        let mut v = rec.to_json(&|ns| ns.to_string(), "veth0");
        rec.add_container(&mut v, &mut Default::default());
        assert!(v.get("process").is_none(), "no cgroup: no container");
        assert_eq!(v["source_address"], "10.0.0.1");
        assert_eq!(v["destination_port"], 80);
        assert_eq!(v["direction"], "egress");
        assert_eq!(v["tcp_flags_text"], "FIN|SYN|ACK");
        assert_eq!(v["flow_end_reason"], "end_of_flow");
        assert!(v.get("icmp_type").is_none());
        assert!(rec
            .table_columns("veth0")
            .contains("10.0.0.1:40000 -> 10.0.0.2:80"));
    }
}
