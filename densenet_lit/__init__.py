"""densenet_lit: DenseNet (Huang et al., CVPR 2017) as a PyTorch Lightning experiment repository."""

__version__ = "0.1.0"
