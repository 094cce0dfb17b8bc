import types

import asyncsync


def test_all_lists_exactly_the_public_names_sorted() -> None:
    public = {
        name
        for name, value in vars(asyncsync).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    } - {"annotations", "version", "PackageNotFoundError"}
    assert set(asyncsync.__all__) - {"__version__"} == public
    assert asyncsync.__all__ == sorted(asyncsync.__all__)
    for name in asyncsync.__all__:
        assert getattr(asyncsync, name) is not None
