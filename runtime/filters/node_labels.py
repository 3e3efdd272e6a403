"""``node_labels``: this node's labels (from the config, or a file of ``key="value"`` lines as
Kubernetes' downward API writes them) added to each request's headers, so routes can match
them (blue-green). Where the protocol has a writable header map the labels travel upstream
too; elsewhere routing alone sees them."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import StrictStr, ValidationInfo, field_validator

from ..config import config_file, invalid
from ..stream import Stream
from . import FilterConfig, StreamFilter, register

LINE = re.compile(r'^\s*([A-Za-z0-9_./-]+)\s*=\s*"((?:[^"\\]|\\.)*)"\s*$')


def read_labels_file(path: str) -> dict[str, str]:
    out = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = LINE.match(line)
        if m is None:
            raise ValueError(f'{path}:{n}: not a key="value" line: {line!r}')
        out[m.group(1)] = re.sub(r"\\(.)", r"\1", m.group(2))  # \" and \\ as written
    return out


class Config(FilterConfig):
    labels: dict[StrictStr, StrictStr] = {}
    labels_file: StrictStr | None = None  # relative to the config file
    header_prefix: StrictStr = ""

    @field_validator("labels")
    @classmethod
    def _named(cls, value: dict[str, str]) -> dict[str, str]:
        if "" in value:
            raise invalid("a label needs a name (it becomes a header name)")
        return value

    @field_validator("labels_file")
    @classmethod
    def _readable(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        path = str(config_file(value, info))
        try:  # a missing or bad file is a config error at load
            read_labels_file(path)
        except OSError as e:
            raise invalid(f"cannot read {path}: {e.strerror or e}") from None
        except UnicodeDecodeError:
            raise invalid(f"{path} is not UTF-8 text") from None
        except ValueError as e:
            raise invalid(str(e)) from None
        return path


@register("node_labels")
class NodeLabels(StreamFilter):
    Config = Config

    def __init__(self, config: Config, metrics=None):
        super().__init__(config, metrics)
        labels = dict(read_labels_file(config.labels_file)) if config.labels_file else {}
        labels.update(config.labels)
        self.headers = {config.header_prefix + k: v for k, v in labels.items()}

    def on_request(self, ctx: Stream):
        if ctx.protocol.writable_headers:
            try:
                for key, value in self.headers.items():
                    ctx.frame.set_header(key, value)
                ctx.modified = True
                return None
            except NotImplementedError:  # this frame's layout has no header map
                pass
        extra = ctx.extra_headers
        if extra is None:
            ctx.extra_headers = dict(self.headers)
        else:
            extra.update(self.headers)
        return None
