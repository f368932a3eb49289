"""Regenerate torchtitan_job_config.txt: every TOML key torchtitan's JobConfig accepts, with its type.

    git clone https://github.com/pytorch/torchtitan && git -C torchtitan checkout <commit>
    python tests/emit/data/extract_torchtitan_fields.py torchtitan > tests/emit/data/torchtitan_job_config.txt

Loads `torchtitan/config/job_config.py` on its own (it needs torch; its logger import is stubbed) and
walks the JobConfig dataclass tree: one line per leaf, `section.key type`, nested sections dotted
(`quantize.linear.float8.filter_fqns`), as `--job.config_file` TOML spells them in [section] tables.
torchtitan read TOML up to 238fa995 (2026-02-23); #2386 (9810191b) replaced it with Python configs.
Not a test (pytest collects test_*.py only).
"""

import dataclasses
import importlib.util
import logging
import subprocess
import sys
import types
import typing


def load_job_config(checkout: str):
    for name in ("torchtitan", "torchtitan.tools"):
        sys.modules.setdefault(name, types.ModuleType(name))
    logging_stub = types.ModuleType("torchtitan.tools.logging")
    logging_stub.logger = logging.getLogger("torchtitan")
    sys.modules["torchtitan.tools.logging"] = logging_stub
    spec = importlib.util.spec_from_file_location("job_config", f"{checkout}/torchtitan/config/job_config.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["job_config"] = module
    spec.loader.exec_module(module)
    return module.JobConfig


def type_name(annotation) -> str:
    """bool, int, float, str, list, or a '|' union of them (Literal -> the type of its values)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "|".join(sorted({type(value).__name__ for value in typing.get_args(annotation)}))
    if origin in (typing.Union, types.UnionType):
        names = {type_name(arg) for arg in typing.get_args(annotation) if arg is not type(None)}
        return "|".join(sorted("|".join(names).split("|")))
    if origin is list or annotation is list:
        return "list"
    return getattr(annotation, "__name__", str(annotation))


def leaves(cls, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        annotation = hints[field.name]
        if dataclasses.is_dataclass(annotation):
            yield from leaves(annotation, f"{prefix}{field.name}.")
        else:
            yield f"{prefix}{field.name}", type_name(annotation)


def main(checkout: str) -> None:
    job_config = load_job_config(checkout)
    commit = subprocess.run(["git", "-C", checkout, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"# pytorch/torchtitan@{commit} torchtitan/config/job_config.py JobConfig: every TOML key (section.key type)")
    print("# produced by tests/emit/data/extract_torchtitan_fields.py")
    for key, kind in leaves(job_config):
        print(f"{key} {kind}")


if __name__ == "__main__":
    main(sys.argv[1])
