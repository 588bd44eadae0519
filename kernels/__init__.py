"""The mesh's numeric hot paths: a reference, a fast CPU path and a Triton version of each,
chosen by kernels.dispatch."""

import os

import torch

# Without CUDA, Triton kernels can only run interpreted; triton reads this when it is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
