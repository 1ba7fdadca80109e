"""``python -m pot_cli``: the same as the ``pot`` command (the devnet starts its nodes so)."""

from pot_cli.cli.main import main

main()
