"""The supervisor shell: ``Supervisor`` and what it alone uses.

``supervisor`` carries out the decisions of ``policy`` (pure: OTP's rules,
no I/O) through the backend seam (``gymnasiarch._backends.base``);
``options``, ``events`` and ``signals`` are its configuration,
lifecycle events and shutdown signals. It
never imports the process layer or Ray (``tests/test_layers.py``).
Empty on purpose: importing one module here loads no other.
"""
