"""Who this server process is among the workers of its machine.

``voice-agent serve --workers N`` starts N worker processes sharing the port; each is a full
server. The parent tells every worker, through its environment, how many there are, which one
it is and a secret they share (what signs stream and web-call tokens when no configured secret
does, so a token issued by one worker is good on another). A plain ``serve`` is worker 0 of 1.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

COUNT_ENV = "VOICE_AGENT_WORKERS"
INDEX_ENV = "VOICE_AGENT_WORKER"
SECRET_ENV = "VOICE_AGENT_WORKER_SECRET"


@dataclass(frozen=True, slots=True)
class Worker:
    index: int
    count: int
    instance: str  # the machine: its calls share one admission pool
    secret: str | None  # shared by the workers of this machine

    @property
    def id(self) -> str:
        """Unique among live processes of every instance (for slots and leases)."""
        return f"{self.instance[:40]}:{os.getpid()}"


def instance_name(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return env.get("FLY_MACHINE_ID") or socket.gethostname() or "local"


def current(env: Mapping[str, str] | None = None) -> Worker:
    env = os.environ if env is None else env
    count = int(env.get(COUNT_ENV, "1") or 1)
    index = int(env.get(INDEX_ENV, "0") or 0)
    return Worker(index, max(1, count), instance_name(env), env.get(SECRET_ENV) or None)


def default_count() -> int:
    """The cores this process may use (its CPU affinity, which a container may narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def token_key(auth_token: str | None) -> str | None:
    """What Twilio stream and resume tokens are signed with: the auth token (every instance
    agrees), else the secret this machine's workers share, else None (a per-process key)."""
    return auth_token or current().secret


def listen_socket(host: str, port: int) -> socket.socket:
    """A listening socket every worker binds on the same port (``SO_REUSEPORT``): the kernel
    hands each new connection to one of them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # "::" takes IPv4 too
        sock.bind((host, port))
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    return sock
