"""Emit a planned spec as a Python module: method bodies are written here from the plan, the
module around them comes from the Jinja2 templates in ``templates/`` here, and black formats
the result. Spec strings reach the output only through ``repr``; spec names only after the
checker has accepted them as plain identifiers.

The Python back end, one file per part of the module:

- ``code``: the code writer and the module-level names; ``exprs``: spec expressions as Python;
- ``decode``, ``scan``, ``encode``, ``inside``, ``semantics``: the Emitter's mixins, one per part
  of the generated module;
- ``module``: the Emitter, the template and black; ``verify``: the check of the result.
"""

from __future__ import annotations

from .code import API_NAMES
from .module import Emitter, emit
from .verify import verify

__all__ = ["API_NAMES", "Emitter", "emit", "verify"]
