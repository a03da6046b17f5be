"""``python -m dovecote`` is the ``dovecote`` command."""

import sys

from dovecote.cli import main

sys.exit(main())
