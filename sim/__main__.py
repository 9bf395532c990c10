"""`python -m sim` is the `fleetsim` command."""

from sim.cli import main

main()
