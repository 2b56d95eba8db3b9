from novaops.controller.main import main

raise SystemExit(main())
