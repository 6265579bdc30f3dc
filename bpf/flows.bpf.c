/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Flow accounting: XDP on ingress, tcx (or tc clsact) on egress, one LRU flow table.
 * Packets are never changed or dropped. Bytes are L2 bytes (Ethernet header and VLAN
 * tags included, FCS excluded); a GSO packet at egress counts as the segments it becomes
 * on the wire, each with its own headers.
 */
#include "osprey.h"
#include <bpf/bpf_endian.h>

#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8
#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_ICMP 1
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_ICMPV6 58
#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_AUTH 51
#define NEXTHDR_DEST 60
#define IPV6_MAX_EXT 6
#define TC_ACT_UNSPEC -1

/* Keep the flow structs in the object's BTF for the layout test. */
struct osprey_flow_key *const osprey_abi_flow_key = 0;
struct osprey_flow_stats *const osprey_abi_flow_stats = 0;
struct osprey_flow_counters *const osprey_abi_flow_counters = 0;

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536); /* --max-flows */
	__type(key, struct osprey_flow_key);
	__type(value, struct osprey_flow_stats);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct osprey_flow_counters);
} flow_counters SEC(".maps");

struct parsed {
	__u32 hdr_len; /* L2 + L3 + L4 header bytes */
	__u8 tcp_flags;
};

static __always_inline struct osprey_flow_counters *counters(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&flow_counters, &zero);
}

/* Returns 0 with the key filled, 1 for a non-IP frame, -1 for headers we cannot read. */
static __always_inline int parse(void *data, void *end, struct osprey_flow_key *k,
				 struct parsed *p)
{
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return -1;
	__u16 proto = bpf_ntohs(eth->h_proto);
	__u32 off = ETH_HLEN;
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (proto != ETH_P_8021Q && proto != ETH_P_8021AD)
			break;
		struct vlan_hdr *vh = data + off;
		if ((void *)(vh + 1) > end)
			return -1;
		if (!k->vlan)
			k->vlan = bpf_ntohs(vh->h_vlan_TCI) & 0x0fff;
		proto = bpf_ntohs(vh->h_vlan_encapsulated_proto);
		off += sizeof(*vh);
	}

	__u8 l4 = 0;
	bool first_fragment = true;
	if (proto == ETH_P_IP) {
		struct iphdr *ip = data + off;
		if ((void *)(ip + 1) > end)
			return -1;
		__u32 ihl = (ip->ihl & 0xf) * 4;
		if (ihl < sizeof(*ip))
			return -1;
		k->family = AF_INET;
		__builtin_memcpy(k->saddr, &ip->saddr, 4);
		__builtin_memcpy(k->daddr, &ip->daddr, 4);
		l4 = ip->protocol;
		first_fragment = !(bpf_ntohs(ip->frag_off) & 0x1fff);
		off += ihl;
	} else if (proto == ETH_P_IPV6) {
		struct ipv6hdr *ip6 = data + off;
		if ((void *)(ip6 + 1) > end)
			return -1;
		k->family = AF_INET6;
		__builtin_memcpy(k->saddr, &ip6->saddr, 16);
		__builtin_memcpy(k->daddr, &ip6->daddr, 16);
		l4 = ip6->nexthdr;
		off += sizeof(*ip6);
#pragma unroll
		for (int i = 0; i < IPV6_MAX_EXT; i++) {
			if (l4 != NEXTHDR_HOP && l4 != NEXTHDR_ROUTING && l4 != NEXTHDR_DEST &&
			    l4 != NEXTHDR_FRAGMENT && l4 != NEXTHDR_AUTH)
				break;
			struct ipv6_opt_hdr *opt = data + (off & 0x3ff);
			if ((void *)(opt + 1) > end)
				return -1;
			__u32 len;
			if (l4 == NEXTHDR_FRAGMENT) {
				struct frag_hdr *fh = (void *)opt;
				if ((void *)(fh + 1) > end)
					return -1;
				first_fragment = !(bpf_ntohs(fh->frag_off) & 0xfff8);
				len = sizeof(*fh);
			} else if (l4 == NEXTHDR_AUTH) {
				len = (opt->hdrlen + 2) * 4;
			} else {
				len = (opt->hdrlen + 1) * 8;
			}
			l4 = opt->nexthdr;
			off += len;
		}
	} else {
		return 1;
	}
	k->protocol = l4;
	off &= 0x3ff;
	if (!first_fragment) {
		p->hdr_len = off;
		return 0;
	}
	if (l4 == IPPROTO_TCP) {
		struct tcphdr *th = data + off;
		if ((void *)(th + 1) > end)
			return -1;
		k->sport = bpf_ntohs(th->source);
		k->dport = bpf_ntohs(th->dest);
		p->tcp_flags = ((__u8 *)th)[13];
		off += th->doff * 4;
	} else if (l4 == IPPROTO_UDP) {
		struct udphdr *uh = data + off;
		if ((void *)(uh + 1) > end)
			return -1;
		k->sport = bpf_ntohs(uh->source);
		k->dport = bpf_ntohs(uh->dest);
		off += sizeof(*uh);
	} else if (l4 == IPPROTO_ICMP || l4 == IPPROTO_ICMPV6) {
		__u8 *icmp = data + off;
		if ((void *)(icmp + 2) > end)
			return -1;
		k->icmp_type = icmp[0];
		k->icmp_code = icmp[1];
		off += 8;
	}
	p->hdr_len = off;
	return 0;
}

/* accel_tag: 4 when the stack keeps a VLAN tag beside the packet (skb->vlan_tci) rather than
 * in it, as it does at egress until the driver inserts it; its id is accel_vlan. `len`
 * includes it. */
static __always_inline void account(void *data, void *end, __u32 ifindex, __u8 direction,
				    __u64 len, __u32 gso_segs, __u16 accel_vlan, __u8 accel_tag,
				    struct __sk_buff *skb)
{
	struct osprey_flow_key k;
	struct parsed p = {};
	__builtin_memset(&k, 0, sizeof(k));
	k.ifindex = ifindex;
	k.direction = direction;
	k.vlan = accel_vlan;
	int r = parse(data, end, &k, &p);
	if (r) {
		struct osprey_flow_counters *c = counters();
		if (c) {
			if (r > 0)
				c->non_ip++;
			else
				c->truncated++;
		}
		return;
	}
	p.hdr_len += accel_tag; /* each segment carries the tag */
	__u64 segs = gso_segs > 1 ? gso_segs : 1;
	__u64 bytes = len + (segs - 1) * p.hdr_len;
	__u64 payload = len > p.hdr_len ? len - p.hdr_len : 0;
#ifdef OSPREY_COMPAT
	__u64 now = bpf_ktime_get_ns(); /* the same clock, precise: the coarse read is 5.11 */
#else
	__u64 now = bpf_ktime_get_coarse_ns(); /* see events.h: osprey_flow_stats */
#endif

	struct osprey_flow_stats *v = bpf_map_lookup_elem(&flows, &k);
	if (!v) {
		struct osprey_flow_stats fresh = {
			.packets = segs,
			.bytes = bytes,
			.payload_bytes = payload,
			.first_mono_ns = now,
			.last_mono_ns = now,
			.tcp_flags = p.tcp_flags,
			/* egress only (skb), once per flow: the socket's cgroup */
			.cgroup_id = skb ? bpf_skb_cgroup_id(skb) : 0,
		};
		long err = bpf_map_update_elem(&flows, &k, &fresh, BPF_NOEXIST);
		struct osprey_flow_counters *c = counters();
		if (!err) {
			if (c)
				c->inserts++;
			return;
		}
		/* another CPU inserted it first: add to theirs */
		v = bpf_map_lookup_elem(&flows, &k);
		if (!v) {
			if (c)
				c->insert_failed++;
			return;
		}
	}
	__sync_fetch_and_add(&v->packets, segs);
	__sync_fetch_and_add(&v->bytes, bytes);
	__sync_fetch_and_add(&v->payload_bytes, payload);
	v->last_mono_ns = now;
	if (p.tcp_flags & ~v->tcp_flags)
		OSPREY_ATOMIC_OR(&v->tcp_flags, p.tcp_flags);
}

SEC("xdp")
int flows_ingress(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	account(data, end, ctx->ingress_ifindex, OSPREY_FLOW_INGRESS, end - data, 1, 0, 0, NULL);
	return XDP_PASS;
}

static __always_inline int egress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	/* headers outside the linear area: pull them in once, then read directly */
	if (data + 128 > end && skb->len > end - data) {
		bpf_skb_pull_data(skb, skb->len < 128 ? skb->len : 128);
		data = (void *)(long)skb->data;
		end = (void *)(long)skb->data_end;
	}
	/* An out-of-band tag is on the wire too: 4 more bytes, and it is the outer one. */
	__u8 tag = skb->vlan_present ? 4 : 0;
	__u16 vlan = tag ? (skb->vlan_tci & 0x0fff) : 0;
	account(data, end, skb->ifindex, OSPREY_FLOW_EGRESS, skb->len + tag, skb->gso_segs, vlan,
		tag, skb);
	return TC_ACT_UNSPEC;
}

/* One program per egress hook (same code) so OSPREY_DENY_PROGRAMS=flows_egress can force the
 * tc clsact fallback where tcx exists. */
SEC("classifier")
int flows_egress(struct __sk_buff *skb)
{
	return egress(skb);
}

SEC("classifier")
int flows_egress_clsact(struct __sk_buff *skb)
{
	return egress(skb);
}
