"""Distillation methods, one module each (each its own entry point); ``contrast``, ``kernels``, ``soft`` and
``sacd_*`` are the parts they share or split out."""
