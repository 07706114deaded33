#!/usr/bin/env python
"""fastreid ``projects/`` convention: ``python projects/LEAP/train_net.py --config-file ...``.

The whole integration is the import of ``leap_plugin``; the rest is fastreid's flow.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from leap_plugin.cli.train import cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(cli())
