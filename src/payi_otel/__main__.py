"""``python -m payi_otel doctor``: see ``payi_otel._doctor``."""

import sys

from payi_otel._doctor import main

sys.exit(main())
