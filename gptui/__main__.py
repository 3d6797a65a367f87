from gptui.cli import main

raise SystemExit(main())
