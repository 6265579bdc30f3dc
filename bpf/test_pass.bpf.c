/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Test- and benchmark-only programs that do nothing: XDP_PASS and TC_ACT_UNSPEC. With them
 * attached, bench/net.sh measures what merely having an XDP/tcx program on an interface
 * costs (native XDP on veth changes the veth receive path), apart from what flows.bpf.c
 * itself does; tests/net.rs attaches the XDP one with `ip link set dev IF xdp obj ...` as
 * "someone else's" program that `osprey flows` must refuse to replace.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#define TC_ACT_UNSPEC -1

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("xdp")
int pass_xdp(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("classifier")
int pass_tc(struct __sk_buff *skb)
{
	return TC_ACT_UNSPEC;
}
