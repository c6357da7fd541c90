"""Ports of the local cloud: is one free, pick one, listen on one — one error wording."""

from __future__ import annotations

import errno
import socket
import time

from aiohttp import web

from bridge.core.errors import BridgeError


def in_use(host: str, port: int, option: str) -> BridgeError:
    return BridgeError(f"port {port} on {host} is already in use; pick another with {option}")


def check_port_free(host: str, port: int, option: str = "the port option") -> None:
    """Fail with one clear line, naming the option to change, when the port is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the servers do: a port left in TIME_WAIT by a restart is free to use.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise bind_error(host, port, option, error) from None


def bind_error(host: str, port: int, option: str, error: OSError) -> BridgeError:
    """The one line for a port or host that can't be listened on."""
    if isinstance(error, socket.gaierror):  # a host name that does not resolve
        return BridgeError(f"--host {host}: {error.strerror}")
    if error.errno in (errno.EADDRINUSE, errno.EACCES):
        return in_use(host, port, option)
    return BridgeError(f"cannot listen on {host}:{port}: {error.strerror or error}")


def wait_port_free(host: str, port: int, option: str, timeout: float) -> None:
    """As :func:`check_port_free`, but give a port being let go ``timeout`` seconds:
    after a crash, the killed run's DynamoDB child takes a moment to notice and exit."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check_port_free(host, port, option)
        except BridgeError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.1)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, 0))
        except OSError as error:
            raise bind_error(host, 0, "--host", error) from None
        return probe.getsockname()[1]


async def listen(runner: web.AppRunner, host: str, port: int, option: str) -> int:
    """Serve a set-up aiohttp runner on the port (0: any); returns the port it got."""
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as error:
        await runner.cleanup()
        raise bind_error(host, port, option, error) from None
    return runner.addresses[0][1]
