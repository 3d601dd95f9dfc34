from densenet_lit.export.command import main

raise SystemExit(main())
