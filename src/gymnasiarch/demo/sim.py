"""The demo's children: an environment, agents, and a flaky simulator.

Every number comes from ``random.Random`` seeded with the child's seed
(``derive_seed(master seed, child name)``) and the step, never from timing,
so a run is a pure function of the master seed.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from multiprocessing.connection import Client, Connection, Listener
from typing import Any

from gymnasiarch import child_context

log = logging.getLogger("demo.sim")

SIMULATOR = "simulator"
AGENTS = ("agent-1", "agent-2", "agent-3")


def _send(conn: Connection, message: dict[str, Any]) -> None:
    conn.send_bytes(json.dumps(message).encode())


def _receive(conn: Connection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(conn.recv_bytes())
    return message


def _connect(name: str) -> Connection:
    config = child_context().runtime_config
    conn = Client(config["address"], "AF_UNIX", authkey=config["channel_key"].encode())
    _send(conn, {"hello": name})
    return conn


class _Peers:
    """The environment's connections, by peer name; a lost peer is waited for again."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.conns: dict[str, Connection] = {}

    def wait_for(self, *names: str) -> None:
        while missing := [n for n in names if n not in self.conns]:
            log.info("waiting for %s", ", ".join(missing))
            conn = self.listener.accept()
            self.conns[_receive(conn)["hello"]] = conn

    def ask(self, name: str, message: dict[str, Any]) -> dict[str, Any]:
        """Send *message* to *name* and return its answer, reconnecting once it is back."""
        while True:
            self.wait_for(name)
            try:
                _send(self.conns[name], message)
                return _receive(self.conns[name])
            except (EOFError, OSError):
                log.warning("lost %s at step %d; it will be back", name, message["step"])
                self.conns.pop(name).close()

    def close(self) -> None:
        for conn in self.conns.values():
            _send(conn, {"done": True})
            conn.close()


def environment() -> float:
    """Step the world: forces from the simulator, actions from the agents."""
    ctx = child_context()
    config = ctx.runtime_config
    address = config["address"]
    if os.path.exists(address):
        os.unlink(address)  # a socket left by a run that was killed
    with Listener(address, "AF_UNIX", authkey=config["channel_key"].encode()) as listener:
        ctx.ready()
        peers = _Peers(listener)
        peers.wait_for(SIMULATOR, *AGENTS)
        state = 0.0
        for step in range(int(config["steps"])):
            force = peers.ask(SIMULATOR, {"step": step, "state": state})["force"]
            actions = [peers.ask(a, {"step": step, "obs": state + force})["action"] for a in AGENTS]
            state = round(0.9 * state + force + 0.1 * sum(actions), 3)
            log.info("step %2d  force %+.3f  actions %s  state %+.3f", step, force, actions, state)
            time.sleep(float(config["interval"]))
        peers.close()
    log.info("done: final state %+.3f", state)
    return state


def simulator() -> int:
    """Answer force requests; blow up at two steps chosen by the seed."""
    ctx = child_context()
    steps = int(ctx.runtime_config["steps"])
    # Two steps away from the ends (fewer in a very short run).
    candidates = range(2, steps - 1)
    crash_at = sorted(random.Random(ctx.seed).sample(candidates, min(2, len(candidates))))
    answered = 0
    with _connect(SIMULATOR) as conn:
        while not (request := _receive(conn)).get("done"):
            step = request["step"]
            if ctx.restarts < len(crash_at) and step == crash_at[ctx.restarts]:
                raise FloatingPointError(f"numerical blow-up at step {step}")
            force = random.Random(f"{ctx.seed}/{step}").uniform(-1.0, 1.0)
            _send(conn, {"force": round(force, 3)})
            answered += 1
    return answered


def agent() -> float:
    """Act on each observation: push it back towards zero, with seeded noise."""
    ctx = child_context()
    reward = 0.0
    with _connect(ctx.name) as conn:
        while not (request := _receive(conn)).get("done"):
            noise = random.Random(f"{ctx.seed}/{request['step']}").choice((-1, 0, 1))
            action = (-1 if request["obs"] > 0 else 1) + noise
            reward -= abs(request["obs"])
            _send(conn, {"action": action})
    return round(reward, 3)
