"""TF Serving's directory layout, and files that appear whole or not at all.

TF Serving serves `<base>/<version>/` directories (numeric versions) and
loads the highest by default. Exports are written next to their target under
a hidden, non-numeric name (which TF Serving ignores), then renamed, so a
failed export leaves nothing behind and a running server never sees a
half-written version.
"""

import numbers
import os
import re
import shutil
import tempfile


def check_overwrite_target(path, overwrite, kind):
    """Refuses an existing, non-empty target unless `overwrite`; early."""
    if not os.path.lexists(path):
        return
    if kind == "directory" and not os.path.isdir(path):
        raise ValueError(
            "Invalid value received for argument `export_dir`. Expected a "
            f"directory path; {path!r} exists and is not a directory."
        )
    if kind == "file" and os.path.isdir(path):
        raise ValueError(
            "Invalid value received for argument `path`. Expected a file path; "
            f"{path!r} is a directory."
        )
    if overwrite:
        return
    if kind == "file":
        raise ValueError(
            f"Invalid value received for argument `path`: {path!r} already "
            "exists. Pass `overwrite=True` to replace it, or another path."
        )
    if os.listdir(path):
        raise ValueError(
            f"Invalid value received for argument `export_dir`: {path!r} already "
            "exists and is not empty. Pass `overwrite=True` to replace it, or "
            "another path or `version`."
        )


_VERSION = re.compile(r"[0-9]+")


def version_dir(export_dir, version):
    """`<export_dir>/<version>`; see `export_saved_model` for `version=None`."""
    try:
        export_dir = os.fspath(export_dir)
    except TypeError:
        export_dir = None
    if not isinstance(export_dir, str) or not export_dir:
        raise ValueError(
            "Invalid value received for argument `export_dir`. Expected a "
            f"non-empty path. Received: export_dir={export_dir!r}"
        )
    if os.path.exists(export_dir) and not os.path.isdir(export_dir):
        raise ValueError(
            "Invalid value received for argument `export_dir`. Expected a "
            f"directory path; {export_dir!r} exists and is not a directory."
        )
    if version is None:
        if _VERSION.fullmatch(os.path.basename(os.path.normpath(export_dir))):
            return export_dir
        existing = []
        if os.path.isdir(export_dir):
            existing = [int(d) for d in os.listdir(export_dir) if _VERSION.fullmatch(d)]
        return os.path.join(export_dir, str(max(existing, default=0) + 1))
    if isinstance(version, bool) or not isinstance(version, numbers.Integral) or version < 0:
        raise ValueError(
            "Invalid value received for argument `version`. Expected None or "
            f"an integer >= 0 (TF Serving's version directories are numbers). "
            f"Received: version={version!r}"
        )
    return os.path.join(export_dir, str(version))


def replace_atomically(write, target, is_dir):
    """Runs `write(tmp)` on a hidden sibling of `target`, then renames it.

    A failure leaves nothing behind and `target` as it was. The temporary
    name starts with a dot and is not a number, so TF Serving, which watches
    the base directory for numeric versions, never sees a half-written one.
    """
    target = os.path.abspath(target)
    parent, name = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    if is_dir:
        tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    else:
        handle, tmp = tempfile.mkstemp(prefix=f".{name}.tmp-", dir=parent)
        os.close(handle)
    replaced = None
    try:
        write(tmp)
        if is_dir and os.path.isdir(target):
            # A directory cannot be renamed over a non-empty one: move the
            # old version aside first, put it back if the second rename fails.
            replaced = f"{tmp}.replaced"
            os.rename(target, replaced)
        os.replace(tmp, target)
    except BaseException:
        if replaced is not None and not os.path.exists(target):
            os.rename(replaced, target)
            replaced = None
        if is_dir:
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.remove(tmp)
        raise
    finally:
        if replaced is not None:
            shutil.rmtree(replaced, ignore_errors=True)
    return target
