"""Dataset plugins: the in-memory ``synthetic`` default and the file-backed ``sleep`` and ``ucf51`` datasets."""
