"""A supervisor inside an existing asyncio application, next to its own tasks."""

import asyncio

from gymnasiarch import ChildSpec, Supervisor, child_context


def count_to(n: int) -> str:
    return f"{child_context().name} counted to {sum(1 for _ in range(n))}"


async def heartbeat() -> None:
    while True:
        print("app: still serving", flush=True)
        await asyncio.sleep(0.1)


async def main() -> None:
    beat = asyncio.create_task(heartbeat())  # the application's own work goes on
    specs = [ChildSpec(f"worker-{i}", count_to, args=(1000,), restart="transient") for i in (1, 2)]
    async with Supervisor(specs) as sup:
        results = await sup.wait()
    beat.cancel()
    print("results:", sorted(results.values()))


if __name__ == "__main__":
    asyncio.run(main())
