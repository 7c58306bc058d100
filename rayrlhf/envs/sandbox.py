"""Running a tool's code: a fresh Python subprocess with a time limit, a memory limit and no
network, in an empty temporary folder, with an empty environment.

No network: the child first enters a network namespace of its own (``unshare``; as an
unprivileged user inside a user namespace), where only a loopback that reaches nothing exists.
Where the kernel or the container refuses namespaces, the child's Python has every socket
constructor replaced by one that raises before the code runs (code that reaches the C library
itself could get past that; :attr:`SandboxResult.isolation` says which held).
"""

from __future__ import annotations

import ctypes
import os
import resource
import subprocess
import sys
import tempfile
from dataclasses import dataclass

CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
MAX_OUTPUT = 4000  # characters of stdout / stderr kept

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


def _enter_network_namespace() -> bool:
    """In the child: a network namespace of its own; False where the kernel refuses."""
    libc = ctypes.CDLL(None, use_errno=True)
    for flags in (CLONE_NEWNET, CLONE_NEWUSER | CLONE_NEWNET):
        if libc.unshare(flags) == 0:
            return True
    return False


def namespaces_work() -> bool:
    """Whether a child here can enter a network namespace (checked once per process)."""
    global _NAMESPACES
    if _NAMESPACES is None:
        probe = subprocess.run(
            [sys.executable, "-I", "-c", ""],
            preexec_fn=lambda: None if _enter_network_namespace() else os._exit(3),  # noqa: PLW1509
            capture_output=True,
        )
        _NAMESPACES = probe.returncode == 0
    return _NAMESPACES


_NAMESPACES: bool | None = None


def run_python(code: str, timeout_s: float = 5.0, memory_mb: int = 256) -> SandboxResult:
    """Run ``code`` in a sandboxed ``python -I``; its output and how it ended."""
    isolated = namespaces_work()

    def limit() -> None:  # in the child, between fork and exec
        os.setsid()  # its own process group: a timeout kills whatever it started too
        size = memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (size, size))
        cpu = int(timeout_s) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, 2**20))  # files it writes: 1 MiB
        if isolated and not _enter_network_namespace():
            os._exit(3)

    source = code if isolated else _NO_SOCKETS + code
    with tempfile.TemporaryDirectory(prefix="rayrlhf-tool-") as folder:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=folder,
            env={"PATH": "/usr/bin:/bin", "HOME": folder},
            preexec_fn=limit,  # noqa: PLW1509 - the limits must apply before the code runs
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
