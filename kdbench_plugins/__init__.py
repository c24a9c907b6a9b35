"""The built-in kdbench plugins, laid out by role and loaded through the same entry points as third-party ones.

- ``datasets/``: ``synthetic`` (in memory), ``sleep`` (``s3ve``, ``sleepedf``), ``ucf51``;
- ``teachers/``: ``eeg`` (AttnSleep, DeepSleepNet, SEN, MC2SleepNet), ``audio`` (PANNs Cnn14), ``precomputed``,
  ``tiny_eeg``;
- ``students/``: ``video`` (R3D-18, R(2+1)D-18), ``tiny_3dcnn``;
- ``distillers/``: one module per method;
- ``shared/``: code more than one role uses (PyAV media helpers, the tiny networks' common body).

Each module that implements a hook is one entry point in ``pyproject.toml``, named ``<role>.<module>``.
Names starting with ``_`` are private to their module; anything another module or a test uses is public.
"""
