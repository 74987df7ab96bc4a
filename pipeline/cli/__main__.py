"""``python -m pipeline.cli`` runs the same entry point as the console script."""

from pipeline.cli import main

main()
