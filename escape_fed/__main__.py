"""``python -m escape_fed``: the same as the ``escape-fed`` command."""

from escape_fed.cli.main import main

main()
