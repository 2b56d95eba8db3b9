"""``python -m novaops.executor``: same as the ``novaops-executor`` command."""

from novaops.executor.main import main

raise SystemExit(main())
