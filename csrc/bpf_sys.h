/*
 * The bpf(2) system call, without libbpf: one definition for the iterator
 * backend (bpf_iter.c) and the walk backend (walk_run.c).
 */
#ifndef FASTTCPSTAT_BPF_SYS_H
#define FASTTCPSTAT_BPF_SYS_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>
#include <sys/syscall.h>

#ifndef __NR_bpf
#  if defined(__x86_64__)
#    define __NR_bpf 321
#  elif defined(__aarch64__)
#    define __NR_bpf 280
#  endif
#endif

static inline int
fts_sys_bpf(int cmd, void *attr, size_t size)
{
#ifdef __NR_bpf
    return (int)syscall(__NR_bpf, cmd, attr, (unsigned int)size);
#else
    (void)cmd;
    (void)attr;
    (void)size;
    errno = ENOSYS;
    return -1;
#endif
}

static inline uint64_t
fts_ptr_to_u64(const void *p)
{
    return (uint64_t)(uintptr_t)p;
}

#endif /* FASTTCPSTAT_BPF_SYS_H */
