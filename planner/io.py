"""Safe file input and output shared by every command: bounded reads, bounded YAML, atomic writes.

Input: `read_input_text` refuses what is not a readable file of sane size (an empty name, a folder,
a device such as /dev/zero, a file over the size limit) and reports undecodable bytes with their line.
`load_yaml` is `yaml.safe_load` with limits a hand-edited spec never reaches (size, nesting depth,
alias expansion - a "billion laughs" file stays small on disk) and with duplicate keys reported,
since YAML otherwise keeps the last of two equal keys without a word.

Output: an output must be a regular file (or not exist yet); folders, devices, FIFOs and sockets
are refused even with --force. Files are written into a temporary folder beside the target and
moved into place, so a crash, Ctrl-C or SIGTERM never leaves a truncated profile, spec or report; a
set of files (a report and its figures) is moved in all or nothing (`write_files_atomic`). An existing
file is only replaced when the caller says `force=True`; without it the move is a hard link, which
fails rather than overwrite a file that appeared meanwhile. New files get the permissions a plain
`open()` would give (umask), replaced files keep theirs. `append_text` adds bytes to the end of a
file and never touches what is there; a failed append is cut back to the old length.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

import yaml

from planner.errors import PlannerInputError

MAX_INPUT_BYTES = 256 * 2**20  # runs CSVs, law data, logs: far above any real one
MAX_YAML_BYTES = 4 * 2**20  # cluster specs, law files, configs are a few kB
MAX_YAML_DEPTH = 64  # nesting levels; specs use 3
MAX_YAML_NODES = 200_000  # values after alias expansion; a law file with 1000 bootstrap samples has ~10,000


def shown(path: str | os.PathLike) -> str:
    """A path for a message: as typed, or repr() when it is blank-edged or holds control characters (the
    message stays one honest line)."""
    text = str(path)
    return text if text and text.isprintable() and text.strip() == text else repr(text)


def input_file(path: str | os.PathLike, what: str, limit: int = MAX_INPUT_BYTES) -> Path:
    """`path` as a Path once it is known to name something readable as a `what`; else a one-line error."""
    if not str(path).strip():
        raise PlannerInputError(f"expected a {what} path, got an empty name")
    if "\0" in str(path):
        raise PlannerInputError(f"expected a {what} path, got {str(path)!r}")
    source, name = Path(path), shown(path)
    try:
        info = source.stat()
    except FileNotFoundError:
        raise PlannerInputError(f"{name}: no such {what}") from None
    except OSError as error:
        raise PlannerInputError(f"{name}: cannot read {what} ({error.strerror or error.__class__.__name__})") from None
    if stat.S_ISDIR(info.st_mode):
        raise PlannerInputError(f"{name}: is a folder; expected a {what}")
    if not (stat.S_ISREG(info.st_mode) or stat.S_ISFIFO(info.st_mode)):
        raise PlannerInputError(f"{name}: not a regular file (a device or socket); expected a {what}")
    if stat.S_ISREG(info.st_mode) and info.st_size > limit:
        raise PlannerInputError(f"{name}: {info.st_size:,} bytes is more than the {limit:,} accepted for a {what}")
    return source


def distinct_input_files(paths, what: str) -> list[Path]:
    """Every path checked by `input_file`; one that names a file already named (the same path, or another
    name for it: a link, ./a.csv beside a.csv) is a one-line error, since its rows would count twice (in
    calibrate a held-out row would also be in the training set)."""
    sources, seen = [], {}
    for path in paths:
        source = input_file(path, what)
        info = source.stat()
        key = (info.st_dev, info.st_ino) if stat.S_ISREG(info.st_mode) else None
        if key in seen:
            raise PlannerInputError(f"{shown(path)}: names the same {what} as {shown(seen[key])}; "
                                    "name each file once (its rows would count twice)")
        if key is not None:
            seen[key] = path
        sources.append(source)
    return sources


def read_at_most(source: str | os.PathLike, limit: int, what: str = "", name: str | None = None) -> bytes:
    """Up to `limit` + 1 bytes of a file (one more than accepted, so the caller sees an oversized file);
    an OSError becomes a one-line input error naming the file (`name`, default the path) and `what` it is."""
    try:
        with open(source, "rb") as stream:
            return stream.read(limit + 1)
    except OSError as error:
        reason = error.strerror or error.__class__.__name__
        raise PlannerInputError(f"{name or shown(source)}: cannot read {what + ' ' if what else ''}({reason})") from None


def read_input_text(path: str | os.PathLike, what: str, limit: int = MAX_INPUT_BYTES, encoding: str = "utf-8") -> str:
    """The text of an input file, read at most `limit` bytes far; errors name the file (and line)."""
    source, name = input_file(path, what, limit), shown(path)
    data = read_at_most(source, limit, what, name)
    if len(data) > limit:
        raise PlannerInputError(f"{name}: more than the {limit:,} bytes accepted for a {what}")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise PlannerInputError(f"{name}:{line}: not UTF-8 text (byte 0x{data[error.start]:02x}); "
                                f"expected a {what}") from None


# ---------------------------------------------------------------------------------------------
# YAML
# ---------------------------------------------------------------------------------------------

def _yaml_error_line(error: yaml.YAMLError) -> int:
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    return mark.line + 1 if mark is not None else 1


def _tree_problems(root: yaml.Node) -> list[tuple[int, str]]:
    """Depth, alias-expanded size and duplicate keys of a composed YAML document, as (line, message)."""
    problems: list[tuple[int, str]] = []
    size: dict[int, int] = {}  # id(node) -> values under it, aliases expanded
    depth: dict[int, int] = {}
    open_nodes: set[int] = set()  # nodes whose children are still being visited
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in size:
            continue
        children = ([n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode)
                    else list(node.value) if isinstance(node, yaml.SequenceNode) else [])
        if not done:
            if id(node) in open_nodes:  # reached again from inside itself
                return [(node.start_mark.line + 1, "YAML alias refers to a node that contains it (recursive)")]
            open_nodes.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in size)
            continue
        open_nodes.discard(id(node))
        size[id(node)] = 1 + sum(size[id(child)] for child in children)
        depth[id(node)] = 1 + max((depth[id(child)] for child in children), default=0)
        if size[id(node)] > MAX_YAML_NODES:
            return [(node.start_mark.line + 1, f"YAML expands to more than {MAX_YAML_NODES:,} values "
                                               "(aliases referencing aliases?)")]
        if depth[id(node)] > MAX_YAML_DEPTH:
            return [(node.start_mark.line + 1, f"YAML nested more than {MAX_YAML_DEPTH} levels deep")]
        if isinstance(node, yaml.MappingNode):
            first_line: dict[str, int] = {}
            for key, _ in node.value:
                if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                    continue
                line = key.start_mark.line + 1
                if key.value in first_line:
                    problems.append((line, f"duplicate key '{key.value}' (first at line {first_line[key.value]}); "
                                           "YAML would keep only the last one"))
                else:
                    first_line[key.value] = line
    return sorted(problems)


def parse_yaml(text: str) -> tuple[object, list[tuple[int, str]], yaml.Node | None]:
    """(data, problems, node) of a YAML document: yaml.safe_load semantics, bounded.

    `problems` are (line, message); data is None when one of them stops the parse (syntax, depth,
    size), and the document's value otherwise (duplicate keys keep YAML's last-one-wins value).
    """
    if len(text) > MAX_YAML_BYTES:
        return None, [(1, f"{len(text):,} characters is more than the {MAX_YAML_BYTES:,} accepted for a YAML file")], None
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as error:  # characters YAML does not allow (control codes)
        line = text[:error.position].count("\n") + 1
        return None, [(line, f"invalid YAML (control character {error.character:#04x} is not allowed)")], None
    try:
        try:
            node = loader.get_single_node()
        except yaml.YAMLError as error:
            problem = " ".join(str(getattr(error, "problem", None) or "parse error").split())
            return None, [(_yaml_error_line(error), f"invalid YAML ({problem})")], None
        except RecursionError:
            return None, [(1, f"YAML nested more than {MAX_YAML_DEPTH} levels deep")], None
        if node is None:
            return None, [], None
        problems = _tree_problems(node)
        if any("duplicate key" not in message for _, message in problems):
            return None, problems, node
        try:
            return loader.construct_document(node), problems, node
        except yaml.YAMLError as error:
            problem = " ".join(str(getattr(error, "problem", None) or error).split())
            return None, problems + [(_yaml_error_line(error), f"invalid YAML ({problem})")], node
    finally:
        loader.dispose()


def load_yaml(text: str, where: str) -> object:
    """yaml.safe_load, bounded, refusing duplicate keys; errors are one line naming `where` and the line."""
    data, problems, _ = parse_yaml(text)
    if problems:
        line, message = problems[0]
        raise PlannerInputError(f"{where}:{line}: {message}")
    return data


def load_yaml_file(path: str | os.PathLike, what: str) -> object:
    """Read and parse a YAML input file (see `read_input_text` and `load_yaml`)."""
    return load_yaml(read_input_text(path, what, MAX_YAML_BYTES), shown(path))


# ---------------------------------------------------------------------------------------------
# Outputs: atomic single files, all-or-nothing sets, appends
# ---------------------------------------------------------------------------------------------

_NOT_FILES = ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
              (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"))


def _not_a_file(mode: int) -> str | None:
    """What an existing output is when it is not a regular file ("a folder", ...); None for a regular file."""
    return None if stat.S_ISREG(mode) else next((what for test, what in _NOT_FILES if test(mode)), "not a regular file")


def _cannot_write(path, error: OSError) -> PlannerInputError:
    return PlannerInputError(f"{shown(path)}: cannot write ({error.strerror or error.__class__.__name__})")


def output_exists(path: str | os.PathLike) -> bool:
    """Whether an output path is taken by a regular file (or a link to one, or a dangling link).

    Anything else that exists - a folder, a device, a FIFO, a socket - is an error, --force or not:
    replacing it would destroy a device node or a folder, and writing into it would block or vanish.
    A name no file can have is an error too.
    """
    if "\0" in str(path):
        raise PlannerInputError(f"expected an output file name, got {str(path)!r}")
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    except NotADirectoryError:
        raise PlannerInputError(f"{shown(path)}: cannot write (a parent is a file, not a folder)") from None
    except OSError as error:
        raise _cannot_write(path, error) from None
    try:
        what = _not_a_file(os.stat(path).st_mode)  # follows a link: a link to /dev/null is a device
    except OSError:  # a dangling link: replacing the link itself harms nothing
        what = None
    if what:
        raise PlannerInputError(f"{shown(path)}: is {what}; expected a regular file to write (outputs never replace "
                                "folders, devices or pipes)")
    return True


def check_new_outputs(paths, force: bool) -> None:
    """Refuse before any work when an output exists and --force is absent, or is not a regular file (the
    write checks again at the end; this saves a long search or fit whose result could not be written)."""
    existing = [str(p) for p in paths if output_exists(p)]
    if existing and not force:
        raise PlannerInputError(f"{existing[0]}: already exists; pass --force to overwrite it"
                                + (f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""))


def check_distinct_outputs(outputs: dict[str, list]) -> None:
    """Refuse before any work when two outputs of one command name the same file (`outputs`: flag -> the paths it
    writes): the later would silently replace the earlier, or refuse it as existing after the first was written."""
    seen: list[tuple[str, str | os.PathLike]] = []
    for flag, paths in outputs.items():
        for path in paths:
            for other_flag, other in seen:
                if same_file(path, other):
                    raise PlannerInputError(f"{shown(path)}: written by both {other_flag} and {flag}; give them "
                                            "different paths")
            seen.append((flag, path))


def same_file(first: str | os.PathLike, second: str | os.PathLike) -> bool:
    """Whether two names reach one file: the same path, another spelling of it, or a link to it."""
    try:
        return Path(first).samefile(second)
    except OSError:  # one of them does not exist (yet): compare where they would be
        return Path(first).resolve() == Path(second).resolve()


def refuse_output_onto_input(flag: str, output: str | os.PathLike | None, inputs) -> None:
    """An output that names one of the command's own inputs is refused, --force or not: writing it would
    replace the data being read (a law over its runs, rows over their log), which no one means."""
    if not output:
        return
    for source in inputs:
        if same_file(output, source):
            raise PlannerInputError(f"{flag} {shown(output)}: is the input {shown(source)} this command reads; "
                                    "give another path (an input is never overwritten, even with --force)")


def _refuse_existing(target: Path, flag: str) -> None:
    raise PlannerInputError(f"{shown(target)}: already exists; pass {flag} to overwrite it")


def _umask() -> int:
    # The only portable way to read the umask is to set it; read once per write, restored at once.
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _final_mode(target: Path, executable: bool, umask: int) -> int:
    """A replaced file keeps its mode; a new one gets what a plain open() (or a shell's chmod +x) would give."""
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except OSError:
        return (0o777 if executable else 0o666) & ~umask


def _make_folders(folder: Path) -> list[Path]:
    """Create `folder` and missing parents; the ones created, outermost first (for undo)."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for each in reversed(missing):
        each.mkdir(exist_ok=True)
    return missing[::-1]


def _stage(staging: Path, index: int, data: bytes, mode: int) -> Path:
    temp = staging / str(index)
    with open(temp, "xb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())
    os.chmod(temp, mode)
    return temp


def _move_in(temp: Path, target: Path, force: bool, flag: str, backup: Path) -> tuple[bool, Path | None]:
    """Move a staged file onto `target`: (whether it replaced a file, a hard link to that file for undo)."""
    if not force:
        try:
            os.link(temp, target)  # fails if the target appeared since the check: never clobber
        except FileExistsError:
            _refuse_existing(target, flag)
        except OSError:  # a filesystem without hard links
            if os.path.lexists(target):
                _refuse_existing(target, flag)
            os.replace(temp, target)
        return False, None
    replaced = os.path.lexists(target)
    if replaced:
        try:
            os.link(target, backup, follow_symlinks=False)
        except OSError:  # no hard links here: the old file cannot be brought back, only replaced
            backup = None
    os.replace(temp, target)
    return replaced, backup if replaced else None


def _undo(moved: list[tuple[Path, bool, Path | None]], stagings: list[Path], folders: list[Path]) -> None:
    """Best effort: new files removed, replaced ones restored from their links, the staging folders and
    the folders this write created removed."""
    for target, replaced, backup in reversed(moved):
        try:
            if backup is not None:
                os.replace(backup, target)
            elif not replaced:
                target.unlink()
        except OSError:
            pass
    for staging in stagings:
        shutil.rmtree(staging, ignore_errors=True)
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            pass


def write_files_atomic(files: dict, force: bool = False, flag: str = "--force", executable=()) -> list[Path]:
    """Write a set of files (path -> bytes) all or nothing.

    Every file is first written into a temporary folder in its own folder (this is the slow part: data and
    fsync; its own folder, so that the rename never crosses a filesystem and never needs a folder the outputs
    do not), then moved into place by rename. An error or interrupt (Ctrl-C; SIGTERM, which the CLI turns into
    one) while staging leaves the outputs as they were; during the moves, the files already moved are taken
    back (new ones removed, replaced ones restored from hard links) and the folders this call created are
    removed. Paths in `executable` get execute bits on creation.
    """
    if any(not str(path).strip() for path in files):  # before Path(), which reads "" as "."
        raise PlannerInputError("expected an output file name, got an empty name")
    targets = [Path(path) for path in files]
    if not targets:
        return []
    for target in targets:
        if output_exists(target) and not force:
            _refuse_existing(target, flag)
    umask, scripts = _umask(), {Path(p) for p in executable}
    folders: list[Path] = []
    moved: list[tuple[Path, bool, Path | None]] = []
    stagings: dict[Path, Path] = {}  # each target's folder -> the staging folder inside it
    current = targets[0]
    try:
        for parent in dict.fromkeys(t.parent for t in targets):
            current = parent
            folders += _make_folders(parent)
        staged = []
        for index, (target, data) in enumerate(zip(targets, files.values())):
            current = target
            if target.parent not in stagings:
                stagings[target.parent] = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp",
                                                                dir=target.parent))
            staged.append(_stage(stagings[target.parent], index, data, _final_mode(target, target in scripts, umask)))
        for index, (target, temp) in enumerate(zip(targets, staged)):
            current = target
            moved.append((target, *_move_in(temp, target, force, flag, stagings[target.parent] / f"{index}.old")))
    except BaseException as error:
        _undo(moved, list(stagings.values()), folders)
        if isinstance(error, OSError):
            raise _cannot_write(current, error) from None
        raise
    finally:
        for staging in stagings.values():
            shutil.rmtree(staging, ignore_errors=True)
    return targets


def write_text_atomic(path: str | os.PathLike, text: str, force: bool = False, flag: str = "--force") -> Path:
    """Write `text` (UTF-8) to `path` atomically; refuse to overwrite unless `force`."""
    return write_files_atomic({path: text.encode("utf-8")}, force, flag)[0]


def write_bytes_atomic(path: str | os.PathLike, data: bytes, force: bool = False, flag: str = "--force") -> Path:
    """Binary twin of `write_text_atomic` (plots, archives)."""
    return write_files_atomic({path: data}, force, flag)[0]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def append_text(path: str | os.PathLike, text: str) -> Path:
    """Add `text` (UTF-8) at the end of the existing regular file `path`; the bytes already there are
    never touched. All or nothing: a write that fails or is interrupted part-way (a full disk) is cut
    back to the old length."""
    target = Path(path)
    if not output_exists(target):  # refuses a FIFO before open() could wait for a reader
        raise PlannerInputError(f"{shown(target)}: no such file to append to")
    try:
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as error:
        raise _cannot_write(target, error) from None
    try:
        what = _not_a_file(os.fstat(fd).st_mode)  # it may have been swapped since the check
        if what:
            raise PlannerInputError(f"{shown(target)}: is {what}; expected a regular file to append to")
        size = os.fstat(fd).st_size
        try:
            _write_all(fd, text.encode("utf-8"))
            os.fsync(fd)
        except BaseException:
            os.ftruncate(fd, size)
            raise
    except OSError as error:
        raise _cannot_write(target, error) from None
    finally:
        os.close(fd)
    return target
