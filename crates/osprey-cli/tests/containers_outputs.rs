//! Container context on the outputs built from more than one event: `osprey tcp` records of
//! a container's connections, `osprey syscalls` rows per container, and names that follow a
//! `podman rename`. Containers come from podman (tests/common/podman.rs) with
//! osprey-workload in their image; traffic stays on loopback.

mod agent_support;
mod common;
mod containers_support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Stdio;
use std::time::Duration;

use common::podman::Podman;
use common::*;
use containers_support::{container_of, saw};
use serde_json::Value;

/// The podman helper and the lock of tests that load BPF; `None` (a visible skip, a
/// failure under `OSPREY_REQUIRE_BPF=1`) without BPF or podman.
fn podman_for(test: &str) -> Option<(Podman, std::sync::MutexGuard<'static, ()>)> {
    if !bpf_available(test) {
        return None;
    }
    let podman = Podman::new(test)?;
    Some((podman, serial()))
}

/// A container on the host's network connects to a listener of this test on 127.0.0.1: the
/// connect record carries the container (id, name, image), the accept record the host; and
/// `--container` keeps only the container's.
#[test]
fn tcp_records_of_a_container_on_loopback() {
    let Some((podman, _serial)) = podman_for("tcp_records_of_a_container") else {
        return;
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port_number = listener.local_addr().unwrap().port();
    let port = port_number.to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });
    let (name, id) = podman.run("tcp", &["--network", "host"]);
    let all = Tracer::start(&["tcp", "--output", "json", "--port", &port]);
    let only = Tracer::start(&["tcp", "--output", "json", "--container", &name]);
    let to = format!("127.0.0.1:{port}");
    let connect = || {
        let o = podman.exec(&name, &["/bin/osprey-workload", "connect-try", &to]);
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "connected");
    };
    // The runtime's answer arrives in the background: connect until a record is named.
    let named = format!("\"name\":\"{name}\"");
    let was_named = (0..10).any(|_| {
        connect();
        saw(&all, Duration::from_secs(2), |l| {
            l.contains(&named) && l.contains("\"direction\":\"connect\"")
        })
    });
    assert!(was_named, "no tcp record named {name}");
    let (all, only) = (all.stop(), only.stop());
    let closes: Vec<Value> = all
        .events()
        .into_iter()
        .filter(|e| e["kind"] == "tcp_close")
        .collect();
    let connects: Vec<&Value> = closes
        .iter()
        .filter(|e| e["direction"] == "connect" && e["remote_port"] == port_number)
        .collect();
    assert!(!connects.is_empty(), "no connect record: {closes:#?}");
    for r in &connects {
        let c = container_of(r);
        assert_eq!(c["id"], id.as_str(), "{r}");
        assert_eq!(c["runtime"], "podman", "{r}");
        assert_eq!(r["process"]["comm"], "osprey-workload", "{r}");
    }
    let last = container_of(connects.last().unwrap());
    assert_eq!(
        (last["name"].as_str(), last["image"].as_str()),
        (Some(name.as_str()), Some(podman.image())),
        "{last}"
    );
    let accepts: Vec<&Value> = closes
        .iter()
        .filter(|e| e["direction"] == "accept" && e["local_port"] == port_number)
        .collect();
    assert!(!accepts.is_empty(), "no accept record: {closes:#?}");
    for r in &accepts {
        assert_eq!(container_of(r)["id"], "host", "this test accepted: {r}");
    }
    let filtered = only.events();
    assert!(
        filtered
            .iter()
            .any(|e| e["kind"] == "tcp_close" && e["remote_port"] == port_number),
        "--container kept none of its records"
    );
    for e in filtered.iter().filter(|e| e["kind"] == "tcp_close") {
        assert_eq!(container_of(e)["id"], id.as_str(), "--container: {e}");
    }
}

/// A network namespace of the test's own, removed at the end.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Self {
        let name = format!("osprey-{tag}-{}", std::process::id());
        let ip = |args: &[&str]| {
            let o = std::process::Command::new("ip")
                .args(args)
                .output()
                .unwrap();
            assert!(o.status.success(), "ip {args:?}: {o:?}");
        };
        ip(&["netns", "add", &name]);
        let ns = Netns(name);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"]);
        ns
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.0)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .output();
    }
}

/// Flow records on the `lo` of a network namespace a container shares: egress flows carry
/// the container of the sending socket (client and server are both in it), ingress flows
/// none. Osprey enters only the network namespace (`nsenter`), so it keeps the host's view
/// of cgroups.
#[test]
fn flow_records_of_a_container_egress() {
    let Some((podman, _serial)) = podman_for("flow_records_of_a_container") else {
        return;
    };
    let netns = Netns::new("flows");
    let (name, id) = podman.run("flows", &["--network", &format!("ns:{}", netns.path())]);
    let flows_in_netns = |output: &str| {
        let mut nsenter = std::process::Command::new("nsenter");
        nsenter.arg(format!("--net={}", netns.path())).arg(OSPREY);
        Tracer::start_command(
            nsenter,
            &["flows", "-i", "lo", "--output", output, "--interval", "0.2"],
            &[],
            "osprey: tracing ",
        )
    };
    // Connects from the container to its own listener until `flows` prints a line `seen`.
    let connect_until = |flows: &Tracer, seen: &dyn Fn(&str) -> bool| {
        (0..10).any(|_| {
            let server = podman.spawn_exec(&name, &["/bin/nc", "-l", "-p", "7000"]);
            eventually(Duration::from_secs(10), || {
                let o = podman.exec(
                    &name,
                    &["/bin/osprey-workload", "connect-try", "127.0.0.1:7000"],
                );
                let said = String::from_utf8_lossy(&o.stdout).trim().to_string();
                (said == "connected").then_some(()).ok_or(said)
            });
            let mut server = server;
            let _ = server.wait();
            // Exported once ended (FIN and a short grace) at the next scan.
            saw(flows, Duration::from_secs(3), seen)
        })
    };
    // The table names the container in its CONTAINER column.
    let table = flows_in_netns("table");
    let row_named = |l: &str| {
        let columns: Vec<&str> = l.split_whitespace().collect();
        columns.get(1) == Some(&name.as_str()) && l.contains(":7000")
    };
    assert!(
        connect_until(&table, &row_named),
        "no table row named {name}"
    );
    let table = table.stop();
    let header = String::from_utf8_lossy(&table.stdout);
    assert!(
        header.lines().any(|l| l.starts_with("END      CONTAINER ")),
        "{header}"
    );
    let flows = flows_in_netns("json");
    let named = format!("\"name\":\"{name}\"");
    let json_named = |l: &str| l.contains(&named) && l.contains("\"destination_port\":7000");
    assert!(
        connect_until(&flows, &json_named),
        "no flow record named {name}"
    );
    let records: Vec<Value> = flows
        .stop()
        .events()
        .into_iter()
        .filter(|e| {
            e["kind"] == "flow" && (e["destination_port"] == 7000 || e["source_port"] == 7000)
        })
        .collect();
    // Flows with a SYN: the client's and the server's sockets. (A connect that came before
    // the listener was refused by the kernel's own socket: its RST is the host's.)
    let egress: Vec<&Value> = records
        .iter()
        .filter(|e| e["direction"] == "egress" && e["tcp_flags"].as_u64().unwrap() & 2 != 0)
        .collect();
    assert!(egress.len() >= 2, "both ends' egress flows: {records:#?}");
    for e in &egress {
        assert_eq!(e["process"]["container"]["id"], id.as_str(), "{e}");
    }
    let last = &egress.last().unwrap()["process"]["container"];
    assert_eq!(
        (last["name"].as_str(), last["image"].as_str()),
        (Some(name.as_str()), Some(podman.image())),
        "{last}"
    );
    for e in records.iter().filter(|e| e["direction"] == "ingress") {
        assert!(e.get("process").is_none(), "ingress has no socket: {e}");
    }
}

/// `osprey syscalls` with a container running a known mix (5000 getppid, 3 failing
/// openat): the container's rows carry its id and name, per process and per container.
#[test]
fn syscall_rows_per_container() {
    let Some((podman, _serial)) = podman_for("syscall_rows_per_container") else {
        return;
    };
    let (name, id) = podman.run("syscalls", &[]);
    let by_container =
        Tracer::start(&["syscalls", "--output", "json", "--by", "container-syscall"]);
    let by_process = Tracer::start(&["syscalls", "--output", "json"]);
    let only_it = Tracer::start(&["syscalls", "--output", "json", "--container", &name]);
    let mut mix = podman
        .cmd()
        .args([
            "exec",
            "-i",
            &name,
            "/bin/osprey-workload",
            "syscall-mix",
            "5000",
            "3",
            "--hold",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(mix.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "done");
    // The process still lives (its container is read when the run ends).
    let (by_container, by_process, only_it) =
        (by_container.stop(), by_process.stop(), only_it.stop());
    let mut stdin = mix.stdin.take().unwrap();
    let _ = stdin.write_all(b"");
    drop(stdin);
    let _ = mix.wait();
    let rows = by_container.events();
    let row = |syscall: &str| {
        rows.iter()
            .find(|r| r["container"]["id"] == id.as_str() && r["syscall"] == syscall)
            .unwrap_or_else(|| panic!("no {syscall} row of {id}: {rows:#?}"))
    };
    let getppid = row("getppid");
    assert_eq!(getppid["container"]["name"], name.as_str(), "{getppid}");
    assert_eq!(getppid["count"], 5000, "{getppid}");
    assert!(getppid.get("pid").is_none(), "{getppid}");
    // The 3 of the mix, and the dynamic loader's and runc's own misses in the container.
    let openat = row("openat");
    assert!(openat["errnos"]["ENOENT"].as_u64() >= Some(3), "{openat}");
    assert!(
        rows.iter().any(|r| r["container"]["id"] == "host"),
        "host processes make syscalls too"
    );
    let mine: Vec<Value> = by_process
        .events()
        .into_iter()
        .filter(|r| r["syscall"] == "getppid" && r["count"] == 5000)
        .collect();
    assert_eq!(mine.len(), 1, "{mine:#?}");
    assert_eq!(mine[0]["comm"], "osprey-workload", "{}", mine[0]);
    assert_eq!(mine[0]["container"]["id"], id.as_str(), "{}", mine[0]);
    assert_eq!(mine[0]["container"]["name"], name.as_str(), "{}", mine[0]);
    // `--container NAME` keeps the container's processes only.
    let kept = only_it.events();
    assert!(
        kept.iter().all(|r| r["container"]["id"] == id.as_str()),
        "{kept:#?}"
    );
    assert!(
        kept.iter()
            .any(|r| r["syscall"] == "getppid" && r["count"] == 5000),
        "{kept:#?}"
    );
}

/// The agent's alerts by container: a default rule fires in a podman container and
/// `osprey_container_alerts_total` gets a series labelled with the container's name.
#[test]
fn agent_alert_metrics_name_the_container() {
    let Some((podman, _serial)) = podman_for("agent_alert_metrics_name_the_container") else {
        return;
    };
    let (name, _id) = podman.run("metrics", &[]);
    let cp = podman.exec(&name, &["/bin/cp", "/etc/passwd", "/etc/shadow"]);
    assert!(cp.status.success(), "{cp:?}");
    let a = agent_support::AgentRun::new("agent-container-metrics", "");
    let _agent = a.start();
    let series = format!(
        "osprey_container_alerts_total{{rule=\"credential_file_read\",container=\"{name}\",namespace=\"\"}}"
    );
    // The first alerts may come before the runtime's answer (the short id); read until the
    // name has its series.
    eventually(Duration::from_secs(20), || {
        let o = podman.exec(&name, &["/bin/osprey-workload", "open", "1", "/etc/shadow"]);
        assert!(o.status.success(), "{o:?}");
        let metrics = a.scrape();
        (agent_support::metric(&metrics, &series) >= 1.0)
            .then_some(())
            .ok_or(format!("{series} in\n{metrics}"))
    });
}

/// `podman rename` while Osprey runs: later events carry the new name (answers are
/// refreshed, here every second).
#[test]
fn a_renamed_container_gets_its_new_name() {
    let Some((podman, _serial)) = podman_for("a_renamed_container") else {
        return;
    };
    let (name, id) = podman.run("rename", &[]);
    let exec = Tracer::start_with_env(
        &["exec", "--output", "json"],
        &[("OSPREY_CONTAINER_REFRESH_SECS", "1")],
    );
    let cat = || {
        let o = podman.exec(&id, &["/bin/cat", "/etc/passwd"]);
        assert!(o.status.success(), "{o:?}");
    };
    let named = |exec: &Tracer, name: &str| {
        let quoted = format!("\"name\":\"{name}\"");
        // A refresh every second, asked on the lookup thread's next tick: a few seconds
        // at most, more under load.
        (0..30).any(|_| {
            cat();
            saw(exec, Duration::from_secs(1), |l| {
                l.contains(&quoted) && l.contains("\"comm\":\"cat\"")
            })
        })
    };
    assert!(named(&exec, &name), "never named {name}");
    let renamed = format!("{name}-renamed");
    let o = podman
        .cmd()
        .args(["rename", &name, &renamed])
        .output()
        .unwrap();
    assert!(o.status.success(), "podman rename: {o:?}");
    // The helper removes containers by their first name: rename it back at the end.
    struct Back<'a>(&'a Podman, &'a str, &'a str);
    impl Drop for Back<'_> {
        fn drop(&mut self) {
            let _ = self.0.cmd().args(["rename", self.2, self.1]).output();
        }
    }
    let _back = Back(&podman, &name, &renamed);
    assert!(named(&exec, &renamed), "never renamed to {renamed}");
    let events = exec.stop().events();
    let last = events
        .iter()
        .rev()
        .find(|e| e["kind"] == "exec" && container_of(e)["id"] == id.as_str())
        .unwrap();
    assert_eq!(container_of(last)["name"], renamed.as_str(), "{last}");
}

/// `osprey ARGS` twice: as given, and with `--container NAME`.
fn unfiltered_and_filtered(args: &[&str], name: &str) -> (Tracer, Tracer) {
    let filtered: Vec<&str> = args.iter().copied().chain(["--container", name]).collect();
    (Tracer::start(args), Tracer::start(&filtered))
}

/// The one JSON document a successful run printed on stdout.
fn document(done: Finished) -> Value {
    assert!(done.status.success(), "osprey failed: {}", done.stderr);
    serde_json::from_slice(&done.stdout).expect("one JSON document")
}

/// Starts `cmd` with its stdout piped and waits for its first line.
fn first_line_of(cmd: &mut std::process::Command) -> (std::process::Child, String) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line)
}

/// `osprey profile --container NAME`: osprey-workload spins in a container and on the host at
/// the same time. The filtered profile keeps the container's stacks only (the host spinner is
/// absent, the total is what is kept); the unfiltered one has both. The spinners exit before
/// the profiles end: their containers come from the cgroups read while they ran.
#[test]
fn profile_stacks_of_a_container_only() {
    let Some((podman, _serial)) = podman_for("profile_stacks_of_a_container_only") else {
        return;
    };
    let (name, id) = podman.run("profile", &[]);
    let (all, only) = unfiltered_and_filtered(&["profile", "--output", "json"], &name);
    let spin = |cmd: &mut std::process::Command| {
        let (child, line) = first_line_of(cmd.stdin(Stdio::null()));
        assert_eq!(line.trim(), "spinning");
        child
    };
    let mut host = spin(std::process::Command::new(WORKLOAD).args(["spin", "3"]));
    let mut inside = spin(
        podman
            .cmd()
            .args(["exec", &name, "/bin/osprey-workload", "spin", "3"]),
    );
    assert!(host.wait().unwrap().success());
    assert!(inside.wait().unwrap().success());
    let host_pid = u64::from(host.id());
    let (all, only) = (document(all.stop()), document(only.stop()));
    let stacks = |p: &Value| p["stacks"].as_array().unwrap().clone();
    let samples = |p: &Value, keep: &dyn Fn(&Value) -> bool| -> u64 {
        stacks(p)
            .iter()
            .filter(|s| keep(s))
            .map(|s| s["value"].as_u64().unwrap())
            .sum()
    };
    let in_it = |s: &Value| s["container"]["id"] == id.as_str();
    let its_spinner = |s: &Value| in_it(s) && s["comm"] == "osprey-workload";
    let host_spinner = |s: &Value| s["pid"] == host_pid;
    // 3 s at 99 Hz is about 300 samples on an idle CPU; a tenth is left for a loaded machine.
    let enough = 30;

    let kept = stacks(&only);
    assert!(kept.iter().all(in_it), "--container {name}: {kept:#?}");
    let spun = samples(&only, &its_spinner);
    assert!(spun >= enough, "{spun} samples of the container's spinner");
    assert_eq!(only["total"].as_u64(), Some(samples(&only, &|_| true)));
    assert_eq!(
        samples(&only, &host_spinner),
        0,
        "the host's spinner is left out"
    );
    let named = kept.iter().find(|s| its_spinner(s)).unwrap();
    assert_eq!(named["container"]["name"], name.as_str(), "{named}");
    assert!(
        only["command"].as_str().unwrap().contains(&name),
        "the title names the filter: {}",
        only["command"]
    );

    assert!(
        samples(&all, &its_spinner) >= enough,
        "unfiltered: the container's spinner"
    );
    assert!(
        samples(&all, &host_spinner) >= enough,
        "unfiltered: the host's spinner"
    );
    for s in stacks(&all).iter().filter(|s| host_spinner(s)) {
        assert!(s.get("container").is_none(), "a host process: {s}");
    }
    assert!(all["total"].as_u64() > only["total"].as_u64());
}

/// `osprey memory --container NAME`: osprey-workload faults 2000 fresh pages in a container
/// and on the host. The filtered report keeps the container's processes only, with totals of
/// what is kept; the unfiltered one has both, each process with its container. The faulters
/// exit before the reports are built: the container's comes from the cgroup read while it
/// ran, again once runc's child had exec'd it under its own name.
#[test]
fn memory_processes_of_a_container_only() {
    let Some((podman, _serial)) = podman_for("memory_processes_of_a_container_only") else {
        return;
    };
    let (name, id) = podman.run("memory", &[]);
    let (all, only) =
        unfiltered_and_filtered(&["memory", "--output", "json", "--top", "1000"], &name);
    // Each maps its pages, says where, and faults them at a line on stdin.
    let fault = |cmd: &mut std::process::Command| {
        let (child, line) = first_line_of(cmd.args(["fault-anon", "2000"]).stdin(Stdio::piped()));
        assert!(line.starts_with("0x"), "the mapping's range: {line}");
        child
    };
    let mut host = fault(&mut std::process::Command::new(WORKLOAD));
    let mut inside = fault(
        podman
            .cmd()
            .args(["exec", "-i", &name, "/bin/osprey-workload"]),
    );
    for child in [&mut host, &mut inside] {
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        assert!(child.wait().unwrap().success());
    }
    let host_pid = u64::from(host.id());
    let (all, only) = (document(all.stop()), document(only.stop()));
    let processes = |r: &Value| r["processes"].as_array().unwrap().clone();
    let in_it = |p: &Value| p["container"]["id"] == id.as_str();
    let its_faulter = |p: &Value| in_it(p) && p["comm"] == "osprey-workload";
    let minor = |p: &Value| p["minor"].as_u64().unwrap();

    let kept = processes(&only);
    assert!(kept.iter().all(in_it), "--container {name}: {kept:#?}");
    // pid, comm, container and faults of each process, for failure messages.
    let brief = |ps: &[Value]| {
        ps.iter()
            .map(|p| {
                format!(
                    "{} {} {} {}",
                    p["pid"], p["comm"], p["container"]["name"], p["minor"]
                )
            })
            .collect::<Vec<_>>()
    };
    let faulter = kept.iter().find(|p| its_faulter(p)).unwrap_or_else(|| {
        let every = brief(&processes(&all));
        panic!(
            "no faulter of {name}: kept {:#?}, all {every:#?}",
            brief(&kept)
        )
    });
    assert!(minor(faulter) >= 2000, "{faulter}");
    assert_eq!(faulter["container"]["name"], name.as_str(), "{faulter}");
    assert!(
        kept.iter().all(|p| p["pid"] != host_pid),
        "the host's faulter is left out"
    );
    assert_eq!(only["minor"].as_u64(), Some(kept.iter().map(minor).sum()));
    assert_eq!(only["process_count"].as_u64(), Some(kept.len() as u64));

    let every = processes(&all);
    assert!(every.iter().any(|p| its_faulter(p) && minor(p) >= 2000));
    let host = every
        .iter()
        .find(|p| p["pid"] == host_pid)
        .expect("the host's faulter");
    assert!(
        minor(host) >= 2000 && host.get("container").is_none(),
        "{host}"
    );
}
