"""`python -m scoperun` is the `scoperun` command."""

from scoperun.cli import main

main()
