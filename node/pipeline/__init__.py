"""From a complete study to its outputs: the quiet-period assembler, the worker pool and the job a worker runs."""
