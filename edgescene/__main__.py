"""Allows ``python -m edgescene ...`` as an alias of the ``edgescene`` command."""

from edgescene.cli import main

raise SystemExit(main())
