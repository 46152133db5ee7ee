from keyledger.cli import main

raise SystemExit(main())
