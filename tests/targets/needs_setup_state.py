"""Whether the application set itself up (see targets.needs_setup)."""

configured = False
