/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Page faults per process and mapping. The minor-faults and major-faults software perf
 * events run a program on every fault (period 1) with the faulting address; bpf_find_vma
 * classifies it at fault time (heap, stack, anonymous, file, vDSO), while the mapping
 * certainly exists. Faults are counted per mapping and per (mapping, second, address row)
 * in the kernel; only the first fault of a process in a mapping reaches the ring, with
 * the mapping's description and the file's path.
 */
#include "osprey.h"

#define EBUSY 16
#define ENOENT 2
#define HEAT_ROWS 64
#define NSEC_PER_SEC 1000000000ULL

const volatile __u64 start_ns = 0; /* CLOCK_BOOTTIME at the start of the run */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct osprey_fault_key);
	__type(value, struct osprey_fault_counts);
} fault_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 131072);
	__type(key, struct osprey_fault_heat_key);
	__type(value, struct osprey_fault_counts);
} fault_heat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, OSPREY_FERR_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} fault_errors SEC(".maps");

/* The last VMA this CPU resolved. Faults in a run over one mapping (the common case) are
 * attributed from here without bpf_find_vma: its mmap lock is released from an irq_work
 * (interrupts are off in perf event handlers), a self-IPI per lookup that costs more than
 * the rest of the program. The entry is used only while the VMA object still belongs to
 * this mm with the same range and file: VMAs are freed type-safely under RCU, so a reused
 * object that matches all of those describes the same mapping. */
struct vma_cache {
	__u64 vma;
	__u64 mm;
	__u64 file;
	__u64 start;
	__u64 end;
	__u64 ino;
	__u32 dev;
	__u32 pid;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct vma_cache);
} last_vma SEC(".maps");

/* The fault, and what the bpf_find_vma callback learns about its VMA. */
struct vma_info {
	__u64 start;
	__u64 end;
	__u64 addr;
	__u64 ino;
	__u64 vma;
	__u64 file;
	__u32 dev;
	__u32 pid;
	__u32 type;
	__u8 class;
	__s8 counted; /* 1 new mapping, 0 known mapping, -1 count map full */
};

static __always_inline void count_error(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&fault_errors, &slot);
	if (v)
		(*v)++;
}

/* The same tests /proc/PID/maps uses for [heap], [stack] and [vdso]. */
static __always_inline __u8 vma_class(struct vm_area_struct *vma, __u64 start, __u64 end)
{
	if (BPF_CORE_READ(vma, vm_file))
		return OSPREY_FAULT_FILE;
	struct mm_struct *mm = BPF_CORE_READ(vma, vm_mm);
	if (BPF_CORE_READ(vma, vm_ops)) {
		__u64 vdso = 0;
		if (bpf_core_field_exists(mm->context.vdso))
			vdso = (__u64)BPF_CORE_READ(mm, context.vdso);
		return (vdso >= start && vdso < end) ? OSPREY_FAULT_VDSO : OSPREY_FAULT_SPECIAL;
	}
	if (start <= BPF_CORE_READ(mm, brk) && end >= BPF_CORE_READ(mm, start_brk))
		return OSPREY_FAULT_HEAP;
	__u64 stack = BPF_CORE_READ(mm, start_stack);
	if (start <= stack && end >= stack)
		return OSPREY_FAULT_STACK;
	return OSPREY_FAULT_ANON;
}

static __always_inline void add(struct osprey_fault_counts *v, __u32 type)
{
	if (type == OSPREY_FAULT_MINOR)
		__sync_fetch_and_add(&v->minor, 1);
	else if (type == OSPREY_FAULT_MAJOR)
		__sync_fetch_and_add(&v->major, 1);
	else
		__sync_fetch_and_add(&v->untyped, 1);
}

/* Adds one fault under `key`; returns 1 when the key was new, -1 when the map was full. */
static __always_inline int count(void *map, void *key, __u32 type, __u64 vma_end)
{
	struct osprey_fault_counts *v = bpf_map_lookup_elem(map, key);
	int fresh = 0;
	if (!v) {
		struct osprey_fault_counts init = {.vma_end = vma_end};
		fresh = bpf_map_update_elem(map, key, &init, BPF_NOEXIST) == 0;
		v = bpf_map_lookup_elem(map, key); /* ours, or another CPU's */
		if (!v)
			return -1;
	} else if (vma_end && v->vma_end != vma_end) {
		v->vma_end = vma_end; /* the heap and stacks grow */
	}
	add(v, type);
	return fresh;
}

/* A process's first fault in a mapping: its description with the file's path, walked
 * while the lookup holds the mapping (and so the file). */
static __always_inline void describe(struct task_struct *task, struct vm_area_struct *vma,
				     struct vma_info *info, struct osprey_fault_key *key)
{
	struct osprey_scratch *s = osprey_scratch();
	if (!s)
		return;
	struct osprey_fault_mapping *ev = OSPREY_EVENT_IN(s, struct osprey_fault_mapping);
	osprey_fill_header(&ev->hdr, OSPREY_KIND_FAULT_MAPPING, task);
	ev->key = *key;
	ev->vma_end = info->end;
	ev->pgoff = BPF_CORE_READ(vma, vm_pgoff);
	ev->addr = info->addr;
	ev->vm_flags = (__u32)BPF_CORE_READ(vma, vm_flags);
	ev->class = info->class;
	ev->fault_type = info->type;
	ev->status = 0;
	ev->path_len = 0;
	ev->path_depth = 0;
	ev->_pad = 0;
	struct file *f = BPF_CORE_READ(vma, vm_file);
	if (f) {
		bool truncated = false;
		s->off = 0;
		ev->path_depth = osprey_walk_path(s, BPF_CORE_READ(f, f_path.mnt),
						  BPF_CORE_READ(f, f_path.dentry), OSPREY_PATH_MAX,
						  &truncated);
		ev->path_len = s->off;
		if (truncated)
			ev->status |= OSPREY_ST_RESOLVED_TRUNCATED;
	}
	__u32 len = ev->path_len;
	if (len > OSPREY_PATH_MAX)
		len = OSPREY_PATH_MAX;
	osprey_emit(ev, sizeof(*ev) + len);
}

/* Runs under the mmap lock taken by bpf_find_vma: classify, count, describe if new.
 * Everything happens in this one lookup: with interrupts off (as in perf event
 * handlers) the lock's release is deferred, and a second lookup would find it busy. */
static long on_vma(struct task_struct *task, struct vm_area_struct *vma, struct vma_info *info)
{
	struct osprey_fault_key key = {.pid = info->pid};
	info->start = BPF_CORE_READ(vma, vm_start);
	info->end = BPF_CORE_READ(vma, vm_end);
	info->class = vma_class(vma, info->start, info->end);
	/* The file's identity keeps a range remapped to another file apart from the old one. */
	struct file *f = BPF_CORE_READ(vma, vm_file);
	info->vma = (__u64)vma;
	info->file = (__u64)f;
	if (f) {
		info->ino = BPF_CORE_READ(f, f_inode, i_ino);
		info->dev = BPF_CORE_READ(f, f_inode, i_sb, s_dev);
	}
	key.vma_start = info->start;
	key.dev = info->dev;
	key.ino = info->ino;
	int fresh = count(&fault_counts, &key, info->type, info->end);
	info->counted = fresh;
	if (fresh > 0)
		describe(task, vma, info, &key);
	return 0;
}

#ifdef OSPREY_COMPAT
/* Before bpf_find_vma (5.17) and the maple tree (6.1): the mm's VMAs are in an rb-tree
 * keyed by range (mm->mm_rb, linked through vma->vm_rb). Walked without the mmap lock,
 * through reads that cannot fault: a VMA changing meanwhile may be missed or misread. */
struct mm_struct___rb {
	struct rb_root mm_rb;
} __attribute__((preserve_access_index));

struct vm_area_struct___rb {
	struct rb_node vm_rb;
} __attribute__((preserve_access_index));

#define RB_MAX_DEPTH 48

/* bpf_find_vma's contract: calls on_vma for the VMA holding addr; 0, or -ENOENT. */
static __always_inline long find_vma_rb(struct task_struct *task, __u64 addr,
					struct vma_info *info)
{
	struct mm_struct___rb *mm = (void *)BPF_CORE_READ(task, mm);
	if (!mm || !bpf_core_field_exists(mm->mm_rb))
		return -ENOENT;
	__u64 link = bpf_core_field_offset(struct vm_area_struct___rb, vm_rb);
	struct rb_node *node = BPF_CORE_READ(mm, mm_rb.rb_node);
	for (int i = 0; i < RB_MAX_DEPTH && node; i++) {
		struct vm_area_struct *vma = (void *)((char *)node - link);
		if (BPF_CORE_READ(vma, vm_end) <= addr) {
			node = BPF_CORE_READ(node, rb_right);
		} else if (BPF_CORE_READ(vma, vm_start) > addr) {
			node = BPF_CORE_READ(node, rb_left);
		} else {
			on_vma(task, vma, info);
			return 0;
		}
	}
	return -ENOENT;
}
#define FIND_VMA(task, addr, info) find_vma_rb((task), (addr), (info))
#else
#define FIND_VMA(task, addr, info) bpf_find_vma((task), (addr), on_vma, (info), 0)
#endif

static __always_inline bool still_mapped(struct vma_cache *last)
{
	struct vm_area_struct *vma = (struct vm_area_struct *)last->vma;
	return (__u64)BPF_CORE_READ(vma, vm_mm) == last->mm &&
	       BPF_CORE_READ(vma, vm_start) == last->start &&
	       BPF_CORE_READ(vma, vm_end) == last->end &&
	       (__u64)BPF_CORE_READ(vma, vm_file) == last->file;
}

static __always_inline int on_fault(__u64 addr, __u32 type)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct osprey_counters *c = osprey_counters_for(OSPREY_KIND_PAGE_FAULT);
	if (tgid == 0 || !osprey_target_match(OSPREY_KIND_PAGE_FAULT)) {
		if (c)
			c->filtered++;
		return 0;
	}
	struct task_struct *task = osprey_current_task();
	struct vma_info info = {.addr = addr, .type = type, .pid = tgid};
	__u64 mm = (__u64)BPF_CORE_READ(task, mm);
	__u32 zero = 0;
	struct vma_cache *last = bpf_map_lookup_elem(&last_vma, &zero);
	bool in_last = last && last->pid == tgid && last->mm == mm && addr >= last->start &&
		       addr < last->end;
	long err = 0;
	if (in_last && still_mapped(last)) {
		struct osprey_fault_key key = {
			.pid = tgid, .dev = last->dev, .vma_start = last->start, .ino = last->ino};
		info.start = last->start;
		info.end = last->end;
		info.ino = last->ino;
		info.dev = last->dev;
		info.counted = count(&fault_counts, &key, type, 0) < 0 ? -1 : 0;
	} else if ((err = FIND_VMA(task, addr, &info)) == 0) {
		if (last) {
			last->vma = info.vma;
			last->mm = mm;
			last->file = info.file;
			last->start = info.start;
			last->end = info.end;
			last->ino = info.ino;
			last->dev = info.dev;
			last->pid = tgid;
		}
	} else if (err == -EBUSY && in_last) {
		/* The lock's release is still queued and the VMA changed meanwhile: the
		 * fault lies in the range it had a moment ago; count it there. */
		struct osprey_fault_key key = {
			.pid = tgid, .dev = last->dev, .vma_start = last->start, .ino = last->ino};
		count_error(OSPREY_FERR_VMA_BUSY_CACHED);
		info.start = last->start;
		info.end = last->end;
		info.ino = last->ino;
		info.dev = last->dev;
		info.counted = count(&fault_counts, &key, type, 0) < 0 ? -1 : 0;
		err = 0;
	} else {
		count_error(err == -EBUSY ? OSPREY_FERR_VMA_BUSY
			    : err == -ENOENT ? OSPREY_FERR_VMA_MISSING
					     : OSPREY_FERR_VMA_OTHER);
		struct osprey_fault_key unresolved = {.pid = tgid};
		info.counted = count(&fault_counts, &unresolved, type, 0) < 0 ? -1 : 0;
	}
	if (info.counted < 0) {
		count_error(OSPREY_FERR_COUNTS_FULL);
		if (c)
			c->dropped++;
		return 0;
	}
	if (c)
		c->emitted++;
	if (err)
		return 0;
	struct osprey_fault_heat_key heat = {
		.mapping = {.pid = tgid, .dev = info.dev, .vma_start = info.start, .ino = info.ino},
	};
	__u64 now = bpf_ktime_get_boot_ns();
	heat.second = now > start_ns ? (now - start_ns) / NSEC_PER_SEC : 0;
	__u64 size = info.end - info.start;
	heat.row = size ? (addr - info.start) * HEAT_ROWS / size : 0;
	if (heat.row >= HEAT_ROWS)
		heat.row = HEAT_ROWS - 1;
	if (count(&fault_heat, &heat, type, 0) < 0)
		count_error(OSPREY_FERR_HEAT_FULL);
	return 0;
}

SEC("perf_event")
int memory_minor(struct bpf_perf_event_data *ctx)
{
	return on_fault(ctx->addr, OSPREY_FAULT_MINOR);
}

SEC("perf_event")
int memory_major(struct bpf_perf_event_data *ctx)
{
	return on_fault(ctx->addr, OSPREY_FAULT_MAJOR);
}

/* Fallbacks without perf events: every user-mode fault, minor and major not told apart. */
SEC("tp_btf/page_fault_user")
int BPF_PROG(memory_fault_btf, unsigned long address, struct pt_regs *regs,
	     unsigned long error_code)
{
	return on_fault(address, OSPREY_FAULT_UNTYPED);
}

SEC("raw_tp/page_fault_user")
int BPF_PROG(memory_fault_raw, unsigned long address, struct pt_regs *regs,
	     unsigned long error_code)
{
	return on_fault(address, OSPREY_FAULT_UNTYPED);
}
