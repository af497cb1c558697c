"""`python -m scoperun` is the `scoperun` command."""

from scoperun.cli.main import main

main()
