"""``python -m pipedrive_channels``: see :mod:`pipedrive_channels.cli`."""

from .cli import main

main()
