"""``python -m densenet_lit {fit,validate,test,predict}``: the LightningCLI of the project.

* :mod:`.app`: the ``LightningCLI`` subclass that wires a run together;
* :mod:`.extends`: the ``extends:`` key of config files;
* :mod:`.options`: the ``run.*`` options;
* :mod:`.parser`: short usage and "Did you mean ...?" on parser errors;
* :mod:`.preflight`: the checks before training (checkpoint, images, batch, devices);
* :mod:`.errors`: user errors in one line;
* :mod:`.main`: :func:`run` and :func:`main`.
"""

from densenet_lit.cli.app import DenseNetCLI
from densenet_lit.cli.main import main, run

__all__ = ["DenseNetCLI", "main", "run"]
