/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * TCP connection lifecycle from inet_sock_set_state. The owner of a connection is taken
 * where it is certain, in process context: at connect (CLOSE -> SYN_SENT runs in the
 * connecting task) and at accept() exit (the accepting task). Later transitions often run
 * in softirq context on whatever task happens to be current, so they use the recorded
 * owner, never the current task.
 */
#include "osprey.h"

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define NR_ACCEPT 43
#define NR_ACCEPT4 288

const volatile __u8 emit_states = 0; /* --states: also stream every transition */

/* Keep the event structs of this capability in the object's BTF for the layout test. */
struct osprey_tcp_state *const osprey_abi_tcp_state = 0;
struct osprey_tcp_close *const osprey_abi_tcp_close = 0;

struct tcp_conn {
	struct osprey_event_header owner; /* header template taken in process context */
	struct osprey_tcp_endpoints ep; /* last seen with a local port: it is gone at CLOSE */
	__u64 start_ns;
	__u32 retransmits;
	__u8 owner_known;
	__u8 active;
	__u8 ep_known;
	__u8 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct tcp_conn);
} tcp_conns SEC(".maps");

static __always_inline void fill_endpoints(struct osprey_tcp_endpoints *ep, const struct sock *sk,
					   __u16 family, __u8 active, __u8 owner_known)
{
	ep->family = family;
	ep->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	ep->rport = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
	ep->active = active;
	ep->owner_known = owner_known;
	__builtin_memset(ep->laddr, 0, sizeof(ep->laddr));
	__builtin_memset(ep->raddr, 0, sizeof(ep->raddr));
	if (family == AF_INET) {
		bpf_core_read(ep->laddr, 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_core_read(ep->raddr, 4, &sk->__sk_common.skc_daddr);
	} else {
		bpf_core_read(ep->laddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(ep->raddr, 16, &sk->__sk_common.skc_v6_daddr);
	}
}

/* The header of an event about a connection: its owner when known, else pid 0. */
static __always_inline void owner_header(struct osprey_event_header *h, struct tcp_conn *c,
					 __u32 kind)
{
	if (c && c->owner_known)
		*h = c->owner;
	else
		__builtin_memset(h, 0, sizeof(*h));
	h->kind = kind;
	h->ts_boot_ns = bpf_ktime_get_boot_ns();
}

static __always_inline void emit_close(const struct sock *sk, __u16 family, int old,
				       struct tcp_conn *c)
{
	struct osprey_tcp_close ev;
	__builtin_memset(&ev, 0, sizeof(ev));
	owner_header(&ev.hdr, c, OSPREY_KIND_TCP_CLOSE);
	ev.sock = (__u64)sk;
	if (c && c->ep_known) {
		ev.ep = c->ep;
		ev.ep.owner_known = c->owner_known;
	} else {
		fill_endpoints(&ev.ep, sk, family, c ? c->active : 0, c ? c->owner_known : 0);
	}
	ev.start_boot_ns = c ? c->start_ns : 0;
	ev.retransmits = c ? c->retransmits : 0;
	ev.last_state = old;

	const struct tcp_sock *tp = (const struct tcp_sock *)sk;
	if (bpf_core_field_exists(tp->bytes_sent))
		ev.bytes_sent = BPF_CORE_READ(tp, bytes_sent);
	ev.bytes_acked = BPF_CORE_READ(tp, bytes_acked);
	ev.bytes_received = BPF_CORE_READ(tp, bytes_received);
	/* A received FIN advances rcv_nxt, so the kernel counts it as a byte; report payload.
	 * SOCK_DONE is set by tcp_fin() exactly when the peer's FIN arrived. */
	__u64 sk_flags = BPF_CORE_READ(sk, __sk_common.skc_flags);
	if ((sk_flags & (1ULL << bpf_core_enum_value(enum sock_flags, SOCK_DONE))) &&
	    ev.bytes_received)
		ev.bytes_received--;
	ev.segs_out = BPF_CORE_READ(tp, segs_out);
	ev.segs_in = BPF_CORE_READ(tp, segs_in);
	ev.data_segs_out = BPF_CORE_READ(tp, data_segs_out);
	ev.data_segs_in = BPF_CORE_READ(tp, data_segs_in);
	ev.total_retrans = BPF_CORE_READ(tp, total_retrans);
	ev.srtt_us = BPF_CORE_READ(tp, srtt_us) >> 3; /* stored as 8 * srtt */
	ev.min_rtt_us = BPF_CORE_READ(tp, rtt_min.s[0].v);
	osprey_emit(&ev, sizeof(ev));
}

static __always_inline int on_state(const struct sock *sk, int old, int new)
{
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return 0;
	__u64 key = (__u64)sk;
	struct tcp_conn *c = bpf_map_lookup_elem(&tcp_conns, &key);

	if (!c && (new == TCP_SYN_SENT || new == TCP_SYN_RECV)) {
		struct tcp_conn fresh = {};
		fresh.start_ns = bpf_ktime_get_boot_ns();
		if (new == TCP_SYN_SENT) {
			/* connect(): the only transition certain to run in the owner's context */
			struct task_struct *task = (struct task_struct *)bpf_get_current_task();
			osprey_fill_header(&fresh.owner, 0, task);
			fresh.owner_known = 1;
			fresh.active = 1;
		}
		bpf_map_update_elem(&tcp_conns, &key, &fresh, BPF_ANY);
		c = bpf_map_lookup_elem(&tcp_conns, &key);
	}

	if (c && new != TCP_CLOSE && BPF_CORE_READ(sk, __sk_common.skc_num)) {
		fill_endpoints(&c->ep, sk, family, c->active, c->owner_known);
		c->ep_known = 1;
	}

	if (emit_states) {
		struct osprey_tcp_state ev;
		__builtin_memset(&ev, 0, sizeof(ev));
		owner_header(&ev.hdr, c, OSPREY_KIND_TCP_STATE);
		ev.sock = key;
		fill_endpoints(&ev.ep, sk, family, c ? c->active : 0, c ? c->owner_known : 0);
		ev.old_state = old;
		ev.new_state = new;
		osprey_emit(&ev, sizeof(ev));
	}

	/* A listener's own close is not a connection. */
	if (new == TCP_CLOSE && old != TCP_LISTEN) {
		emit_close(sk, family, old, c);
		if (c)
			bpf_map_delete_elem(&tcp_conns, &key);
	}
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tcp_state_btf, const struct sock *sk, int old, int new)
{
	return on_state(sk, old, new);
}

SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(tcp_state_raw, const struct sock *sk, int old, int new)
{
	return on_state(sk, old, new);
}

SEC("tracepoint/sock/inet_sock_set_state")
int tcp_state_tp(struct trace_event_raw_inet_sock_set_state *ctx)
{
	return on_state((const struct sock *)ctx->skaddr, ctx->oldstate, ctx->newstate);
}

static __always_inline int on_retransmit(const struct sock *sk)
{
	__u64 key = (__u64)sk;
	struct tcp_conn *c = bpf_map_lookup_elem(&tcp_conns, &key);
	if (c)
		__sync_fetch_and_add(&c->retransmits, 1);
	return 0;
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tcp_retransmit_btf, const struct sock *sk)
{
	return on_retransmit(sk);
}

SEC("raw_tp/tcp_retransmit_skb")
int BPF_PROG(tcp_retransmit_raw, const struct sock *sk)
{
	return on_retransmit(sk);
}

SEC("tracepoint/tcp/tcp_retransmit_skb")
int tcp_retransmit_tp(struct trace_event_raw_tcp_retransmit_skb *ctx)
{
	return on_retransmit((const struct sock *)ctx->skaddr);
}

/* accept()/accept4() exit: the accepting task owns the connection from now on. */
static __always_inline int on_accept_exit(struct pt_regs *regs, long ret)
{
	long nr = BPF_CORE_READ(regs, orig_ax);
	if ((nr != NR_ACCEPT && nr != NR_ACCEPT4) || ret < 0)
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct file *f = osprey_fd_file(task, ret);
	if (!f)
		return 0;
	struct socket *sock = BPF_CORE_READ(f, private_data);
	struct sock *sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return 0;
	__u64 key = (__u64)sk;
	struct tcp_conn *c = bpf_map_lookup_elem(&tcp_conns, &key);
	if (!c) {
		if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
			return 0;
		/* established before we attached: owner known, start not */
		struct tcp_conn fresh = {};
		bpf_map_update_elem(&tcp_conns, &key, &fresh, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&tcp_conns, &key);
		if (!c)
			return 0;
	}
	osprey_fill_header(&c->owner, 0, task);
	c->owner_known = 1;
	return 0;
}

OSPREY_SYS_EXIT_PROGS(tcp_accept, on_accept_exit)
