"""The process layer: how a child is started on this machine, heard, stopped and reaped.

The parent's side: ``run`` (one run of one child), ``launcher`` (a start
that does not block the event loop), ``forkserver`` (asking our fork
server), ``subreaper`` (escaped descendants), ``output`` (captured
stdout/stderr). The server process: ``forkserver_main``, leaning on the
CPython internals listed in ``cpython``. The child's side: ``child`` (the
bootstrap around ``spawn_wrapper``), ``marks`` and ``warm``.
Empty on purpose: the child's side imports nothing of the parent's.
"""
