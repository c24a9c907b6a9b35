"""Distillation methods, one module each (each its own entry point); ``contrast``, ``kernels`` and ``sacd_*`` are the
parts they share or split out."""
