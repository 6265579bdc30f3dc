//! The tc clsact qdisc that the egress fallback (kernels without tcx) needs: the loader
//! adds it where it is missing, and the loaded capability removes it again when dropped, or
//! an interface keeps a qdisc it did not have. aya can add one but not delete it; deleting
//! is one rtnetlink request.

const RTM_DELQDISC: u16 = 37;
const TC_H_CLSACT: u32 = 0xFFFF_FFF1;
const CLSACT_HANDLE: u32 = 0xFFFF_0000;

/// `tc qdisc del dev IF clsact`, over rtnetlink.
pub fn delete_clsact(ifname: &str) -> std::io::Result<()> {
    let name = std::ffi::CString::new(ifname)?;
    // SAFETY: valid NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[repr(C)]
    struct Request {
        header: libc::nlmsghdr,
        // struct tcmsg
        family: u8,
        _pad1: u8,
        _pad2: u16,
        ifindex: i32,
        handle: u32,
        parent: u32,
        info: u32,
    }
    let request = Request {
        header: libc::nlmsghdr {
            nlmsg_len: std::mem::size_of::<Request>() as u32,
            nlmsg_type: RTM_DELQDISC,
            nlmsg_flags: (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16,
            nlmsg_seq: 1,
            nlmsg_pid: 0,
        },
        family: libc::AF_UNSPEC as u8,
        _pad1: 0,
        _pad2: 0,
        ifindex: ifindex as i32,
        handle: CLSACT_HANDLE,
        parent: TC_H_CLSACT,
        info: 0,
    };
    // SAFETY: a netlink socket closed below; the request and reply buffers outlive the
    // calls that use them.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        );
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let sent = libc::send(
            fd,
            (&request as *const Request).cast(),
            std::mem::size_of::<Request>(),
            0,
        );
        let mut reply = [0u8; 256];
        let got = if sent < 0 {
            -1
        } else {
            libc::recv(fd, reply.as_mut_ptr().cast(), reply.len(), 0)
        };
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if got < 0 {
            return Err(err);
        }
        // The ack is an NLMSG_ERROR whose error field (after the 16-byte header) is 0.
        let code = i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]);
        if code != 0 {
            return Err(std::io::Error::from_raw_os_error(-code));
        }
    }
    Ok(())
}
