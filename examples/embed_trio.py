"""The same supervisor under trio, in a nursery next to the application's tasks."""

import trio

from gymnasiarch import ChildSpec, Supervisor, child_context


def count_to(n: int) -> str:
    return f"{child_context().name} counted to {sum(1 for _ in range(n))}"


async def heartbeat() -> None:
    while True:
        print("app: still serving", flush=True)
        await trio.sleep(0.1)


async def main() -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(heartbeat)  # the application's own work goes on
        specs = [
            ChildSpec(f"worker-{i}", count_to, args=(1000,), restart="transient") for i in (1, 2)
        ]
        results = await Supervisor(specs).run()
        nursery.cancel_scope.cancel()
    print("results:", sorted(results.values()))


if __name__ == "__main__":
    trio.run(main)
