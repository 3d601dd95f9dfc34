"""``python -m densenet_lit {fit,validate,test,predict} --config experiments/<run>.yaml``."""

from densenet_lit.cli import main

if __name__ == "__main__":
    main()
