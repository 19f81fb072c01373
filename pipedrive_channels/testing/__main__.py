"""``python -m pipedrive_channels.testing``: serve a FakePipedrive from its own process."""

from ._process import main

main()
