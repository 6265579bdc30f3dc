/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Test fixture, never attached: reads a field no kernel has, so its CO-RE relocation cannot
 * be satisfied. Tests check that loading it fails with a message naming the field. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct task_struct___osprey_future {
	int osprey_no_such_field;
} __attribute__((preserve_access_index));

SEC("raw_tp/sys_enter")
int broken_core(void *ctx)
{
	struct task_struct___osprey_future *task = (void *)bpf_get_current_task();
	return BPF_CORE_READ(task, osprey_no_such_field);
}
