"""`python -m pixdiff` (and `torchrun -m pixdiff`) runs the `pixdiff` program."""

from pixdiff.cli import main

raise SystemExit(main())
