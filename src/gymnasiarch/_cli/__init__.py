"""Helpers of the ``gymnasiarch`` command line, built on the public API.

``control`` is the control socket of ``gymnasiarch run``; ``live`` the live
status view.
"""
