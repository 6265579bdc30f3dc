//! Real-BPF tests of `osprey flows` at its edges: missing privileges, someone else's XDP
//! program, VLAN-tagged frames, IPv6 extension headers and fragments, the tc clsact
//! fallback and native XDP. Traffic stays inside namespaces these tests create and delete.

mod common;
mod netpair;

use std::process::{Command, Output};

use common::*;
use netpair::*;
use serde_json::Value;

const TEST_PASS_OBJECT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../osprey-bpf/objects/test_pass.bpf.o"
);

/// `osprey ARGS` inside namespace `ns`, run to completion (`prefix` goes before osprey).
fn osprey_in(ns: &str, prefix: &[&str], args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(prefix)
        .arg(OSPREY)
        .args(args)
        .output()
        .unwrap()
}

/// No tc filter on `dev`'s egress in `ns` (what the clsact fallback would leave behind; an
/// XDP or tcx link of a process that failed dies with it).
fn assert_no_tc_filter(ns: &str, dev: &str) {
    let out = Command::new("tc")
        .args(["-n", ns, "filter", "show", "dev", dev, "egress"])
        .output()
        .unwrap();
    assert!(out.stdout.is_empty(), "{out:?}");
}

/// The id of the XDP program on `dev` in `ns`, from `ip -d link` ("prog/xdp id N").
fn xdp_prog_id(ns: &str, dev: &str) -> Option<String> {
    let out = Command::new("ip")
        .args(["-n", ns, "-d", "link", "show", "dev", dev])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut words = text.split_whitespace();
    words.find(|w| *w == "prog/xdp")?;
    (words.next()? == "id").then(|| words.next().unwrap_or_default().to_string())
}

#[test]
fn flows_without_privileges_exits_77_naming_the_capability() {
    if !bpf_available("flows_unprivileged") {
        return;
    }
    let _serial = serial();
    let net = NetPair::new();
    // An unprivileged user: nothing can be loaded.
    let nobody = osprey_in(
        &net.a,
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ],
        &["flows", "-i", &net.va, "--duration", "1"],
    );
    let err = String::from_utf8_lossy(&nobody.stderr);
    assert_eq!(nobody.status.code(), Some(77), "{err}");
    assert!(err.contains("osprey flows needs CAP_BPF"), "{err}");
    // Root without CAP_NET_ADMIN (and CAP_SYS_ADMIN): may load, may not attach to interfaces.
    let no_net_admin = osprey_in(
        &net.a,
        &[
            "setpriv",
            "--inh-caps=-net_admin,-sys_admin",
            "--bounding-set=-net_admin,-sys_admin",
        ],
        &["flows", "-i", &net.va, "--duration", "1"],
    );
    let err = String::from_utf8_lossy(&no_net_admin.stderr);
    assert_eq!(no_net_admin.status.code(), Some(77), "{err}");
    assert!(err.contains("needs CAP_NET_ADMIN"), "{err}");
    net.assert_nothing_attached();
    assert_no_tc_filter(&net.a, &net.va);
}

#[test]
fn flows_refuses_an_xdp_program_attached_with_ip_link_and_leaves_it() {
    if !bpf_available("flows_foreign_ip_link") {
        return;
    }
    let _serial = serial();
    let net = NetPair::new();
    for (ip_mode, osprey_mode) in [("xdpgeneric", "auto"), ("xdpgeneric", "native")] {
        ip(&[
            "-n",
            &net.a,
            "link",
            "set",
            "dev",
            &net.va,
            ip_mode,
            "obj",
            TEST_PASS_OBJECT,
            "sec",
            "xdp",
        ]);
        let theirs = xdp_prog_id(&net.a, &net.va).expect("their program attached");
        let refused = osprey_in(
            &net.a,
            &[],
            &[
                "flows",
                "-i",
                &net.va,
                "--xdp-mode",
                osprey_mode,
                "--duration",
                "1",
            ],
        );
        let err = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(2), "{osprey_mode}: {err}");
        assert!(
            err.contains(&format!(
                "{} already has an XDP program that is not ours; refusing to replace it",
                net.va
            )),
            "{err}"
        );
        assert_eq!(
            xdp_prog_id(&net.a, &net.va),
            Some(theirs),
            "theirs untouched"
        );
        assert_no_tc_filter(&net.a, &net.va);
        ip(&["-n", &net.a, "link", "set", "dev", &net.va, ip_mode, "off"]);
    }
    net.assert_nothing_attached();
}

#[test]
fn flows_key_vlan_tagged_frames_by_vlan_with_exact_counts() {
    if !bpf_available("flows_vlan") {
        return;
    }
    let _serial = serial();
    let net = NetPair::new();
    // Tagged frames written whole with a packet socket (this kernel has no VLAN devices):
    // the tag is in the frame at a's egress and b's ingress. A tag the stack keeps beside
    // the packet (VLAN device on an offloading NIC) is read from skb->vlan_tci at egress.
    let on_a = net.flows_json(&net.a, &net.va);
    let on_b = net.flows_json(&net.b, &net.vb);
    net.run(
        &net.a,
        &[
            "vlan-udp-send",
            &net.va,
            "7",
            "10.211.0.1",
            "10.211.0.2",
            "5300",
            "6",
            "150",
        ],
    );
    let (done_a, done_b) = (on_a.stop(), on_b.stop());
    let tagged = 14 + 4 + 20 + 8 + 150; // Ethernet + 802.1Q tag + IPv4 + UDP + payload
    for (done, direction) in [(&done_a, "egress"), (&done_b, "ingress")] {
        let flows = flow_records(&done.events());
        let f = one_flow(&flows, direction, |f| {
            f["direction"] == direction && f["destination_port"] == 5300
        });
        assert_eq!(f["vlan_id"], 7, "{f}");
        assert_eq!(f["source_address"], "10.211.0.1");
        assert_eq!(f["packets"], 6, "{f}");
        assert_eq!(f["octets"], 6 * tagged, "{f}");
        assert_eq!(f["payload_octets"], 6 * 150, "{f}");
    }
}

#[test]
fn flows_parse_ipv6_destination_options_and_fragments() {
    if !bpf_available("flows_ipv6_ext") {
        return;
    }
    let _serial = serial();
    let net = NetPair::new();
    let on_a = net.flows_json(&net.a, &net.va);
    let send = |port: &str, count: &str, size: &str, dstopts: bool| {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &net.a, WORKLOAD.as_str()])
            .args(["udp-send", "fd77::2", port, count, size]);
        if dstopts {
            cmd.env("UDP_SEND_DSTOPTS", "1");
        }
        assert!(cmd.status().unwrap().success());
    };
    net.run(&net.a, &["ping", "fd77::2", "1"]); // neighbour discovery done first
    send("5400", "4", "100", true);
    // 3008 bytes of UDP over a 1500-byte MTU: fragments of 1448 + 1448 + 112 bytes.
    send("5401", "1", "3000", false);
    let done = on_a.stop();
    let flows = flow_records(&done.events());
    let out = |f: &Value| {
        f["direction"] == "egress"
            && f["protocol"] == "udp"
            && f["destination_address"] == "fd77::2"
    };
    let opts = one_flow(&flows, "dstopts", |f| {
        out(f) && f["destination_port"] == 5400
    });
    assert_eq!(opts["packets"], 4);
    // Ethernet + IPv6 + 8-byte Destination Options + UDP + payload
    assert_eq!(opts["octets"], 4 * (14 + 40 + 8 + 8 + 100), "{opts}");
    assert_eq!(opts["payload_octets"], 4 * 100, "{opts}");
    let first = one_flow(&flows, "first fragment", |f| {
        out(f) && f["destination_port"] == 5401
    });
    assert_eq!(first["packets"], 1);
    assert_eq!(first["octets"], 14 + 40 + 8 + 1448, "{first}");
    // Later fragments have no UDP header: no ports, a flow of their own.
    let rest = one_flow(&flows, "later fragments", |f| {
        out(f) && f["destination_port"] == 0 && f["source_port"] == 0
    });
    assert_eq!(rest["packets"], 2, "{rest}");
    assert_eq!(
        rest["octets"],
        (14 + 40 + 8 + 1448) + (14 + 40 + 8 + 112),
        "{rest}"
    );
}

#[test]
fn flows_count_exactly_through_tc_clsact_fallback_and_native_xdp() {
    if !bpf_available("flows_clsact_native") {
        return;
    }
    let _serial = serial();
    let net = NetPair::new();
    net.run(&net.a, &["ping", "10.201.0.2", "1"]); // ARP done first
                                                   // Denying the tcx program forces the tc clsact one (what kernels before 6.6 get).
    let on_a = Tracer::start_in_netns_with_env(
        &net.a,
        &[
            "flows",
            "-i",
            &net.va,
            "-o",
            "json",
            "--xdp-mode",
            "native",
            "--idle-timeout",
            "60",
        ],
        &[("OSPREY_DENY_PROGRAMS", "flows_egress")],
    );
    net.run(&net.a, &["udp-send", "10.201.0.2", "5500", "5", "120"]);
    net.run(&net.b, &["udp-send", "10.201.0.1", "5501", "3", "80"]);
    let done = on_a.stop();
    assert!(
        done.stderr.contains("via xdp/native, tc/clsact/egress"),
        "{}",
        done.stderr
    );
    let flows = flow_records(&done.events());
    let out = one_flow(&flows, "clsact egress", |f| {
        f["direction"] == "egress" && f["destination_port"] == 5500
    });
    assert_eq!(
        (&out["packets"], &out["octets"]),
        (&Value::from(5), &Value::from(5 * (14 + 20 + 8 + 120)))
    );
    let inn = one_flow(&flows, "native ingress", |f| {
        f["direction"] == "ingress" && f["destination_port"] == 5501
    });
    assert_eq!(
        (&inn["packets"], &inn["octets"]),
        (&Value::from(3), &Value::from(3 * (14 + 20 + 8 + 80)))
    );
    // Detached: no XDP, no tc filter left on the interface.
    net.assert_nothing_attached();
    assert_no_tc_filter(&net.a, &net.va);
    let qdiscs = Command::new("tc")
        .args(["-n", &net.a, "qdisc", "show", "dev", &net.va])
        .output()
        .unwrap();
    let qdiscs = String::from_utf8_lossy(&qdiscs.stdout);
    assert!(
        !qdiscs.contains("clsact"),
        "the qdisc we added is gone: {qdiscs}"
    );
}

#[test]
fn check_lists_tcp_and_flows_hooks() {
    if !bpf_available("check_net") {
        return;
    }
    let _serial = serial();
    let roles = |env: &[(&str, &str)]| -> Vec<(String, String, String)> {
        let out = Command::new(OSPREY)
            .args(["check", "-o", "json"])
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        doc["capabilities"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["name"] == "tcp" || c["name"] == "flows")
            .flat_map(|c| {
                c["roles"].as_array().unwrap().iter().map(move |r| {
                    (
                        c["name"].as_str().unwrap().to_string(),
                        r["role"].as_str().unwrap().to_string(),
                        r["hook"].as_str().unwrap_or("unavailable").to_string(),
                    )
                })
            })
            .collect()
    };
    let hook_of = |rows: &[(String, String, String)], cap: &str, role: &str| {
        rows.iter()
            .find(|(c, r, _)| c == cap && r == role)
            .map(|(_, _, h)| h.clone())
            .unwrap_or_else(|| panic!("no {cap}/{role} in {rows:?}"))
    };
    let rows = roles(&[]);
    assert_eq!(hook_of(&rows, "tcp", "state"), "tp_btf/inet_sock_set_state");
    assert_eq!(
        hook_of(&rows, "tcp", "retransmit"),
        "tp_btf/tcp_retransmit_skb"
    );
    // Probed on lo, which has no native XDP.
    assert_eq!(hook_of(&rows, "flows", "ingress"), "xdp/generic");
    assert_eq!(hook_of(&rows, "flows", "egress"), "tcx/egress");
    let fallback = roles(&[("OSPREY_DENY_PROGRAMS", "flows_egress")]);
    assert_eq!(hook_of(&fallback, "flows", "egress"), "tc/clsact/egress");
    let lo = Command::new("tc")
        .args(["qdisc", "show", "dev", "lo"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&lo.stdout).contains("clsact"));
}

#[test]
fn on_a_terminal_flows_show_a_refreshing_top_table() {
    if !bpf_available("flows_tty") {
        return;
    }
    let _serial = serial();
    let net = NetPair::new();
    // script(1) gives osprey a pseudo-terminal; the namespace is entered inside it.
    let shown = Command::new("script")
        .arg("-qec")
        .arg(format!(
            "ip netns exec {} {OSPREY} flows -i {} --duration 3 --interval 0.5 --idle-timeout 60",
            net.a, net.va
        ))
        .arg("/dev/null")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script (util-linux)");
    // Attached once the first frame is drawn.
    let mut shown = shown;
    let mut screen = std::io::BufReader::new(shown.stdout.take().unwrap());
    let mut text = Vec::new();
    while !String::from_utf8_lossy(&text).contains("BYTES/S") {
        let n = std::io::BufRead::read_until(&mut screen, b'\n', &mut text).unwrap();
        assert!(n > 0, "no frame: {}", String::from_utf8_lossy(&text));
    }
    net.run(&net.a, &["udp-send", "10.201.0.2", "5301", "50", "100"]);
    std::io::Read::read_to_end(&mut screen, &mut text).unwrap();
    let status = shown.wait().unwrap();
    let text = String::from_utf8_lossy(&text);
    assert!(status.success(), "{text}");
    // Redrawn in place every interval: clear-screen sequences, each with the header.
    let frames: Vec<&str> = text.split("\x1b[H\x1b[2J").skip(1).collect();
    assert!(frames.len() >= 3, "{text}");
    assert!(frames.iter().all(|f| f.contains("BYTES/S")), "{text}");
    let row = frames
        .iter()
        .flat_map(|f| f.lines())
        .find(|l| l.contains("10.201.0.2") && l.contains("5301"))
        .unwrap_or_else(|| panic!("no row for the UDP flow: {text}"));
    assert!(row.contains("udp"), "{row}");
    net.assert_nothing_attached();
}
