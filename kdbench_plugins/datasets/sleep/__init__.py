"""Sleep datasets read from files: ``s3ve`` (sleep-lab PSG + infrared video) and ``sleepedf`` (PhysioNet
Sleep-EDF, EEG only), with generators that write small copies in the same formats."""

from kdbench.hookspecs import hookimpl

from .s3ve import S3VE
from .sleepedf import SleepEDF

__all__ = ["S3VE", "SleepEDF"]


@hookimpl
def register_datasets(register):
    register(S3VE)
    register(SleepEDF)
