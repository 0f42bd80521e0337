"""The shipped `.pyi` stubs match the runtime objects, and every public item has a docstring.

Runtime signatures come from the `__text_signature__` PyO3 generates for each function, method
and constructor; stub signatures from parsing `_steward.pyi` with `ast`. Compared: parameter
names, kinds and default values. Also compared: which classes, methods and properties exist.
"""

from __future__ import annotations

import ast
import inspect
import pathlib
import types
from typing import Any

import pytest

import steward
from steward import _steward

STUB = pathlib.Path(_steward.__file__).with_name("_steward.pyi")
#: Dunder methods whose runtime signature is a generic slot wrapper `(self, /, *args, **kwargs)`.
SLOT_METHODS = {"__call__", "__await__", "__eq__", "__ne__"}


def stub_tree() -> ast.Module:
    assert STUB.is_file(), f"the stub {STUB} is not installed"
    return ast.parse(STUB.read_text())


def stub_params(fn: ast.FunctionDef) -> list[tuple[str, str, Any]]:
    """(name, kind, default) for each parameter of a stub function, `self` left out."""
    a = fn.args
    positional = [*a.posonlyargs, *a.args]
    defaults: list[Any] = [inspect.Parameter.empty] * (len(positional) - len(a.defaults))
    defaults += [ast.literal_eval(d) for d in a.defaults]
    out = []
    for i, arg in enumerate(positional):
        kind = "POSITIONAL_ONLY" if i < len(a.posonlyargs) else "POSITIONAL_OR_KEYWORD"
        out.append((arg.arg, kind, defaults[i]))
    if a.vararg:
        out.append((a.vararg.arg, "VAR_POSITIONAL", inspect.Parameter.empty))
    for arg, d in zip(a.kwonlyargs, a.kw_defaults):
        out.append((arg.arg, "KEYWORD_ONLY", inspect.Parameter.empty if d is None else ast.literal_eval(d)))
    if a.kwarg:
        out.append((a.kwarg.arg, "VAR_KEYWORD", inspect.Parameter.empty))
    if out and out[0][0] == "self":
        out = out[1:]
    return out


def runtime_params(obj: Any) -> list[tuple[str, str, Any]]:
    sig = inspect.signature(obj)
    params = [(p.name, p.kind.name, p.default) for p in sig.parameters.values()]
    if params and params[0][0] == "self":
        params = params[1:]
    return params


def is_overload(fn: ast.FunctionDef) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "overload" for d in fn.decorator_list)


def is_property(fn: ast.FunctionDef) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "property" for d in fn.decorator_list)


def stub_classes() -> dict[str, ast.ClassDef]:
    return {n.name: n for n in stub_tree().body if isinstance(n, ast.ClassDef)}


def public_runtime_names(cls: type) -> set[str]:
    return {
        name
        for name, value in vars(cls).items()
        if not name.startswith("_") and not isinstance(value, (str, int))
    }


def test_every_runtime_class_is_in_the_stub() -> None:
    classes = stub_classes()
    runtime = {name for name, obj in vars(_steward).items() if isinstance(obj, type) and not name.startswith("_")}
    internal = {"Runner", "TaskDone"}
    assert runtime - internal - set(classes) == set()
    assert set(classes) - runtime == set()
    for name in steward.__all__:
        assert hasattr(steward, name)


@pytest.mark.parametrize("class_name", sorted(stub_classes()))
def test_class_matches_stub(class_name: str) -> None:
    cls = getattr(_steward, class_name)
    node = stub_classes()[class_name]
    bases = [b.id for b in node.bases if isinstance(b, ast.Name)]
    assert [c.__name__ for c in cls.__bases__] == (bases or ["object"]), (class_name, bases)
    stub_members: set[str] = set()
    for item in node.body:
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            stub_members.add(item.target.id)
        if not isinstance(item, ast.FunctionDef):
            continue
        stub_members.add(item.name)
        if item.name == "__init__":
            assert runtime_params(cls) == stub_params(item), f"{class_name}()"
            continue
        runtime = inspect.getattr_static(cls, item.name)
        if is_property(item):
            assert isinstance(runtime, (property, types.GetSetDescriptorType)), f"{class_name}.{item.name}"
            continue
        if item.name in SLOT_METHODS:
            assert callable(getattr(cls, item.name))
            continue
        if isinstance(runtime, staticmethod):
            runtime = runtime.__func__
        assert runtime_params(runtime) == stub_params(item), f"{class_name}.{item.name}"
    missing = public_runtime_names(cls) - stub_members
    assert missing == set(), f"{class_name} has public members missing from the stub: {missing}"


def test_overloads_agree_with_runtime() -> None:
    node = stub_classes()["Node"]
    overloads = [f for f in node.body if isinstance(f, ast.FunctionDef) and is_overload(f)]
    assert {f.name for f in overloads} == {"send"}
    for fn in overloads:
        assert runtime_params(steward.Node.send) == stub_params(fn)


def test_module_functions_match_stub() -> None:
    for fn in stub_tree().body:
        if isinstance(fn, ast.FunctionDef):
            assert runtime_params(getattr(_steward, fn.name)) == stub_params(fn), fn.name


def test_every_public_item_has_a_docstring() -> None:
    undocumented = []
    for name in steward.__all__:
        obj = getattr(steward, name)
        if not isinstance(obj, type):
            continue
        if not (obj.__doc__ or "").strip():
            undocumented.append(name)
        for member, value in vars(obj).items():
            if member.startswith("_") and member not in {"__init__", "__call__", "__await__"}:
                continue
            if isinstance(value, (str, int)):
                continue
            doc = getattr(value, "__doc__", None)
            if not (doc or "").strip():
                undocumented.append(f"{name}.{member}")
    assert undocumented == []
