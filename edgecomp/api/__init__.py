"""The Python API's implementation: `import edgecomp` re-exports these functions and result types.

One module per step of the flow (devices, data, compressing, converting, verifying, exporting); the
CLI commands call the same library functions underneath.
"""
