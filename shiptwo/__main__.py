from shiptwo.cli import main

raise SystemExit(main())
