"""The mesh's numeric hot paths: a reference, a fast CPU path and a Triton version of each,
chosen by kernels.dispatch."""
