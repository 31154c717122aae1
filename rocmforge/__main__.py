"""`python -m rocmforge ...` is the `rocmforge` command."""

from .cli import main

raise SystemExit(main())
