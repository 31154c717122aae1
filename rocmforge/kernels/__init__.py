"""Triton kernels (one file each) and their pure-torch twins (`reference*.py`)."""
