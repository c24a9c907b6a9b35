"""Teacher networks: EEG (``eeg``), audio (``audio``), stored embeddings (``precomputed``) and the tiny default."""
