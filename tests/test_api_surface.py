"""The public surface users import: every public module's names, their docstrings, and the typing marker."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import importlib.util
import inspect
import pkgutil
import subprocess
import sys
import warnings
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import pipedrive_channels
from pipedrive_channels import OAuthToken, ValidationError


def _public_modules() -> list[str]:
    """Every module of the package a user may import: none of its dotted parts is ``_private`` (or ``__main__``)."""
    found = pkgutil.walk_packages(pipedrive_channels.__path__, "pipedrive_channels.")
    names = [info.name for info in found if not any(part.startswith("_") for part in info.name.split("."))]
    return ["pipedrive_channels", *sorted(names)]


def _import(module_name: str) -> ModuleType:
    with warnings.catch_warnings():  # the deprecated re-export modules say so on import
        warnings.simplefilter("ignore", DeprecationWarning)
        return importlib.import_module(module_name)


def _documented_constant(module_name: str, name: str) -> bool:
    """Whether ``name`` is assigned with a string right after it (an attribute docstring), following imports."""
    module = importlib.import_module(module_name)
    body = ast.parse(inspect.getsource(module)).body
    for statement, following in zip(body, [*body[1:], None], strict=True):
        if isinstance(statement, ast.ImportFrom) and statement.module:
            for alias in statement.names:
                if (alias.asname or alias.name) == name:
                    source = importlib.util.resolve_name("." * statement.level + statement.module, module.__package__)
                    return _documented_constant(source, alias.name)
        targets = statement.targets if isinstance(statement, ast.Assign) else (
            [statement.target] if isinstance(statement, ast.AnnAssign) else [])
        if any(isinstance(target, ast.Name) and target.id == name for target in targets):
            return (isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str))
    return False


def _is_class_or_function(value: Any) -> bool:
    return inspect.isclass(value) or inspect.isfunction(inspect.unwrap(value))  # unwrap: e.g. an lru_cache's function


def _public_members(cls: type) -> dict[str, Any]:
    """A class's own public methods and properties (class and static methods unwrapped)."""
    members = {}
    for attribute, member in vars(cls).items():
        function = member.__func__ if isinstance(member, classmethod | staticmethod) else member
        if not attribute.startswith("_") and (inspect.isfunction(function) or isinstance(function, property)):
            members[attribute] = function
    return members


def test_the_documented_names_import_from_the_package() -> None:
    for name in ["ChannelsClient", "OAuthApp", "OAuthToken", "ApiToken", "Channel", "Message", "Attachment",
                 "ProviderType", "MessageStatus", "PipedriveError", "ApiError", "ValidationError", "GoneError",
                 "NotFoundError", "TransportError", "ApiResponse", "read_jsonl", "estimate",
                 "BackfillReport", "Progress", "Failure", "BadInput", "Checkpoint", "CheckpointError",
                 "CheckpointLockedError", "Budget", "Admission", "Limits", "BudgetStats", "BudgetUnavailableError"]:
        assert name in pipedrive_channels.__all__, name


def test_the_backfill_module_is_not_shadowed_by_its_function() -> None:
    # The root exports the back-fill's names but not the backfill() function: as a root attribute it would replace
    # the subpackage, so `import pipedrive_channels.backfill as m` would give the function.
    import pipedrive_channels.backfill as module

    assert inspect.ismodule(module) and inspect.ismodule(pipedrive_channels.backfill)
    assert callable(module.backfill)


def test_the_public_modules_are_found_and_the_private_ones_skipped() -> None:
    modules = _public_modules()
    assert {"pipedrive_channels.backfill", "pipedrive_channels.extension.app", "pipedrive_channels.testing"} <= set(
        modules)
    assert not [name for name in modules if "._" in name]


@pytest.mark.parametrize("module_name", _public_modules())
def test_every_public_module_documents_and_lists_its_names(module_name: str) -> None:
    module = _import(module_name)
    assert module.__doc__, module_name
    exported = module.__all__
    assert len(set(exported)) == len(exported), f"{module_name}.__all__ repeats a name"
    for name in exported:
        assert hasattr(module, name), f"{module_name}.{name} is in __all__ but does not exist"
        value = getattr(module, name)
        if name.startswith("__"):
            continue
        if _is_class_or_function(value):
            assert inspect.getdoc(value), f"{module_name}.{name}"
            if inspect.isclass(value):
                for attribute, member in _public_members(value).items():
                    assert inspect.getdoc(member), f"{module_name}.{name}.{attribute}"
        elif not inspect.ismodule(value):
            assert _documented_constant(module_name, name), f"{module_name}.{name} has no docstring after it"
    defined_here = {name for name, value in vars(module).items()
                    if not name.startswith("_") and _is_class_or_function(value) and value.__module__ == module_name}
    assert defined_here <= set(exported), f"{module_name}.__all__ lacks {sorted(defined_here - set(exported))}"


def test_importing_the_package_leaves_the_redis_library_unloaded() -> None:
    # The Redis budget is an extra: only whoever asks for it (pipedrive_channels.budget.RedisBudget) loads redis.
    probe = "import sys, pipedrive_channels; print(sorted(m for m in sys.modules if m.split('.')[0] == 'redis'))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_version_is_the_installed_distribution_s() -> None:
    assert pipedrive_channels.__version__ == importlib.metadata.version("pipedrive-channels")
    never_installed = ("import importlib.metadata as m\n"
                       "def version(name): raise m.PackageNotFoundError(name)\n"
                       "m.version = version\n"
                       "import pipedrive_channels; print(pipedrive_channels.__version__)")
    result = subprocess.run([sys.executable, "-c", never_installed], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "0+unknown"


def test_the_budget_unavailable_error_is_one_class_under_every_old_name() -> None:
    from pipedrive_channels import budget, errors, redis_budget
    from pipedrive_channels.budget import _redis

    assert issubclass(errors.BudgetUnavailableError, errors.PipedriveError)
    assert {budget.BudgetUnavailableError, redis_budget.BudgetUnavailableError, _redis.BudgetUnavailableError,
            pipedrive_channels.BudgetUnavailableError} == {errors.BudgetUnavailableError}


def test_the_old_session_module_still_imports_and_says_it_is_deprecated() -> None:
    from pipedrive_channels import _transport

    sys.modules.pop("pipedrive_channels.session", None)  # the warning is given on import, once per process
    with pytest.warns(DeprecationWarning, match="pipedrive_channels.session is deprecated"):
        session = importlib.import_module("pipedrive_channels.session")
    assert session.Session is _transport.Transport
    assert session.Response is _transport.Response
    assert (session.DEFAULT_BASE_URL, session.DEFAULT_MAX_ANSWER_BYTES) == (
        _transport.DEFAULT_BASE_URL, _transport.DEFAULT_MAX_ANSWER_BYTES
    )


def test_the_package_ships_its_typing_marker() -> None:
    assert (Path(pipedrive_channels.__file__).parent / "py.typed").is_file()


def test_a_naive_token_expiry_is_refused() -> None:
    with pytest.raises(ValidationError, match="expires_at"):
        OAuthToken("access", expires_at=datetime(2026, 1, 1))
    with pytest.raises(ValidationError, match="access_token"):
        OAuthToken("")
