//! Network workloads: TCP server/client with exact byte counts, UDP sender/receiver, ping
//! (raw ICMP/ICMPv6 echo), a UDP blaster and a connect/close loop for benchmarks.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

fn arg<T: std::str::FromStr>(args: &[OsString], i: usize) -> T {
    args.get(i)
        .and_then(|a| a.to_str())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| super::usage())
}

fn set_comm(name: &str) {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: PR_SET_NAME with a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr()) };
}

/// Runs the network workload `cmd`; false when `cmd` is not one of them.
pub fn run(cmd: &str, args: &[OsString]) -> bool {
    match cmd {
        "tcp-serve" => tcp_serve(arg(args, 0), arg(args, 1), args.get(2)),
        "tcp-send" => tcp_send(SocketAddr::new(arg(args, 0), arg(args, 1)), arg(args, 2)),
        "udp-send" => {
            let to = SocketAddr::new(arg(args, 0), arg(args, 1));
            let sock = bind_any(to);
            if to.is_ipv6() && std::env::var_os("UDP_SEND_DSTOPTS").is_some() {
                add_destination_options_header(&sock);
            }
            let payload = vec![0x5au8; arg(args, 3)];
            for _ in 0..arg::<u64>(args, 2) {
                sock.send_to(&payload, to).expect("send");
            }
        }
        "udp-recv" => {
            let sock = UdpSocket::bind(SocketAddr::new(arg(args, 0), arg(args, 1))).expect("bind");
            println!("ready");
            let _ = std::io::stdout().flush();
            let mut buf = vec![0u8; 65536];
            let mut total = 0;
            for _ in 0..arg::<u64>(args, 2) {
                total += sock.recv(&mut buf).expect("recv");
            }
            println!("{total}");
        }
        "ping" => ping(arg(args, 0), arg(args, 1)),
        "udp-blast" => {
            let to = SocketAddr::new(arg(args, 0), arg(args, 1));
            let sock = bind_any(to);
            let payload = vec![0u8; arg(args, 3)];
            let secs: f64 = arg(args, 2);
            let start = Instant::now();
            let cpu_start = process_cpu_ns();
            let mut sent = 0u64;
            while start.elapsed().as_secs_f64() < secs {
                for _ in 0..256 {
                    if sock.send_to(&payload, to).is_ok() {
                        sent += 1;
                    }
                }
            }
            // Packets/s by the wall clock, and CPU ns per packet: the receive path runs in
            // softirq on the sender's CPU, so its cost shows in this process's CPU time
            // too, which (unlike the wall clock) other busy processes on the machine do not
            // inflate.
            let cpu_ns = process_cpu_ns() - cpu_start;
            println!(
                "{:.0} {:.1}",
                sent as f64 / start.elapsed().as_secs_f64(),
                cpu_ns as f64 / sent.max(1) as f64
            );
        }
        "connect-loop" => {
            let to = SocketAddr::new(arg(args, 0), arg(args, 1));
            let count: u64 = arg(args, 2);
            let start = Instant::now();
            let cpu_start = process_cpu_ns();
            for _ in 0..count {
                let conn = TcpStream::connect(to).expect("connect");
                // Close with RST: no TIME_WAIT pile-up to slow later rounds' port search.
                let linger = libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                };
                // SAFETY: valid socket fd and option value.
                unsafe {
                    libc::setsockopt(
                        std::os::fd::AsRawFd::as_raw_fd(&conn),
                        libc::SOL_SOCKET,
                        libc::SO_LINGER,
                        (&linger as *const libc::linger).cast(),
                        std::mem::size_of::<libc::linger>() as u32,
                    )
                };
                drop(conn);
            }
            // Wall ns per connection, then this process's CPU ns per connection (loopback
            // runs the peer's softirq work here too; a busy machine inflates only the first).
            println!(
                "{:.0} {:.0}",
                start.elapsed().as_nanos() as f64 / count as f64,
                (process_cpu_ns() - cpu_start) as f64 / count as f64
            );
        }
        "tcp-sink" => {
            // accept and close forever (for connect-loop); stops when stdin closes
            let listener =
                TcpListener::bind(SocketAddr::new(arg(args, 0), arg(args, 1))).expect("bind");
            // A deep accept queue: when this process waits for a CPU, connections queue up
            // instead of overflowing into 1-second SYN retransmits that swamp the average.
            // SAFETY: listen(2) again on our listening socket only changes its backlog.
            unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&listener), 4096) };
            std::thread::spawn(move || {
                for c in listener.incoming() {
                    drop(c);
                }
            });
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
        }
        "vlan-udp-send" => {
            let (vlan, src, dst): (u16, Ipv4Addr, Ipv4Addr) =
                (arg(args, 1), arg(args, 2), arg(args, 3));
            let frame = vlan_udp_frame(vlan, src, dst, arg(args, 4), arg(args, 6));
            send_frames(&arg::<String>(args, 0), &frame, arg(args, 5));
        }
        _ => return false,
    }
    true
}

/// Every datagram of `sock` carries an 8-byte IPv6 Destination Options header (one PadN
/// option), so tests see an extension header between IPv6 and UDP.
fn add_destination_options_header(sock: &UdpSocket) {
    // next header (the kernel fills it), length 0 (= 8 bytes), PadN with 4 bytes of padding
    let header = [0u8, 0, 1, 4, 0, 0, 0, 0];
    // SAFETY: valid socket fd and buffer.
    let r = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(sock),
            libc::IPPROTO_IPV6,
            libc::IPV6_DSTOPTS,
            header.as_ptr().cast(),
            header.len() as u32,
        )
    };
    assert_eq!(r, 0, "IPV6_DSTOPTS: {}", std::io::Error::last_os_error());
}

/// An 802.1Q-tagged IPv4/UDP frame to the broadcast MAC with `size` payload bytes.
fn vlan_udp_frame(vlan: u16, src: Ipv4Addr, dst: Ipv4Addr, port: u16, size: usize) -> Vec<u8> {
    let mut f = vec![0xffu8; 6]; // destination MAC: broadcast
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f.extend_from_slice(&0x8100u16.to_be_bytes());
    f.extend_from_slice(&(vlan & 0x0fff).to_be_bytes());
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let ip_start = f.len();
    let total = (20 + 8 + size) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]); // id, DF, ttl, UDP, checksum
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    let c = checksum(&f[ip_start..]);
    f[ip_start + 10..ip_start + 12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&port.to_be_bytes());
    f.extend_from_slice(&((8 + size) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]); // no UDP checksum (allowed over IPv4)
    f.resize(f.len() + size, 0x5a);
    f
}

/// Writes `frame` `count` times on `ifname` through a packet socket (through tc egress, as
/// any sent packet).
fn send_frames(ifname: &str, frame: &[u8], count: u64) {
    let name = std::ffi::CString::new(ifname).unwrap();
    // SAFETY: valid NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert!(ifindex != 0, "no interface {ifname}");
    // SAFETY: plain socket call; checked below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    assert!(
        fd >= 0,
        "packet socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: all-zero is a valid sockaddr_ll; the fields set are its address.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_ifindex = ifindex as i32;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&frame[..6]);
    for _ in 0..count {
        // SAFETY: valid fd, buffer and address.
        let sent = unsafe {
            libc::sendto(
                fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&to as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(
            sent,
            frame.len() as isize,
            "{}",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: our fd.
    unsafe { libc::close(fd) };
}

/// CPU time of this process (user + system, softirq work it happened to run included).
fn process_cpu_ns() -> u64 {
    // SAFETY: all-zero is a valid timespec; clock_gettime fills it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid clock id and pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn bind_any(to: SocketAddr) -> UdpSocket {
    let any: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    UdpSocket::bind(any).expect("bind")
}

fn tcp_serve(addr: IpAddr, reply: usize, expect: Option<&OsString>) {
    set_comm("tcp-server");
    let port = std::env::var("TCP_SERVE_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let listener = TcpListener::bind(SocketAddr::new(addr, port)).expect("bind");
    println!("{}", listener.local_addr().unwrap().port());
    let _ = std::io::stdout().flush();
    let (mut conn, _) = listener.accept().expect("accept");
    let expect: Option<usize> = expect.and_then(|e| e.to_str()).and_then(|e| e.parse().ok());
    let mut buf = vec![0u8; 65536];
    let mut got = 0;
    while expect.is_none_or(|e| got < e) {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => panic!("read: {e}"),
        }
    }
    conn.write_all(&vec![0x42u8; reply]).expect("reply");
    // Our FIN, then the client's: once both are through, nothing of ours is retransmitted.
    conn.shutdown(std::net::Shutdown::Write).expect("shutdown");
    while conn.read(&mut buf).is_ok_and(|n| n > 0) {}
    println!("{got} {}", total_retransmits(&conn));
}

/// The kernel's count of segments this connection retransmitted (TCP_INFO).
fn total_retransmits(conn: &TcpStream) -> u32 {
    use std::os::fd::AsRawFd;
    // SAFETY: tcp_info is plain data; zeroed is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: a valid socket fd and a buffer of `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            conn.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    info.tcpi_total_retrans
}

fn tcp_send(to: SocketAddr, bytes: usize) {
    set_comm("tcp-client");
    let mut conn = TcpStream::connect(to).expect("connect");
    conn.write_all(&vec![0x41u8; bytes]).expect("send");
    if std::env::var_os("TCP_SEND_KEEP_OPEN").is_none() {
        conn.shutdown(std::net::Shutdown::Write).expect("shutdown");
    }
    let mut reply = Vec::new();
    conn.read_to_end(&mut reply).expect("read reply");
    // Everything sent is acknowledged by now (the server read to our FIN before replying).
    println!("{} {}", reply.len(), total_retransmits(&conn));
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Echo requests with 56 bytes of payload (like ping), one at a time.
fn ping(to: IpAddr, count: u16) {
    let (family, proto, request, reply) = match to {
        IpAddr::V4(_) => (libc::AF_INET, libc::IPPROTO_ICMP, 8u8, 0u8),
        IpAddr::V6(_) => (libc::AF_INET6, libc::IPPROTO_ICMPV6, 128u8, 129u8),
    };
    // SAFETY: plain socket call; checked below.
    let fd = unsafe { libc::socket(family, libc::SOCK_RAW, proto) };
    assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    let tv = libc::timeval {
        tv_sec: 2,
        tv_usec: 0,
    };
    // SAFETY: valid fd and option value.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    let (addr, len) = sockaddr(SocketAddr::new(to, 0));
    let id = std::process::id() as u16;
    for seq in 0..count {
        let mut pkt = vec![0u8; 64];
        pkt[0] = request;
        pkt[4..6].copy_from_slice(&id.to_be_bytes());
        pkt[6..8].copy_from_slice(&seq.to_be_bytes());
        if family == libc::AF_INET {
            let c = checksum(&pkt);
            pkt[2..4].copy_from_slice(&c.to_be_bytes());
        } // the kernel fills the ICMPv6 checksum of raw sockets
          // SAFETY: valid buffer and address.
        let sent = unsafe {
            libc::sendto(
                fd,
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&addr as *const libc::sockaddr_storage).cast(),
                len,
            )
        };
        assert_eq!(
            sent,
            pkt.len() as isize,
            "sendto: {}",
            std::io::Error::last_os_error()
        );
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            assert!(Instant::now() < deadline, "no echo reply for seq {seq}");
            let mut buf = [0u8; 1500];
            // SAFETY: valid buffer.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            assert!(n > 0, "recv: {}", std::io::Error::last_os_error());
            // raw IPv4 sockets deliver the IP header too
            let icmp = if family == libc::AF_INET {
                &buf[((buf[0] & 0xf) as usize * 4)..n as usize]
            } else {
                &buf[..n as usize]
            };
            if icmp[0] == reply && icmp[4..6] == id.to_be_bytes() && icmp[6..8] == seq.to_be_bytes()
            {
                break;
            }
        }
    }
    // SAFETY: our fd.
    unsafe { libc::close(fd) };
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as u16,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}
