"""protoc-x: compiles .xproto protocol specs into XProtocol/XFrame codec modules.

Stages, one module each: parser (Lark → nodes) → check → plan → emit (Jinja2 + black).
"""

__version__ = "0.1.0"
