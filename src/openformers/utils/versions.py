"""`require_version("datasets>=2.14.0", hint)`: the check of an installed package's version that the reference's
example scripts run before they start."""

import importlib.metadata
import sys

from packaging.requirements import InvalidRequirement, Requirement


def require_version(requirement: str, hint: str | None = None) -> None:
    """Raise unless the distribution `requirement` names (pip's syntax: "numpy", "tqdm>=4.60,<5", "python>=3.10")
    is installed at a version it allows: PackageNotFoundError when it is missing, ImportError naming the version
    found otherwise; `hint` (how to fix it) ends either message."""
    try:
        wanted = Requirement(requirement)
    except InvalidRequirement as error:
        raise ValueError(f"require_version: {requirement!r} is not a requirement in pip's format, such as "
                         f"'numpy' or 'package>=1.23,<2' ({error}).") from error
    suffix = f"\n{hint}" if hint else ""
    if wanted.name == "python":
        found = ".".join(map(str, sys.version_info[:3]))
    else:
        try:
            found = importlib.metadata.version(wanted.name)
        except importlib.metadata.PackageNotFoundError:
            raise importlib.metadata.PackageNotFoundError(
                f"The {requirement!r} distribution was not found and is required by this application.{suffix}"
            ) from None
    if not wanted.specifier.contains(found, prereleases=True):
        raise ImportError(f"{requirement} is required by this application, but found {wanted.name}=={found}.{suffix}")


def require_version_core(requirement: str) -> None:
    """require_version, with the hint to reinstall openformers' test dependencies."""
    require_version(requirement, "Try: pip install -e '.[test]' (or update the package named).")
