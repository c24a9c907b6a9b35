"""Student networks: the video ResNet-18s (``video``) and the tiny default 3-D CNN."""
