"""Optional dependencies: a missing one is skipped, a broken one is an error."""
import importlib


def is_installed(package: str) -> bool:
    """Whether ``package`` can be imported (it is, when True). False only
    when it is not installed: a package that is there but whose own imports
    fail raises that error instead of being taken as absent."""
    try:
        importlib.import_module(package)
    except ModuleNotFoundError as error:
        if error.name != package:
            raise  # installed, but one of its own imports failed
        return False
    return True
