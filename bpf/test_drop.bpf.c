/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Test-only tc program (loaded with `tc filter ... bpf obj`, inside a network namespace a
 * test creates): drops the first DROP_COUNT IPv4 TCP packets that carry payload to port
 * DROP_PORT, so a test can induce an exact number of retransmissions.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define DROP_PORT 4242
#define DROP_COUNT 2
#define TC_ACT_OK 0
#define TC_ACT_SHOT 2

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} dropped SEC(".maps");

SEC("classifier")
int drop_first_segments(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(0x0800) || ip->protocol != 6)
		return TC_ACT_OK;
	struct tcphdr *th = (void *)ip + ip->ihl * 4;
	if ((void *)(th + 1) > end || th->dest != bpf_htons(DROP_PORT))
		return TC_ACT_OK;
	__u32 headers = ip->ihl * 4 + th->doff * 4;
	if (bpf_ntohs(ip->tot_len) <= headers)
		return TC_ACT_OK; /* no payload: SYN, pure ACK, FIN */
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&dropped, &zero);
	if (!n || *n >= DROP_COUNT)
		return TC_ACT_OK;
	__sync_fetch_and_add(n, 1);
	return TC_ACT_SHOT;
}
