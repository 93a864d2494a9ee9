"""deepspec_kernels: optional Triton kernels.

Each kernel has an eager twin in ``deepspec_core.losses`` and a parity test. Core imports this
package lazily and never requires it on a CPU.
"""
