"""The Ray that rayrlhf starts on this machine answers on loopback only.

Ray binds its listeners to all interfaces unless the node's IP is loopback, and then its three
Prometheus metrics endpoints answer anyone, without the token the rest of Ray 2.60 asks for.
Ray offers no public setting for a loopback node on Linux (``_node_ip_address="127.0.0.1"`` is
rewritten to the machine's address); its single-machine mode does exactly this, and is switched
on here for the start of a local Ray only (a private flag, restored at once, so connecting to a
cluster by address is unaffected). Ray's advice to turn token authentication off is not shown.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import ray

from rayrlhf.log_setup import QUIET_ENV

AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


class _NoOptOutAdvice(logging.Filter):
    """Drops Ray's line inviting users to switch token authentication off."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "to opt out" not in record.getMessage()


@contextmanager
def loopback_node() -> Iterator[None]:
    """Ray started (or joined at a 127.0.0.1 address) inside takes this machine as 127.0.0.1."""
    from ray._private import ray_constants  # private: Ray has no public setting for this

    auth_log = logging.getLogger(AUTH_LOGGER)
    if not any(isinstance(f, _NoOptOutAdvice) for f in auth_log.filters):  # once a process
        auth_log.addFilter(_NoOptOutAdvice())
    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False  # Ray's single-machine mode: node IP 127.0.0.1
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


def start_local(num_cpus: int, namespace: str) -> None:
    """Start a local Ray whose every listener is on loopback (dashboard included)."""
    with loopback_node():
        ray.init(
            num_cpus=num_cpus,
            dashboard_host="127.0.0.1",
            namespace=namespace,
            # Each actor process is as quiet as the CLI (nothing is at import), cheaply: the
            # hook imports nothing, transformers reads its variables when it is imported.
            runtime_env={
                "worker_process_setup_hook": "rayrlhf.log_setup.quiet_warnings",
                "env_vars": dict(QUIET_ENV),
            },
        )
