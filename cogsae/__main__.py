"""`python -m cogsae` runs the CLI (same as the `cogsae` console script)."""

from cogsae.cli import main

main()
