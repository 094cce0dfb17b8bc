import subprocess
import sys
import types

import asyncsync


def test_all_lists_exactly_the_public_names_sorted() -> None:
    public = {
        name
        for name in dir(asyncsync)
        if not name.startswith("_") and not isinstance(getattr(asyncsync, name), types.ModuleType)
    } - {"annotations", "version", "importlib", "PackageNotFoundError", "TYPE_CHECKING", "Any"}
    assert set(asyncsync.__all__) - {"__version__"} == public
    assert asyncsync.__all__ == sorted(asyncsync.__all__)


def test_every_exported_name_resolves_to_its_defining_module() -> None:
    for name in asyncsync.__all__:
        value = getattr(asyncsync, name)
        assert value is not None
        if name != "__version__":
            assert getattr(value, "__name__", name) == name


def test_importing_the_package_does_not_load_the_http_stack() -> None:
    code = "import sys, asyncsync; print('aiohttp' in sys.modules, 'asyncsync.jobs' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False", "False"]
