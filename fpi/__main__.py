"""`python -m fpi`: the same as the `fpi` command."""

from fpi.cli import main

main()
