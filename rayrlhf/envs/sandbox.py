"""Running a tool's code: a fresh Python subprocess with a time limit, a memory limit and no
network, in an empty temporary folder, with an empty environment.

No network: the child first enters a network namespace of its own (``unshare``; as an
unprivileged user inside a user namespace), where only a loopback that reaches nothing exists.
Where the kernel or the container refuses namespaces, the child's Python has every socket
constructor replaced by one that raises before the code runs (code that reaches the C library
itself could get past that; :attr:`SandboxResult.isolation` says which held).

The limits are set by the child itself, a new ``python -I``, before it reads the code: nothing
runs between fork and exec (no ``preexec_fn``), so tools may run on several threads at once (an
environment worker's threads) without the fork-in-a-threaded-process hazards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass

CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
MAX_OUTPUT = 4000  # characters of stdout / stderr kept
NO_NAMESPACE = 3  # the child's exit code when it could not enter a network namespace

# Runs first in the child: limits it cannot raise again, then a network namespace (or exit 3).
_PRELUDE = """
import ctypes as _c, resource as _r, sys as _s
for _k, _v in ((_r.RLIMIT_AS, {memory}), (_r.RLIMIT_CPU, {cpu}), (_r.RLIMIT_FSIZE, 2**20)):
    _r.setrlimit(_k, (_v, _v))
if {isolate}:
    _libc = _c.CDLL(None, use_errno=True)
    if not any(_libc.unshare(_f) == 0 for _f in ({net}, {user} | {net})):
        _s.exit({no_ns})
    del _libc
del _c, _r, _s, _k, _v
"""

# Runs before the tool's code where no network namespace could be entered.
_NO_SOCKETS = """
import socket as _s
def _refuse(*a, **k):
    raise OSError("network access is disabled in this sandbox")
_s.socket = _s.create_connection = _s.socketpair = _s.fromfd = _refuse
del _s, _refuse
"""


@dataclass(frozen=True)
class SandboxResult:
    """What the code printed, and why it stopped when it did not finish cleanly."""

    stdout: str
    stderr: str
    error: str | None  # "timed out after 5.0 s", "exit code 1", ...; None: ran to the end
    isolation: str  # "namespace" or "python" (see the module's docstring)


def _prelude(isolate: bool, memory_mb: int, timeout_s: float) -> str:
    return _PRELUDE.format(
        memory=memory_mb * 2**20, cpu=int(timeout_s) + 1, isolate=isolate,
        net=CLONE_NEWNET, user=CLONE_NEWUSER, no_ns=NO_NAMESPACE,
    )  # fmt: skip


def namespaces_work() -> bool:
    """Whether a child here can enter a network namespace (checked once per process)."""
    global _NAMESPACES
    if _NAMESPACES is None:
        probe = subprocess.run(
            [sys.executable, "-I", "-"], input=_prelude(True, 256, 5.0), capture_output=True,
            text=True, timeout=30,
        )  # fmt: skip
        _NAMESPACES = probe.returncode == 0
    return _NAMESPACES


_NAMESPACES: bool | None = None


def run_python(code: str, timeout_s: float = 5.0, memory_mb: int = 256) -> SandboxResult:
    """Run ``code`` in a sandboxed ``python -I``; its output and how it ended."""
    isolated = namespaces_work()
    source = _prelude(isolated, memory_mb, timeout_s) + ("" if isolated else _NO_SOCKETS) + code
    with tempfile.TemporaryDirectory(prefix="rayrlhf-tool-") as folder:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=folder,
            env={"PATH": "/usr/bin:/bin", "HOME": folder},
            start_new_session=True,  # its own process group: a timeout kills what it started too
            text=True,
        )
        try:
            out, err = proc.communicate(source, timeout=timeout_s)
            error = None if proc.returncode == 0 else f"exit code {proc.returncode}"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            out, err = proc.communicate()
            error = f"timed out after {timeout_s} s"
    if error and "MemoryError" in err:
        error = f"out of memory (limit {memory_mb} MiB)"
    return SandboxResult(
        out[-MAX_OUTPUT:], err[-MAX_OUTPUT:], error, "namespace" if isolated else "python"
    )
