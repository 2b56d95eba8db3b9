from novaops.cli.main import main

raise SystemExit(main())
