"""``python -m bigntk.config``: print the build config's JSON schema.

The committed copy is regenerated with
``python -m bigntk.config > configs/bigntk-config.schema.json``.
"""

import json
import sys

from bigntk.config import json_schema

sys.stdout.write(json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n")
