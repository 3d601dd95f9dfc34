from densenet_lit.export import main

raise SystemExit(main())
