from fastasr.cli import main

raise SystemExit(main())
