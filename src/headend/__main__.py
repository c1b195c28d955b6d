"""``python -m headend`` runs the command line."""

from headend.cli import main

main()
