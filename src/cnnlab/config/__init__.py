"""Typed settings: a run's configuration, and the one loader every settings dataclass goes through.

A run is fully described by one :class:`Config`. It is loaded from YAML (``--config FILE``), then
overridden field by field (``train.epochs=5`` or the CLI's shortcut flags), validated, and written
back, resolved, as ``config.yaml`` in the run directory so the run can be reproduced or resumed.

Every section is a dataclass, so the set of valid keys is known: an unknown key is a user error that
names the closest valid key. The model section is the one open section: besides ``name`` it takes the
chosen model's keyword arguments, which the model registry checks against the model's signature.

The other settings (a style network's training, an optimized stylization, an activation maximization, the
course) are dataclasses too, loaded by the same :func:`load_settings`: YAML, KEY=VALUE overrides, typed
values, did-you-mean, choices and their own checks behave the same everywhere.

- sections.py: Config and its sections (the fields, their defaults, why);
- loader.py: load_settings and what it is made of (YAML, overrides, coercion, choices, field help);
- checks.py: resolve, validate, RESUME_CHANGEABLE and differences.
"""

from ..errors import UserError, did_you_mean
from .checks import RESUME_CHANGEABLE, all_keys, differences, from_dict, get_field, resolve, validate
from .loader import (PRESETS_DIR, FieldInfo, apply_overrides, build, check_choices, coerce, field_docs, field_info,
                     find_config, flatten, keys_of, load_settings, load_yaml, merge, one_of, parse_override,
                     parse_overrides, presets)
from .sections import (AugmentConfig, Config, DataConfig, EMAConfig, LookaheadConfig, ModelConfig, OptimConfig,
                       ScheduleConfig, TrainConfig, TransferConfig, normalize_switch)

__all__ = [
    "AugmentConfig", "Config", "DataConfig", "EMAConfig", "FieldInfo", "LookaheadConfig", "ModelConfig",
    "OptimConfig", "PRESETS_DIR", "RESUME_CHANGEABLE", "ScheduleConfig", "TrainConfig", "TransferConfig",
    "UserError", "all_keys", "apply_overrides", "build", "check_choices", "coerce", "did_you_mean", "differences",
    "field_docs", "field_info", "find_config", "flatten", "from_dict", "get_field", "keys_of", "load_settings",
    "load_yaml", "merge", "normalize_switch", "one_of", "parse_override", "parse_overrides", "presets", "resolve",
    "validate",
]
