"""Where cluster specs come from and how a name finds one: the bundled `cluster_specs/`, the user's folder
(platformdirs) and the working directory, first match wins; `load_cluster` resolves a name or a path,
refuses a data file's name that points outside those folders, and suggests the nearest name on a typo.
The schema the files are validated into is planner.specs.hardware."""

from __future__ import annotations

import difflib
import functools
import os
from importlib import resources
from pathlib import Path

from planner.errors import PlannerInputError
from planner.io import shown
from planner.specs.hardware import ClusterSpec, load_cluster_file

# The cluster every command (and the Python API) plans for when none is named.
DEFAULT_CLUSTER = "dgx-h100"


def default_cluster_dir() -> Path:
    """The bundled `cluster_specs/`: the repo folder in a checkout, package data when installed.

    The checkout folder is looked up beside the package first, so a second checkout (a git worktree
    put first on PYTHONPATH) reads its own specs rather than those of the editable install.
    """
    checkout = Path(__file__).resolve().parents[2] / "cluster_specs"
    if checkout.is_dir():
        return checkout
    return Path(str(resources.files("planner.cluster_specs")))


def user_cluster_dir() -> Path:
    """The user's spec folder, where `planner calibrate` writes: <user config folder>/planner/cluster_specs
    (platformdirs: ~/.config/planner/cluster_specs on Linux, honouring XDG_CONFIG_HOME)."""
    import platformdirs

    return Path(platformdirs.user_config_dir("planner", appauthor=False)) / "cluster_specs"


def cluster_folders(cluster_dir: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """(origin, folder) pairs a cluster name resolves in, first match wins: `cluster_dir` alone when given
    (--cluster-dir); otherwise the working directory, the user folder, then the bundled specs."""
    if cluster_dir:
        return [("--cluster-dir", Path(cluster_dir))]
    return [("working directory", Path.cwd()), ("user", user_cluster_dir()), ("bundled", default_cluster_dir())]


def available_clusters(cluster_dir: str | os.PathLike | None = None) -> list[str]:
    """The spec names in one folder (default: the bundled specs)."""
    folder = Path(cluster_dir) if cluster_dir else default_cluster_dir()
    if "\0" in str(folder) or not _is_dir(folder):
        raise PlannerInputError(f"cluster folder {shown(folder)} {_missing_folder(folder)}")
    return sorted(p.name.removesuffix(".yaml") for p in folder.glob("*.yaml"))


def _is_cluster_spec(path: Path) -> bool:
    """Whether a YAML file in the working directory is a cluster spec (it holds other YAML too: law files)."""
    try:
        load_cluster_file(path)
        return True
    except PlannerInputError:
        return False


def find_clusters(cluster_dir: str | os.PathLike | None = None) -> list[tuple[str, str, Path, list[str]]]:
    """(name, origin, path, origins it hides) of every spec the search path holds, in search order: a name
    found in an earlier folder hides the same name in later ones. In the working directory only files that
    load as a spec count, and those named as a spec of a later folder, which load_cluster takes first (a broken
    ./dgx-h100.yaml was listed as the bundled spec it hides, while every command read the broken file)."""
    found: dict[str, tuple[str, str, Path, list[str]]] = {}
    folders = cluster_folders(cluster_dir)
    if cluster_dir and ("\0" in str(cluster_dir) or not _is_dir(Path(cluster_dir))):
        raise PlannerInputError(f"cluster folder {shown(cluster_dir)} {_missing_folder(Path(cluster_dir))}")
    elsewhere = {path.name.removesuffix(".yaml") for origin, folder in folders if origin != "working directory"
                 for path in (folder.glob("*.yaml") if _is_dir(folder) else [])}
    for origin, folder in folders:
        for path in sorted(folder.glob("*.yaml")) if _is_dir(folder) else []:
            name = path.name.removesuffix(".yaml")
            if name in found:
                found[name][3].append(origin)
            elif origin != "working directory" or (name in elsewhere and _is_file(path)) or _is_cluster_spec(path):
                found[name] = (name, origin, path, [])
    return list(found.values())


@functools.lru_cache(maxsize=64)
def _load_cached(path: str, mtime: float) -> ClusterSpec:
    return load_cluster_file(path)


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long for the filesystem, ...
        return False


def check_cluster_dir(cluster_dir: str | os.PathLike | None, flag: str = "--cluster-dir") -> None:
    """Refuse a cluster folder that is none (missing, or a file) before a command reads any row through it: validate and
    doctor would otherwise report it once per row (helper-found: 64 lines, exit 1), where the other commands give one
    line and exit 2."""
    if cluster_dir is not None and not _is_dir(Path(cluster_dir)):
        raise PlannerInputError(f"{flag} {shown(cluster_dir)}: cluster folder {_missing_folder(Path(cluster_dir))}")


def _missing_folder(path: Path) -> str:
    """Why `path` is no cluster folder: a file (or other non-folder) stands there, or nothing does."""
    try:
        present = "\0" not in str(path) and path.exists()
    except (OSError, ValueError):
        present = False
    return "is not a folder" if present else "does not exist"


def _not_a_spec_file(path: Path) -> str:
    """Why `path` is no spec file: nothing stands there, or something that is not a regular file (a folder, a named
    pipe, a device) does."""
    try:
        present = "\0" not in str(path) and path.exists()
    except (OSError, ValueError):
        present = False
    if not present:
        return "does not exist"
    return "is a folder, not a file" if _is_dir(path) else "is not a regular file (a named pipe or a device?)"


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


def _confine(path: Path, folders: list[Path], name: str, data_file: str) -> None:
    """Refuse a cluster named in a data file that resolves outside the spec folders and the working directory."""
    resolved = path.resolve()
    inside = any(resolved.is_relative_to(root.resolve()) for root in (*folders, Path.cwd()))
    if Path(name).is_absolute() or not inside:
        raise PlannerInputError(
            f"{data_file}: cluster {name!r} points outside the cluster-spec folders {', '.join(map(str, folders))} and "
            "the working directory; a data file may name a spec in those folders or a relative path under the "
            "working directory")


def load_cluster(name_or_path: str, cluster_dir: str | os.PathLike | None = None,
                 data_file: str | None = None) -> ClusterSpec:
    """Resolve a cluster by path to a YAML file, or by name: NAME.yaml in `cluster_dir` when given, else in
    the working directory, the user folder (user_cluster_dir) and the bundled specs, in that order.

    `data_file` says the name was read from a file (a runs CSV row "runs.csv:12", a --config file) rather
    than typed by the user: it must then resolve inside a cluster folder or under the working directory.
    """
    name = str(name_or_path)
    if not name.strip() or "\0" in name:
        raise PlannerInputError(f"{data_file + ': ' if data_file else ''}expected a cluster name or spec path, got {name!r}")
    if cluster_dir is not None and "\0" in str(cluster_dir):
        raise PlannerInputError(f"expected a cluster folder, got {str(cluster_dir)!r}")
    folders = [folder for _, folder in cluster_folders(cluster_dir)]
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml") and (data_file is None or not candidate.is_absolute()) and _is_file(candidate):
        path = candidate
    else:
        path = next((f / f"{name}.yaml" for f in folders if _is_file(f / f"{name}.yaml")), folders[0] / f"{name}.yaml")
    if data_file is not None:
        _confine(path, folders, name, data_file)
    if not _is_file(path):
        if cluster_dir and not _is_dir(Path(cluster_dir)):
            raise PlannerInputError(f"unknown cluster {name!r}: cluster folder {shown(cluster_dir)} "
                                    f"{_missing_folder(Path(cluster_dir))}")
        if candidate.suffix in (".yaml", ".yml"):
            # A path to a spec file, not a name: say the file is missing rather than list the known names.
            raise PlannerInputError(f"{data_file + ': ' if data_file else ''}cluster spec file {shown(candidate)} "
                                    f"{_not_a_spec_file(candidate)}; expected a "
                                    "cluster name (`planner clusters` lists them) or the path of a spec YAML")
        known = sorted(found[0] for found in find_clusters(cluster_dir))
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.3)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        where = shown(cluster_dir) if cluster_dir else "the working directory, " + shown(user_cluster_dir()) + " or the bundled specs"
        raise PlannerInputError(f"unknown cluster {name!r} in {where}{hint} (known: {', '.join(known) or '(none)'})")
    return _load_cached(str(path.resolve()), path.stat().st_mtime)
