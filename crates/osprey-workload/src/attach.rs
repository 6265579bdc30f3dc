//! `attach-pass OBJECT IF INGRESS EGRESS`: attaches the do-nothing programs of
//! bpf/test_pass.bpf.c to IF: on ingress XDP in native or generic mode, a tcx program
//! (`tcx`) or none; on egress tcx or none;
//! prints `attached`, waits for SIGINT or SIGTERM, then prints each program's run count and
//! run time (when BPF run-time stats are on). bench/net.sh uses it to measure what having
//! an XDP/tcx program attached costs by itself.

use std::ffi::OsString;

use aya::programs::{tc::TcAttachOptions, LinkOrder, SchedClassifier, TcAttachType, Xdp, XdpMode};
use aya::Ebpf;

fn text(args: &[OsString], i: usize) -> &str {
    args.get(i)
        .and_then(|a| a.to_str())
        .unwrap_or_else(|| super::usage())
}

/// Runs `cmd` when it is this module's; false otherwise.
pub fn run(cmd: &str, args: &[OsString]) -> bool {
    if cmd != "attach-pass" {
        return false;
    }
    let (object, interface) = (text(args, 0), text(args, 1));
    let (xdp_mode, tcx_ingress) = match text(args, 2) {
        "native" => (Some(XdpMode::Driver), false),
        "generic" => (Some(XdpMode::Skb), false),
        "tcx" => (None, true),
        "none" => (None, false),
        _ => super::usage(),
    };
    let tcx_egress = match text(args, 3) {
        "tcx" => true,
        "none" => false,
        _ => super::usage(),
    };
    let signals = block_stop_signals();
    let mut ebpf = Ebpf::load_file(object).expect("load object");
    let mut used = Vec::new();
    if let Some(mode) = xdp_mode {
        let p: &mut Xdp = ebpf.program_mut("pass_xdp").unwrap().try_into().unwrap();
        p.load().expect("load pass_xdp");
        p.attach(interface, mode).expect("attach XDP");
        used.push("pass_xdp");
    }
    if tcx_ingress || tcx_egress {
        let p: &mut SchedClassifier = ebpf.program_mut("pass_tc").unwrap().try_into().unwrap();
        p.load().expect("load pass_tc");
        for (wanted, direction) in [
            (tcx_ingress, TcAttachType::Ingress),
            (tcx_egress, TcAttachType::Egress),
        ] {
            if wanted {
                p.attach_with_options(
                    interface,
                    direction,
                    TcAttachOptions::TcxOrder(LinkOrder::default()),
                )
                .expect("attach tcx");
            }
        }
        used.push("pass_tc");
    }
    println!("attached");
    let mut signal = 0;
    // SAFETY: a valid, initialised signal set; the signals are blocked in this thread.
    unsafe { libc::sigwait(&signals, &mut signal) };
    for name in used {
        let info = ebpf.program(name).unwrap().info().expect("program info");
        println!(
            "{name} run_count {} run_time_ns {}",
            info.run_count(),
            info.run_time().as_nanos()
        );
    }
    true
}

fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: sigset operations on a local set, then blocking them for this thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}
