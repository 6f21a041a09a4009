from pagcore.cli import main

raise SystemExit(main())
