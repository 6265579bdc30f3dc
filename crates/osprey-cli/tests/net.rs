//! Real-BPF tests of `osprey tcp` and `osprey flows`. Traffic stays on loopback or inside
//! network namespaces these tests create and always delete (names unique per run).

mod common;
mod netpair;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use netpair::*;
use serde_json::Value;

/// `osprey-workload tcp-serve ADDR REPLY` started (optionally inside a namespace); its port.
fn tcp_server(
    netns: Option<&str>,
    addr: &str,
    reply: usize,
    expect: Option<usize>,
) -> (Child, u16) {
    let mut cmd = in_netns(netns, WORKLOAD.as_str());
    cmd.args(["tcp-serve", addr, &reply.to_string()]);
    if let Some(e) = expect {
        cmd.arg(e.to_string());
    }
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn server");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().parse().expect("server prints its port");
    (child, port)
}

/// What `tcp-send` and `tcp-serve` print last: bytes received and the kernel's count of
/// segments the connection retransmitted (TCP_INFO, read once nothing more can be).
fn transfer(out: &str) -> (usize, u64) {
    let last = out.lines().last().unwrap_or_default();
    let mut words = last
        .split_whitespace()
        .map(|w| w.parse::<u64>().expect("a number"));
    let bytes = words.next().expect("bytes received") as usize;
    (bytes, words.next().expect("retransmits"))
}

fn in_netns(netns: Option<&str>, program: &str) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, program]);
            c
        }
        None => Command::new(program),
    }
}

fn tcp_closes(events: &[Value], port: u16) -> Vec<Value> {
    events
        .iter()
        .filter(|e| {
            e["kind"] == "tcp_close" && (e["local_port"] == port || e["remote_port"] == port)
        })
        .cloned()
        .collect()
}

#[test]
fn tcp_transfer_gives_one_exact_record_per_side() {
    if !bpf_available("tcp_transfer") {
        return;
    }
    let _serial = serial();
    let tracer = Tracer::start(&["tcp", "--output", "json"]);
    let v4_only = Tracer::start(&["tcp", "--output", "json", "--remote", "127.0.0.0/8"]);
    const SENT: usize = 1_000_000;
    const REPLY: usize = 70_000;
    let mut runs = Vec::new();
    for addr in ["127.0.0.1", "::1"] {
        let (server, port) = tcp_server(None, addr, REPLY, None);
        let started = Instant::now();
        let client = Command::new(WORKLOAD)
            .args(["tcp-send", addr, &port.to_string(), &SENT.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let client_pid = client.id();
        let out = client.wait_with_output().unwrap();
        let elapsed = started.elapsed();
        let (received, client_retransmits) = transfer(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(received, REPLY);
        let server_pid = server.id();
        let served = server.wait_with_output().unwrap();
        assert!(served.status.success());
        let (_, server_retransmits) = transfer(&String::from_utf8_lossy(&served.stdout));
        runs.push((
            addr,
            port,
            server_pid,
            client_pid,
            elapsed,
            [client_retransmits, server_retransmits],
        ));
    }
    let done = tracer.stop();
    let filtered = v4_only.stop();
    assert!(done.status.success(), "{}", done.stderr);
    let events = done.events();
    for (addr, port, server_pid, client_pid, elapsed, retransmits) in &runs {
        let closes = tcp_closes(&events, *port);
        assert_eq!(closes.len(), 2, "{addr}: {closes:#?}");
        let client = closes.iter().find(|e| e["direction"] == "connect").unwrap();
        let server = closes.iter().find(|e| e["direction"] == "accept").unwrap();
        assert_eq!(client["process"]["pid"], *client_pid, "{client}");
        assert_eq!(client["process"]["comm"], "tcp-client");
        assert_eq!(server["process"]["pid"], *server_pid, "{server}");
        assert_eq!(server["process"]["comm"], "tcp-server");
        for (rec, kernel_count) in [client, server].into_iter().zip(retransmits) {
            assert_eq!(rec["owner_known"], true);
            assert_eq!(rec["local_addr"], *addr);
            assert_eq!(rec["remote_addr"], *addr);
            // Loopback rarely retransmits, but a starved machine can: what the kernel says.
            assert_eq!(rec["retransmits"], *kernel_count, "{rec}");
            let duration = Duration::from_nanos(rec["duration_ns"].as_u64().unwrap());
            // The connection lives inside the client's run (plus scheduling slack).
            assert!(
                duration > Duration::ZERO && duration <= *elapsed + Duration::from_millis(50),
                "{addr}: duration {duration:?} vs client run {elapsed:?}"
            );
            assert!(rec["srtt_us"].as_u64().unwrap() > 0);
        }
        assert_eq!(client["remote_port"], *port);
        assert_eq!(server["local_port"], *port);
        assert_eq!(client["local_port"], server["remote_port"]);
        // bytes_sent counts retransmitted bytes again; bytes_acked never does.
        for (rec, sent, kernel_count) in [
            (client, SENT, retransmits[0]),
            (server, REPLY, retransmits[1]),
        ] {
            // The kernel's bytes_acked also counts the SYN and the FIN (a sequence number each).
            let acked = rec["bytes_acked"].as_u64().unwrap() as usize;
            assert!((sent..=sent + 2).contains(&acked), "{rec}");
            let bytes_sent = rec["bytes_sent"].as_u64().unwrap() as usize;
            match kernel_count {
                0 => assert_eq!(bytes_sent, sent, "{rec}"),
                _ => assert!(bytes_sent > sent, "{rec}"),
            }
        }
        assert_eq!(client["bytes_received"], REPLY);
        assert_eq!(server["bytes_received"], SENT);
        let v4 = tcp_closes(&filtered.events(), *port);
        assert_eq!(
            v4.len(),
            if *addr == "::1" { 0 } else { 2 },
            "--remote: {v4:#?}"
        );
    }
    let (_, dropped, _) = done.counters("tcp_close");
    assert_eq!(dropped, 0);
}

// ---------------------------------------------------------------------------------------
// osprey flows

#[test]
fn flows_count_udp_tcp_and_ping_exactly_in_both_directions() {
    if !bpf_available("flows_exact") {
        return;
    }
    let _serial = serial();
    let net = NetPair::new();
    let on_a = net.flows_json(&net.a, &net.va);
    let on_b = net.flows_json(&net.b, &net.vb);
    assert!(net.xdp_attached(&net.a, &net.va));

    // UDP: 7 x 200 bytes a -> b, 5 x 300 bytes b -> a; pings: 4 each way family.
    const TCP_BYTES: usize = 300_000;
    const TCP_REPLY: usize = 1_000;
    for (dst_b, dst_a) in [("10.201.0.2", "10.201.0.1"), ("fd77::2", "fd77::1")] {
        net.run(&net.a, &["udp-send", dst_b, "5001", "7", "200"]);
        net.run(&net.b, &["udp-send", dst_a, "5002", "5", "300"]);
        net.run(&net.a, &["ping", dst_b, "4"]);
        let (mut server, port) = tcp_server(Some(&net.b), dst_b, TCP_REPLY, None);
        let got = net.run(
            &net.a,
            &["tcp-send", dst_b, &port.to_string(), &TCP_BYTES.to_string()],
        );
        assert_eq!(transfer(&got).0, TCP_REPLY);
        assert!(server.wait().unwrap().success());
    }
    let done_a = on_a.stop();
    let done_b = on_b.stop();
    assert!(done_a.status.success(), "{}", done_a.stderr);
    assert!(done_b.status.success(), "{}", done_b.stderr);
    let flows_a = flow_records(&done_a.events());
    let flows_b = flow_records(&done_b.events());

    for (v, a_addr, b_addr, l3) in [
        (4, "10.201.0.1", "10.201.0.2", 20u64),
        (6, "fd77::1", "fd77::2", 40),
    ] {
        let l2 = 14 + l3; // bytes are L2: Ethernet header included
        let is = |f: &Value, dir: &str, proto: &str, src: &str, dst: &str| {
            f["direction"] == dir
                && f["protocol"] == proto
                && f["source_address"] == src
                && f["destination_address"] == dst
                && f["ip_version"] == v
        };
        // UDP a -> b: egress on a, ingress on b, 7 datagrams of 200 bytes.
        let out = one_flow(&flows_a, "udp a->b", |f| {
            is(f, "egress", "udp", a_addr, b_addr) && f["destination_port"] == 5001
        });
        assert_eq!(out["packets"], 7);
        assert_eq!(out["octets"], 7 * (l2 + 8 + 200));
        assert_eq!(out["payload_octets"], 7 * 200);
        let inn = one_flow(&flows_b, "udp a->b at b", |f| {
            is(f, "ingress", "udp", a_addr, b_addr) && f["destination_port"] == 5001
        });
        assert_eq!(
            (&inn["packets"], &inn["octets"]),
            (&out["packets"], &out["octets"])
        );
        // UDP b -> a: ingress on a.
        let back = one_flow(&flows_a, "udp b->a", |f| {
            is(f, "ingress", "udp", b_addr, a_addr) && f["destination_port"] == 5002
        });
        assert_eq!(back["packets"], 5);
        assert_eq!(back["octets"], 5 * (l2 + 8 + 300));
        // Pings: 4 requests out, 4 replies in, 64 bytes of ICMP each.
        let (req, rep) = if v == 4 { (8, 0) } else { (128, 129) };
        let icmp = if v == 4 { "icmp" } else { "icmpv6" };
        for (what, ty, dir, src, dst) in [
            ("echo requests", req, "egress", a_addr, b_addr),
            ("echo replies", rep, "ingress", b_addr, a_addr),
        ] {
            let f = one_flow(&flows_a, what, |f| {
                f["icmp_type"] == ty && is(f, dir, icmp, src, dst)
            });
            assert_eq!(f["packets"], 4, "{what}");
            assert_eq!(f["octets"], 4 * (l2 + 64), "{what}");
        }
        // TCP: exact payload each way; what a sends equals what b receives, packet for packet.
        for (src, dst, payload) in [(a_addr, b_addr, TCP_BYTES), (b_addr, a_addr, TCP_REPLY)] {
            let sent_by_a = src == a_addr;
            let (sender, receiver) = if sent_by_a {
                (&flows_a, &flows_b)
            } else {
                (&flows_b, &flows_a)
            };
            let out = one_flow(sender, "tcp out", |f| is(f, "egress", "tcp", src, dst));
            let inn = one_flow(receiver, "tcp in", |f| is(f, "ingress", "tcp", src, dst));
            assert_eq!(out["payload_octets"], payload, "{out}");
            assert_eq!(
                (&inn["packets"], &inn["octets"], &inn["payload_octets"]),
                (&out["packets"], &out["octets"], &out["payload_octets"])
            );
            let flags = out["tcp_flags_text"].as_str().unwrap();
            assert!(
                flags.contains("SYN") && flags.contains("FIN") && flags.contains("ACK"),
                "{flags}"
            );
            // Each packet carries at least Ethernet + IP + a 20-byte TCP header.
            let headers = out["octets"].as_u64().unwrap() - payload as u64;
            assert!(headers >= out["packets"].as_u64().unwrap() * (l2 + 20));
        }
    }
    for done in [&done_a, &done_b] {
        let s = flows_summary(done);
        assert_eq!(s["evicted"], 0, "{s}");
        assert_eq!(s["insert_failed"], 0);
        assert_eq!(s["inserted"], s["exported"], "{s}");
    }
    net.assert_nothing_attached(); // detached on exit
}

#[test]
fn flows_idle_timeout_exports_and_full_table_counts_evictions() {
    if !bpf_available("flows_idle_lru") {
        return;
    }
    let _serial = serial();
    let net = NetPair::new();
    let idle = Tracer::start_in_netns(
        &net.a,
        &[
            "flows",
            "-i",
            &net.va,
            "-o",
            "json",
            "--idle-timeout",
            "1",
            "--interval",
            "0.2",
        ],
    );
    net.run(&net.a, &["udp-send", "10.201.0.2", "6001", "3", "100"]);
    idle.wait_lines(Duration::from_secs(10), 1, |l| {
        serde_json::from_str::<Value>(l).is_ok_and(|f| f["destination_port"] == 6001)
    });
    let done = idle.stop();
    let flows = flow_records(&done.events());
    let f = one_flow(&flows, "idle udp", |f| f["destination_port"] == 6001);
    assert_eq!(f["flow_end_reason"], "idle_timeout", "{f}");
    assert_eq!(f["packets"], 3);

    let lru = Tracer::start_in_netns(
        &net.a,
        &["flows", "-i", &net.va, "-o", "json", "--max-flows", "4"],
    );
    for port in 7000..7040 {
        net.run(
            &net.a,
            &["udp-send", "10.201.0.2", &port.to_string(), "1", "10"],
        );
    }
    let done = lru.stop();
    let s = flows_summary(&done);
    let exported = flow_records(&done.events()).len() as u64;
    assert_eq!(s["exported"], exported);
    let (inserted, evicted) = (
        s["inserted"].as_u64().unwrap(),
        s["evicted"].as_u64().unwrap(),
    );
    assert!(inserted >= 40, "{s}");
    assert_eq!(inserted, exported + evicted, "{s}");
    assert!(evicted >= 36 && exported <= inserted - 36, "{s}");
    assert!(done.stderr.contains("evicted from the full flow table"));
}

#[test]
fn flows_refuses_unknown_interface_and_foreign_xdp() {
    if !bpf_available("flows_bad_input") {
        return;
    }
    let _serial = serial();
    let net = NetPair::new();
    let unknown = Command::new("ip")
        .args([
            "netns",
            "exec",
            &net.a,
            OSPREY,
            "flows",
            "-i",
            "nosuchif0",
            "--duration",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr)
        .contains("--interface nosuchif0: no such network interface"));

    let first = Tracer::start_in_netns(&net.a, &["flows", "-i", &net.va]);
    let second = Command::new("ip")
        .args([
            "netns",
            "exec",
            &net.a,
            OSPREY,
            "flows",
            "-i",
            &net.va,
            "--duration",
            "1",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{err}");
    assert!(
        err.contains("already has an XDP program that is not ours; refusing to replace it"),
        "{err}"
    );
    // The first one's program is untouched, and the refused one left nothing behind.
    assert!(net.xdp_attached(&net.a, &net.va));
    // (bpftool 7.1 lists XDP but not tcx links; the egress link is an fd link that dies
    // with the process that failed, so the XDP table is what can be left behind.)
    let listing = net.bpftool_net(&net.a);
    let xdp = listing.split("\ntc:").next().unwrap_or(&listing);
    assert_eq!(xdp.matches(" id ").count(), 1, "{listing}");
    // Before tcx (Linux 6.6) the first one's egress program is a tc clsact filter, listed too.
    assert!(listing.matches("flows_egress").count() <= 1, "{listing}");
    assert!(first.stop().status.success());
    net.assert_nothing_attached();
}

#[test]
fn tcp_retransmits_match_dropped_segments() {
    if !bpf_available("tcp_retransmits") {
        return;
    }
    let _serial = serial();
    // Loopback of a namespace of our own; bpf/test_drop.bpf.c drops the first 2 data
    // segments to port 4242 at ingress there (real loss: a drop at egress would only be a
    // local send failure, retried without counting as a retransmission).
    let net = NetPair::new();
    let object = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../osprey-bpf/objects/test_drop.bpf.o"
    );
    ip(&[
        "netns", "exec", &net.a, "tc", "qdisc", "add", "dev", "lo", "clsact",
    ]);
    ip(&[
        "netns",
        "exec",
        &net.a,
        "tc",
        "filter",
        "add",
        "dev",
        "lo",
        "ingress",
        "bpf",
        "da",
        "obj",
        object,
        "sec",
        "classifier",
    ]);
    let tracer = Tracer::start(&["tcp", "--output", "json", "--port", "4242"]);
    let mut server = in_netns(Some(&net.a), WORKLOAD.as_str())
        .env("TCP_SERVE_PORT", "4242")
        .args(["tcp-serve", "127.0.0.1", "500", "1000"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let client = in_netns(Some(&net.a), WORKLOAD.as_str())
        .env("TCP_SEND_KEEP_OPEN", "1")
        .args(["tcp-send", "127.0.0.1", "4242", "1000"])
        .output()
        .unwrap();
    assert_eq!(transfer(&String::from_utf8_lossy(&client.stdout)).0, 500);
    assert!(server.wait().unwrap().success());
    let done = tracer.stop();
    let closes = tcp_closes(&done.events(), 4242);
    assert_eq!(closes.len(), 2, "{closes:#?}");
    let client = closes.iter().find(|e| e["direction"] == "connect").unwrap();
    let server = closes.iter().find(|e| e["direction"] == "accept").unwrap();
    assert_eq!(client["retransmits"], 2, "{client}");
    assert_eq!(client["total_retrans"], 2, "{client}");
    assert_eq!(
        client["bytes_sent"], 3000,
        "payload bytes include the retransmissions"
    );
    assert_eq!(server["retransmits"], 0, "{server}");
    assert_eq!(server["bytes_received"], 1000);
}

#[test]
fn tcp_pid_filter_and_rtt_histogram() {
    if !bpf_available("tcp_pid_rtt_hist") {
        return;
    }
    let _serial = serial();
    // Three servers, one connection each: --pid keeps the first server's side only (the
    // owner is the accepting process even though the handshake's last step runs in softirq
    // while the client is current), and --rtt-hist counts only what the filter kept.
    const CONNECTIONS: usize = 3;
    let mut servers = Vec::new();
    for _ in 0..CONNECTIONS {
        servers.push(tcp_server(None, "127.0.0.1", 100, None));
    }
    let (first_server, _) = &servers[0];
    let server_pid = first_server.id();
    let tracer = Tracer::start(&[
        "tcp",
        "--output",
        "json",
        "--pid",
        &server_pid.to_string(),
        "--rtt-hist",
    ]);
    let ports: Vec<u16> = servers.iter().map(|(_, port)| *port).collect();
    for port in &ports {
        let out = Command::new(WORKLOAD)
            .args(["tcp-send", "127.0.0.1", &port.to_string(), "1000"])
            .output()
            .unwrap();
        assert_eq!(transfer(&String::from_utf8_lossy(&out.stdout)).0, 100);
    }
    for (mut server, _) in servers {
        assert!(server.wait().unwrap().success());
    }
    let done = tracer.stop();
    let events = done.events();
    let closes: Vec<&Value> = events.iter().filter(|e| e["kind"] == "tcp_close").collect();
    assert_eq!(
        closes.len(),
        1,
        "only the first server's connection: {closes:#?}"
    );
    assert_eq!(closes[0]["process"]["pid"], server_pid);
    assert_eq!(closes[0]["direction"], "accept");
    assert_eq!(closes[0]["local_port"], ports[0]);
    let histograms: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "tcp_rtt_histogram")
        .collect();
    assert_eq!(histograms.len(), 1, "{histograms:#?}");
    assert_eq!(histograms[0]["remote_addr"], "127.0.0.1");
    let counted: u64 = histograms[0]["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["connections"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, 1, "the filter applies to the histogram too");
}
