"""kubernetes_asyncio without its 1,600 generated modules until something needs one of them.

The controller reads every answer as raw JSON (`_preload_content=False`) and never builds a
model, yet `import kubernetes_asyncio.client` executes the package's `__init__`, which imports
every API class and every model: about 65 MiB of memory and most of a second of start-up, on
every replica. Here the packages `kubernetes_asyncio`, `kubernetes_asyncio.client`,
`kubernetes_asyncio.client.api` and `kubernetes_asyncio.client.models` are registered as
empty packages that know where their files are, so that the few modules the controller uses
(the configuration, the REST client, five API classes, the kubeconfig loader) import alone.
A package's real `__init__` runs the first time a name it defines is asked for (PEP 562
`__getattr__`; a name that is one of its submodules imports just that submodule), so any
other code in the process, a test that builds a `V1Pod`, still sees the whole library.

Import this module before anything imports kubernetes_asyncio (the CLI does, first); if the
library was imported already, it is used as it is.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from pathlib import Path
from typing import Any

_LAZY = (
    "kubernetes_asyncio",
    "kubernetes_asyncio.client",
    "kubernetes_asyncio.client.api",
    "kubernetes_asyncio.client.models",
)
_lock = threading.RLock()


def _lazy_package(name: str, directory: Path) -> types.ModuleType:
    module = types.ModuleType(name)
    init = directory / "__init__.py"
    module.__file__ = str(init)
    module.__path__ = [str(directory)]
    module.__package__ = name
    module.__spec__ = importlib.util.spec_from_file_location(
        name, init, submodule_search_locations=[str(directory)]
    )
    loaded = False

    def __getattr__(attribute: str) -> Any:
        nonlocal loaded
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        if (directory / f"{attribute}.py").exists() or (directory / attribute).is_dir():
            # `from package import submodule`: that module alone
            return importlib.import_module(f"{name}.{attribute}")
        with _lock:
            if not loaded:
                loaded = True
                code = compile(init.read_text(encoding="utf-8"), str(init), "exec")
                exec(code, module.__dict__)  # the package's own __init__, now that it is needed
        try:
            return module.__dict__[attribute]
        except KeyError:
            raise AttributeError(f"module {name!r} has no attribute {attribute!r}") from None

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    return module


def _install() -> None:
    if "kubernetes_asyncio" in sys.modules:
        return
    spec = importlib.util.find_spec("kubernetes_asyncio")
    if spec is None or spec.origin is None:
        raise ImportError("kubernetes_asyncio is not installed")
    root = Path(spec.origin).parent
    for name in _LAZY:
        directory = root.joinpath(*name.split(".")[1:])
        package = _lazy_package(name, directory)
        sys.modules[name] = package
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, package)


_install()

# what the controller uses, each module alone (the API modules import only these), set on the
# client package so that `client.CoreV1Api` asks for no `__init__`
_client = sys.modules["kubernetes_asyncio.client"]
_USED = {
    "Configuration": ("configuration", "Configuration"),
    "ApiClient": ("api_client", "ApiClient"),
    "CoreV1Api": ("api.core_v1_api", "CoreV1Api"),
    "AppsV1Api": ("api.apps_v1_api", "AppsV1Api"),
    "BatchV1Api": ("api.batch_v1_api", "BatchV1Api"),
    "CustomObjectsApi": ("api.custom_objects_api", "CustomObjectsApi"),
    "CoordinationV1Api": ("api.coordination_v1_api", "CoordinationV1Api"),
}
_client.__dict__["exceptions"] = importlib.import_module("kubernetes_asyncio.client.exceptions")
for _name, (_module, _attribute) in _USED.items():
    if _name not in vars(_client):
        module = importlib.import_module(f"kubernetes_asyncio.client.{_module}")
        setattr(_client, _name, getattr(module, _attribute))

client: Any = _client
config: Any = importlib.import_module("kubernetes_asyncio.config")
