"""The log wire: records from children to the parent over a private socket.

``frames`` (frames, the handshake, the client's side; the one encoder),
``serving`` (the server's side of a socket: authentication, reads, the
accept loop), ``records`` (log records as plain data, checked field by
field), ``logclient`` (the child's handler) and ``levels`` (the parent's
levels for a child). The public face is ``gymnasiarch.logserver``. Never
imports the supervisor, a backend or the process layer.
"""
