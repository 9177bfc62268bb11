"""A small training ground: an environment on a port it chose, agents in a nested group.

The environment binds port 0 and announces the port with ``ready(value)``;
``FromReady`` hands it to the agents, which run in a group of their own. The
tree's event stream shows every child by its path, and ``walk()`` lists them.
"""

import anyio

from gymnasiarch import ChildSpec, FromReady, Supervisor, child_context


async def environment() -> None:
    async def serve(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            async for request in stream:  # each request: one step, one reward
                await stream.send(str(len(request)).encode())

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    child_context().ready({"port": listener.extra(anyio.abc.SocketAttribute.local_port)})
    await listener.serve(serve)


async def agent(port: int, steps: int) -> int:
    reward = 0
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        for step in range(steps):
            await stream.send(f"{child_context().name} step {step}".encode())
            reward += int(await stream.receive())
    return reward


async def main() -> None:
    port = FromReady("env", key="port")
    agents = Supervisor(
        [ChildSpec(f"agent-{i}", agent, args=(port, 5), restart="transient") for i in (1, 2)],
        name="agents",
        restart="transient",
    )
    tree = Supervisor([ChildSpec("env", environment, ready_timeout=10), agents])
    with tree.events() as events:
        async with tree:
            async for event in events:
                print(f"{event.kind:<14} {event.path}")
                if event.kind == "exited" and event.path == "agents":
                    break  # both agents are done
            for info in tree.walk():
                print(f"{info.path:<16} {info.state:<10} ready value: {info.ready_value}")
            tree.stop()


if __name__ == "__main__":
    anyio.run(main)
