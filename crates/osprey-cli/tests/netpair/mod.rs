//! Shared by the network tests: a veth pair between two namespaces of our own (deleted on
//! drop) and helpers over `osprey flows` records.
#![allow(dead_code)] // each test binary uses a subset

use std::process::Command;

use serde_json::Value;

use crate::common::{Finished, Tracer, WORKLOAD};

/// Two namespaces joined by a veth pair, deleted on drop (also when a test fails).
/// Addresses: 10.X.0.1 / fdX::1 in `a`, .2 / ::2 in `b`; IPv6 without DAD so nothing waits.
pub struct NetPair {
    pub a: String,
    pub b: String,
    pub va: String,
    pub vb: String,
}

pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NetPair {
    /// `osprey flows` on `iface` inside `ns`, JSON records, flows kept until exit.
    pub fn flows_json(&self, ns: &str, iface: &str) -> Tracer {
        Tracer::start_in_netns(
            ns,
            &["flows", "-i", iface, "-o", "json", "--idle-timeout", "60"],
        )
    }

    pub fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("{}x{n}", std::process::id() % 100_000);
        let pair = NetPair {
            a: format!("ospa{tag}"),
            b: format!("ospb{tag}"),
            va: format!("ova{tag}"),
            vb: format!("ovb{tag}"),
        };
        ip(&["netns", "add", &pair.a]);
        ip(&["netns", "add", &pair.b]);
        ip(&[
            "link", "add", &pair.va, "netns", &pair.a, "type", "veth", "peer", "name", &pair.vb,
            "netns", &pair.b,
        ]);
        for (ns, dev, host) in [(&pair.a, &pair.va, 1), (&pair.b, &pair.vb, 2)] {
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("10.201.0.{host}/24"),
                "dev",
                dev,
            ]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("fd77::{host}/64"),
                "dev",
                dev,
                "nodad",
            ]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }

    pub fn run(&self, ns: &str, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, WORKLOAD.as_str()])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn xdp_attached(&self, ns: &str, dev: &str) -> bool {
        let out = Command::new("ip")
            .args(["-n", ns, "-d", "link", "show", "dev", dev])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
    }

    /// No XDP program on `va` (ip link) and none listed by bpftool in namespace `a`.
    pub fn assert_nothing_attached(&self) {
        assert!(!self.xdp_attached(&self.a, &self.va));
        let listing = self.bpftool_net(&self.a);
        assert!(!listing.contains(" id "), "{listing}");
    }

    pub fn bpftool_net(&self, ns: &str) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "bpftool", "net", "show"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

pub fn flow_records(events: &[Value]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["kind"] == "flow")
        .cloned()
        .collect()
}

/// The one record matching `pred` (more than one would mean a flow was split).
pub fn one_flow<'a>(flows: &'a [Value], what: &str, pred: impl Fn(&Value) -> bool) -> &'a Value {
    let found: Vec<&Value> = flows.iter().filter(|f| pred(f)).collect();
    assert_eq!(found.len(), 1, "{what}: {found:#?}");
    found[0]
}

pub fn flows_summary(done: &Finished) -> Value {
    done.summary()["flows"].clone()
}
