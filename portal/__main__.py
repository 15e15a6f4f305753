"""Run the command line: python -m portal."""

from portal.cli import main

raise SystemExit(main())
