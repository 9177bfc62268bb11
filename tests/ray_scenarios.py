"""Ray scenarios that need a cluster of their own, each run in a fresh interpreter.

A Ray driver attaches to one cluster per process, and the tests' session
cluster is in the test process: ``python ray_scenarios.py <scenario>``
prints one JSON line of what it saw.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

import anyio

from gymnasiarch import ChildSpec, RayBackend, Supervisor

HERE = str(Path(__file__).parent)


def _descendants() -> list[str]:
    from gymnasiarch.testing import _descendants as descendants

    return sorted(descendants(os.getpid()).values())


async def owned_cluster() -> dict[str, Any]:
    """RayBackend() with no address starts a loopback cluster and shuts it down at the end."""
    backend = RayBackend(
        num_cpus=1, init_options={"runtime_env": {"env_vars": {"PYTHONPATH": HERE}}}
    )
    results: dict[str, Any] = {}

    async def during() -> None:
        import ray  # after the backend imported it (which makes its cluster loopback-only)

        results["during"] = ray.is_initialized() and backend.owns_cluster
        results["node_ip"] = ray.util.get_node_ip_address()

    sup = Supervisor(
        [ChildSpec("one", "targets.basic:add", args=(2, 3), restart="transient")],
        backend=backend,
    )
    async with sup:
        await during()
        results["results"] = await sup.wait()
    import ray

    results["after"] = ray.is_initialized()
    results["left"] = [c for c in _descendants() if "ray" in c or "gcs_server" in c]
    return results


async def another_cluster_runs() -> dict[str, Any]:
    """A cluster already runs here, and RAY_ADDRESS names it: RayBackend() starts its own."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # loopback nodes, theirs and ours
    import ray
    from ray.cluster_utils import Cluster

    theirs = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    os.environ["RAY_ADDRESS"] = theirs.address  # what `ray start` users often have set
    seen: dict[str, Any] = {"theirs": theirs.address}
    try:
        # No num_cpus: with it, joining theirs would fail loudly; without, silently.
        backend = RayBackend(init_options={"runtime_env": {"env_vars": {"PYTHONPATH": HERE}}})
        sup = Supervisor(
            [ChildSpec("one", "targets.basic:add", args=(2, 3), restart="transient")],
            backend=backend,
        )
        async with sup:
            seen["ours"] = ray.get_runtime_context().gcs_address
            seen["owns"] = backend.owns_cluster
            seen["results"] = await sup.wait()
        seen["after"] = ray.is_initialized()
        # Theirs still serves: a driver can attach to it and run a task.
        ray.init(address=theirs.address, log_to_driver=False)
        seen["theirs_serves"] = ray.get(ray.remote(lambda: 7).remote())
        ray.shutdown()
    finally:
        theirs.shutdown()
    return seen


async def node_loss() -> dict[str, Any]:
    """The node hosting a child is removed: the child is restarted on the surviving node."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # loopback nodes
    import ray
    from ray.cluster_utils import Cluster

    # Quick health checks, so a lost node is noticed in about a second.
    system = {
        "health_check_initial_delay_ms": 0,
        "health_check_period_ms": 200,
        "health_check_failure_threshold": 3,
    }
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False, "_system_config": system},
    )
    doomed = cluster.add_node(num_cpus=1)
    try:
        ray.init(
            address=cluster.address,
            runtime_env={"env_vars": {"PYTHONPATH": HERE}},
            log_to_driver=False,
        )
        cluster.wait_for_nodes()
        spec = ChildSpec(
            "sim",
            "targets.remote:ready_and_serve",
            args=("up",),
            ready_timeout=60,
            placement={"node_affinity": {"node_id": doomed.node_id, "soft": True}},
        )
        seen: dict[str, Any] = {}
        sup = Supervisor([spec], backend=RayBackend(), max_restarts=3, max_seconds=60)
        async with sup, sup.events() as events:
            run = sup._children["sim"].run
            seen["first_node"] = run.node if run else None
            lost_at = time.monotonic()
            cluster.remove_node(doomed, allow_graceful=False)
            async for event in events:
                if event.kind == "exited":
                    seen["exit"] = event.detail
                    seen["noticed_after"] = time.monotonic() - lost_at
                if event.kind == "ready":
                    break
            run = sup._children["sim"].run
            seen["second_node"] = run.node if run else None
            seen["doomed"] = doomed.node_id
            seen["restarts"] = sup.which_children()[0].restarts
            sup.stop()
        return seen
    finally:
        ray.shutdown()
        cluster.shutdown()


async def two_backends() -> dict[str, Any]:
    """Two backends, one cluster: it lives until the last of them is done."""
    env = {"runtime_env": {"env_vars": {"PYTHONPATH": HERE}}}
    first = Supervisor(
        [ChildSpec("quick", "targets.basic:add", args=(0, 1), restart="transient")],
        backend=RayBackend(num_cpus=2, init_options=env),
        handle_signals=False,
    )
    second = Supervisor(
        [ChildSpec("slow", "targets.remote:ready_and_serve", args=("up",), ready_timeout=60)],
        backend=RayBackend(num_cpus=2, init_options=env),
        handle_signals=False,
    )
    seen: dict[str, Any] = {}
    async with second:
        seen["first"] = await first.run()  # ends, and must not take the cluster along
        seen["second_state"] = second.which_children()[0].state
        await second.terminate_child("slow")  # through its actor: the cluster still serves
        last = second.which_children()[0].last_exit
        seen["second_exit"] = last.describe() if last else None
    import ray

    seen["after"] = ray.is_initialized()
    return seen


if __name__ == "__main__":
    scenario = {
        "owned_cluster": owned_cluster,
        "another_cluster_runs": another_cluster_runs,
        "node_loss": node_loss,
        "two_backends": two_backends,
    }[sys.argv[1]]
    print(json.dumps(anyio.run(scenario)), flush=True)
