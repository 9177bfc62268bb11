"""Child targets of the example tree files (the tree file's folder is on sys.path)."""

import time

from gymnasiarch import child_context


def crash_once(seconds: float) -> str:
    """Crash on the first run; later runs work for *seconds* and succeed."""
    ctx = child_context()
    if ctx.restarts == 0:
        time.sleep(0.1)
        raise RuntimeError(f"{ctx.name} trips on its first run")
    time.sleep(seconds)
    return f"{ctx.name} done after {ctx.restarts} restart(s)"


def steady(seconds: float) -> str:
    """Work for *seconds* and succeed; the run count shows who was restarted with whom."""
    ctx = child_context()
    time.sleep(seconds)
    return f"{ctx.name} done after {ctx.restarts} restart(s)"
