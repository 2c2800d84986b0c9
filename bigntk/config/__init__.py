"""Build configs: a YAML file naming the model, the data and the kernel of a build.

:func:`load_config` reads and validates one (``--set`` overrides included);
:func:`estimate` times one block and sizes the whole build; :func:`submit`
sends a config to a Ray cluster as a job; :func:`json_schema` is the config's
JSON schema for editors (``python -m bigntk.config`` prints it).
"""

from bigntk.config._datasets import load_builtin as load_builtin
from bigntk.config._estimate import Estimate as Estimate
from bigntk.config._estimate import estimate as estimate
from bigntk.config._load import BuildConfig as BuildConfig
from bigntk.config._load import apply_overrides as apply_overrides
from bigntk.config._load import load_config as load_config
from bigntk.config._load import parse_config as parse_config
from bigntk.config._load import read_config as read_config
from bigntk.config._schema import json_schema as json_schema
from bigntk.config._submit import Submission as Submission
from bigntk.config._submit import submit as submit
from bigntk.config._submit import wait as wait

__all__ = [
    "BuildConfig",
    "Estimate",
    "Submission",
    "apply_overrides",
    "estimate",
    "json_schema",
    "load_builtin",
    "load_config",
    "parse_config",
    "read_config",
    "submit",
    "wait",
]
