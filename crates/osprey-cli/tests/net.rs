//! Real-BPF tests of `osprey tcp` and `osprey flows`. Traffic stays on loopback or inside
//! network namespaces these tests create and always delete (names unique per run).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// `osprey-workload tcp-serve ADDR REPLY` started (optionally inside a namespace); its port.
fn tcp_server(netns: Option<&str>, addr: &str, reply: usize, expect: Option<usize>) -> (Child, u16) {
    let mut cmd = in_netns(netns, WORKLOAD);
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
        let (mut server, port) = tcp_server(None, addr, REPLY, None);
        let started = Instant::now();
        let client = Command::new(WORKLOAD)
            .args(["tcp-send", addr, &port.to_string(), &SENT.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let client_pid = client.id();
        let out = client.wait_with_output().unwrap();
        let elapsed = started.elapsed();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), REPLY.to_string());
        assert!(server.wait().unwrap().success());
        runs.push((addr, port, server.id(), client_pid, elapsed));
    }
    let done = tracer.stop();
    let filtered = v4_only.stop();
    assert!(done.status.success(), "{}", done.stderr);
    let events = done.events();
    for (addr, port, server_pid, client_pid, elapsed) in &runs {
        let closes = tcp_closes(&events, *port);
        assert_eq!(closes.len(), 2, "{addr}: {closes:#?}");
        let client = closes.iter().find(|e| e["direction"] == "connect").unwrap();
        let server = closes.iter().find(|e| e["direction"] == "accept").unwrap();
        assert_eq!(client["process"]["pid"], *client_pid, "{client}");
        assert_eq!(client["process"]["comm"], "tcp-client");
        assert_eq!(server["process"]["pid"], *server_pid, "{server}");
        assert_eq!(server["process"]["comm"], "tcp-server");
        for rec in [client, server] {
            assert_eq!(rec["owner_known"], true);
            assert_eq!(rec["local_addr"], *addr);
            assert_eq!(rec["remote_addr"], *addr);
            assert_eq!(rec["retransmits"], 0);
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
        assert_eq!(client["bytes_sent"], SENT);
        assert_eq!(client["bytes_received"], REPLY);
        assert_eq!(server["bytes_sent"], REPLY);
        assert_eq!(server["bytes_received"], SENT);
        let v4 = tcp_closes(&filtered.events(), *port);
        assert_eq!(v4.len(), if *addr == "::1" { 0 } else { 2 }, "--remote: {v4:#?}");
    }
    let (_, dropped, _) = done.counters("tcp_close");
    assert_eq!(dropped, 0);
}
