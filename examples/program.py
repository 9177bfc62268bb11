"""A real program beside a Python child: a web server, and a client that needs its port."""

import socket
import sys
import urllib.request

import anyio

from gymnasiarch import ChildSpec, FromReady, Supervisor, ready


def fetch(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/") as page:
        return f"GET / on port {port}: {page.status}"


async def main() -> None:
    with socket.socket() as probe:  # a free port for the example; a service has its own
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    children = [
        # Ready once it listens (read from the kernel's tables: nothing connects).
        ChildSpec("web", command=server, ready=ready.Port(port), stop_signal="SIGINT"),
        # Started once "web" is ready, with the port its readiness found; its
        # end (significant) ends the tree, and web is stopped with SIGINT.
        ChildSpec("client", fetch, args=(FromReady("web"),), restart="transient", significant=True),
    ]
    results = await Supervisor(children).run()
    print(results["client"])


if __name__ == "__main__":
    anyio.run(main)
