"""``python -m gymnasiarch``: the command line."""

from gymnasiarch.cli import console_main

console_main()
