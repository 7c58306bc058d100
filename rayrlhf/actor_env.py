"""The environment every rayrlhf actor process starts with.

glibc's malloc serves each block above its mmap threshold (128 KiB, adapting up to 32 MiB) with
a fresh ``mmap`` and returns it to the kernel when freed. A training step allocates and frees
activation- and gradient-sized tensors thousands of times, so every one of them is faulted in
again page by page, each page zeroed by the kernel: in the demo's learner that was 2.1 million
minor page faults and 7.2 s of system CPU per train phase, more than any single kernel of the
model. Keeping freed memory in the process (no mmap for blocks, no trimming) makes the next
allocation of the same size reuse it. The cost is memory the process keeps at its peak instead
of returning it: peak RSS of the demo's learner rose from 10.8 to 12.5 GB in the measurement
that found it. glibc reads the variable at process start only, hence an actor environment.
"""

from __future__ import annotations

ACTOR_ENV: dict[str, str] = {
    "GLIBC_TUNABLES": "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736",
}
