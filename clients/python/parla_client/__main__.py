"""``python -m parla_client``: the ``parla`` command."""

from parla_client.cli import main

raise SystemExit(main())
