"""``kdbench predict``: a distilled student stages a night of infrared video (hypnogram, AASM sleep statistics,
agreement with the PSG). Modules: ``command`` (the CLI and its checks), ``student`` (rebuilding the trained
student), ``night`` (streaming the video through it), ``sleepstats``, ``outputs``, ``plot``, ``report``."""

from kdbench.hookspecs import hookimpl


@hookimpl
def register_commands(register):
    from .command import predict_cmd

    register(predict_cmd)
