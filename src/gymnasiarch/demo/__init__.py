"""The demo simulation that ``gymnasiarch demo`` runs (its tree file is ``tree.toml`` here).

An environment steps a tiny world; three agents act on what it observes; a
simulator computes the forces, and crashes at two moments its seed chooses.
They talk over a real channel (``multiprocessing.connection`` on a Unix
socket, authenticated, JSON messages) and every random choice comes from the
tree's master seed, so two runs with the same seed print the same trajectory,
crashes and restarts included.
"""
