from jettui.cli import main

raise SystemExit(main())
