"""``python -m densenet_lit.bench``: see :mod:`densenet_lit.bench`."""

from densenet_lit.bench.suite import main

if __name__ == "__main__":
    main()
