//! `osprey tcp`: every TCP connection's lifecycle from inet_sock_set_state, one record per
//! connection at close (addresses, owner, duration, bytes, segments, retransmits, RTT) and,
//! with `--states`, each transition.
//!
//! Ownership: recorded in process context at connect (CLOSE -> SYN_SENT) and at accept()
//! exit; transitions that run in softirq context carry that owner, never the task that
//! happened to be current. A connection accepted before Osprey started, or closed before
//! accept(), has no known owner (pid 0, `owner_known: false`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::ser::SerializeMap;

use super::ip_from_bytes;
use crate::abi::{self, kind};
use crate::kernel::loader::{Attach, CapabilitySpec, Hook, Role};
use crate::wire::DecodeError;

pub const SPEC: CapabilitySpec = CapabilitySpec {
    name: "tcp",
    object: osprey_bpf::TCP,
    roles: &[
        Role {
            name: "state",
            required: true,
            hooks: &[
                Hook {
                    program: "tcp_state_btf",
                    attach: Attach::BtfTracepoint("inet_sock_set_state"),
                },
                Hook {
                    program: "tcp_state_raw",
                    attach: Attach::RawTracepoint("inet_sock_set_state"),
                },
                Hook {
                    program: "tcp_state_tp",
                    attach: Attach::Tracepoint("sock", "inet_sock_set_state"),
                },
            ],
        },
        Role {
            name: "retransmit",
            required: false,
            hooks: &[
                Hook {
                    program: "tcp_retransmit_btf",
                    attach: Attach::BtfTracepoint("tcp_retransmit_skb"),
                },
                Hook {
                    program: "tcp_retransmit_raw",
                    attach: Attach::RawTracepoint("tcp_retransmit_skb"),
                },
                Hook {
                    program: "tcp_retransmit_tp",
                    attach: Attach::Tracepoint("tcp", "tcp_retransmit_skb"),
                },
            ],
        },
        Role {
            name: "accept-owner",
            required: false,
            hooks: crate::sys_exit_hooks!("tcp_accept", &["accept", "accept4"]),
        },
    ],
    kinds: &[
        (kind::TCP_STATE, "tcp_state"),
        (kind::TCP_CLOSE, "tcp_close"),
    ],
    default_ring_bytes: 4 << 20,
};

/// `.rodata` switch for streaming every transition.
pub fn states_global(on: bool) -> (&'static str, Vec<u8>) {
    ("emit_states", vec![u8::from(on)])
}

/// Both ends of a connection and who owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub local: IpAddr,
    pub local_port: u16,
    pub remote: IpAddr,
    pub remote_port: u16,
    /// We connected (true) or accepted (false).
    pub active: bool,
    pub owner_known: bool,
}

impl From<&abi::TcpEndpoints> for Endpoints {
    fn from(e: &abi::TcpEndpoints) -> Self {
        Endpoints {
            local: ip_from_bytes(e.family, &e.laddr),
            local_port: e.lport,
            remote: ip_from_bytes(e.family, &e.raddr),
            remote_port: e.rport,
            active: e.active != 0,
            owner_known: e.owner_known != 0,
        }
    }
}

impl Endpoints {
    fn write_json<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("ip_version", &if self.local.is_ipv4() { 4 } else { 6 })?;
        map.serialize_entry("local_addr", &self.local.to_string())?;
        map.serialize_entry("local_port", &self.local_port)?;
        map.serialize_entry("remote_addr", &self.remote.to_string())?;
        map.serialize_entry("remote_port", &self.remote_port)?;
        map.serialize_entry("direction", if self.active { "connect" } else { "accept" })?;
        map.serialize_entry("owner_known", &self.owner_known)
    }

    fn table(&self) -> String {
        format!(
            "{:<22} {:<22}",
            socket_text(self.local, self.local_port),
            socket_text(self.remote, self.remote_port)
        )
    }

    pub fn involves_port(&self, port: u16) -> bool {
        self.local_port == port || self.remote_port == port
    }
}

fn socket_text(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// Kernel TCP state names (include/net/tcp_states.h).
pub fn state_name(state: u32) -> &'static str {
    match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        _ => "?",
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpState {
    pub sock: u64,
    pub endpoints: Endpoints,
    pub old_state: u32,
    pub new_state: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpClose {
    pub sock: u64,
    pub endpoints: Endpoints,
    /// 0 when the connection began before Osprey attached.
    pub start_boot_ns: u64,
    pub end_boot_ns: u64,
    pub bytes_sent: u64,
    pub bytes_acked: u64,
    pub bytes_received: u64,
    pub segs_out: u32,
    pub segs_in: u32,
    pub data_segs_out: u32,
    pub data_segs_in: u32,
    pub retransmits: u32,
    pub total_retrans: u32,
    pub srtt_us: u32,
    /// `None` when the kernel never measured one.
    pub min_rtt_us: Option<u32>,
    pub last_state: u32,
}

impl TcpClose {
    pub fn duration_ns(&self) -> Option<u64> {
        (self.start_boot_ns != 0).then(|| self.end_boot_ns.saturating_sub(self.start_boot_ns))
    }
}

fn malformed(kind: &'static str, len: usize) -> DecodeError {
    DecodeError::Malformed {
        kind,
        len,
        why: "short",
    }
}

pub fn decode_state(bytes: &[u8]) -> Result<TcpState, DecodeError> {
    let raw: abi::TcpState = abi::read(bytes).ok_or(malformed("tcp_state", bytes.len()))?;
    Ok(TcpState {
        sock: raw.sock,
        endpoints: Endpoints::from(&raw.ep),
        old_state: raw.old_state,
        new_state: raw.new_state,
    })
}

pub fn decode_close(bytes: &[u8]) -> Result<TcpClose, DecodeError> {
    let raw: abi::TcpClose = abi::read(bytes).ok_or(malformed("tcp_close", bytes.len()))?;
    Ok(TcpClose {
        sock: raw.sock,
        endpoints: Endpoints::from(&raw.ep),
        start_boot_ns: raw.start_boot_ns,
        end_boot_ns: raw.hdr.ts_boot_ns,
        bytes_sent: raw.bytes_sent,
        bytes_acked: raw.bytes_acked,
        bytes_received: raw.bytes_received,
        segs_out: raw.segs_out,
        segs_in: raw.segs_in,
        data_segs_out: raw.data_segs_out,
        data_segs_in: raw.data_segs_in,
        retransmits: raw.retransmits,
        total_retrans: raw.total_retrans,
        srtt_us: raw.srtt_us,
        min_rtt_us: (raw.min_rtt_us != u32::MAX && raw.min_rtt_us != 0).then_some(raw.min_rtt_us),
        last_state: raw.last_state,
    })
}

impl TcpState {
    pub fn write_json<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("sock", &format!("{:#x}", self.sock))?;
        self.endpoints.write_json(map)?;
        map.serialize_entry("old_state", state_name(self.old_state))?;
        map.serialize_entry("new_state", state_name(self.new_state))
    }

    pub fn table_details(&self) -> String {
        format!(
            "{} {} -> {}",
            self.endpoints.table(),
            state_name(self.old_state),
            state_name(self.new_state)
        )
    }
}

impl TcpClose {
    pub fn write_json<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("sock", &format!("{:#x}", self.sock))?;
        self.endpoints.write_json(map)?;
        map.serialize_entry("duration_ns", &self.duration_ns())?;
        map.serialize_entry("bytes_sent", &self.bytes_sent)?;
        map.serialize_entry("bytes_acked", &self.bytes_acked)?;
        map.serialize_entry("bytes_received", &self.bytes_received)?;
        map.serialize_entry("segs_out", &self.segs_out)?;
        map.serialize_entry("segs_in", &self.segs_in)?;
        map.serialize_entry("data_segs_out", &self.data_segs_out)?;
        map.serialize_entry("data_segs_in", &self.data_segs_in)?;
        map.serialize_entry("retransmits", &self.retransmits)?;
        map.serialize_entry("total_retrans", &self.total_retrans)?;
        map.serialize_entry("srtt_us", &self.srtt_us)?;
        map.serialize_entry("min_rtt_us", &self.min_rtt_us)?;
        map.serialize_entry("last_state", state_name(self.last_state))
    }

    pub fn table_details(&self) -> String {
        let ms = self
            .duration_ns()
            .map_or("-".to_string(), |d| format!("{:.3}", d as f64 / 1e6));
        format!(
            "{} {:>10} {:>10} {:>5} {:>8} {:>10}",
            self.endpoints.table(),
            self.bytes_sent,
            self.bytes_received,
            self.retransmits,
            self.srtt_us,
            ms
        )
    }
}

pub const TABLE_HEADER: &str =
    "LOCAL                  REMOTE                    TX_BYTES   RX_BYTES RETX  SRTT_US    DUR_MS";

/// Smoothed RTT at close, per remote address, in power-of-two microsecond buckets.
#[derive(Debug, Default)]
pub struct RttHistograms {
    by_remote: BTreeMap<IpAddr, BTreeMap<u32, u64>>,
}

impl RttHistograms {
    pub fn add(&mut self, close: &TcpClose) {
        // Bucket b holds [2^b, 2^(b+1)) microseconds; 0 us goes to bucket 0.
        let bucket = 31 - close.srtt_us.max(1).leading_zeros();
        *self
            .by_remote
            .entry(close.endpoints.remote)
            .or_default()
            .entry(bucket)
            .or_default() += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.by_remote.is_empty()
    }

    pub fn to_json(&self) -> Vec<serde_json::Value> {
        self.by_remote
            .iter()
            .map(|(remote, buckets)| {
                serde_json::json!({
                    "kind": "tcp_rtt_histogram",
                    "remote_addr": remote.to_string(),
                    "buckets": buckets.iter().map(|(b, n)| serde_json::json!({
                        "srtt_us_min": 1u64 << b,
                        "srtt_us_max": (1u64 << (b + 1)) - 1,
                        "connections": n,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for (remote, buckets) in &self.by_remote {
            let most = buckets.values().copied().max().unwrap_or(1);
            out.push_str(&format!("remote {remote}: smoothed RTT at close (us)\n"));
            for (b, n) in buckets {
                let bar = "*".repeat(((n * 40).div_ceil(most)) as usize);
                out.push_str(&format!(
                    "  {:>10} -> {:<10} : {:<8} |{bar:<40}|\n",
                    1u64 << b,
                    (1u64 << (b + 1)) - 1,
                    n
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close_record(srtt: u32, min_rtt: u32) -> Vec<u8> {
        let mut raw = abi::TcpClose {
            hdr: abi::EventHeader {
                kind: kind::TCP_CLOSE,
                ts_boot_ns: 5_000,
                ..Default::default()
            },
            start_boot_ns: 1_000,
            bytes_sent: 42,
            srtt_us: srtt,
            min_rtt_us: min_rtt,
            ..Default::default()
        };
        raw.ep.family = super::super::AF_INET6;
        raw.ep.laddr[15] = 1;
        raw.ep.lport = 80;
        // SAFETY: TcpClose is plain old data.
        unsafe {
            std::slice::from_raw_parts(
                (&raw as *const abi::TcpClose).cast::<u8>(),
                std::mem::size_of::<abi::TcpClose>(),
            )
        }
        .to_vec()
    }

    #[test]
    fn decodes_close_and_builds_histograms() {
        let c = decode_close(&close_record(300, u32::MAX)).unwrap();
        assert_eq!(c.duration_ns(), Some(4_000));
        assert_eq!(c.endpoints.local.to_string(), "::1");
        assert_eq!(c.min_rtt_us, None);
        assert!(decode_close(&close_record(1, 1)[..100]).is_err());
        let mut h = RttHistograms::default();
        h.add(&c);
        h.add(&decode_close(&close_record(256, 10)).unwrap());
        h.add(&decode_close(&close_record(40, 10)).unwrap());
        let json = h.to_json();
        assert_eq!(json.len(), 1);
        let buckets = json[0]["buckets"].as_array().unwrap();
        assert_eq!(buckets.len(), 2);
        assert_eq!(buckets[1]["srtt_us_min"], 256);
        assert_eq!(buckets[1]["connections"], 2);
        assert_eq!(state_name(1), "ESTABLISHED");
    }
}
