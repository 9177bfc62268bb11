"""A real program beside a Python child: a web server, and a client that needs its port."""

import sys
import urllib.request

import anyio

from gymnasiarch import ChildSpec, FromReady, Supervisor, ready


def fetch(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/") as page:
        return f"GET / on port {port}: {page.status}"


async def main() -> None:
    # {http} is a port the supervisor picks (and keeps across restarts).
    server = [sys.executable, "-m", "http.server", "{http}", "--bind", "127.0.0.1"]
    children = [
        # Ready once it listens (read from the kernel's tables: nothing connects).
        ChildSpec(
            "web", command=server, ports=["http"], ready=ready.Port("{http}"), stop_signal="SIGINT"
        ),
        # Started once "web" is ready, with the port it was given; its end
        # (significant) ends the tree, and web is stopped with SIGINT.
        ChildSpec(
            "client",
            fetch,
            args=(FromReady("web", key="http"),),
            restart="transient",
            significant=True,
        ),
    ]
    results = await Supervisor(children).run()
    print(results["client"])


if __name__ == "__main__":
    anyio.run(main)
