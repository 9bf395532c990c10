"""`python -m sim` is the `fleetsim` command."""

from sim.apps.cli import main

main()
