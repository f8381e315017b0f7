"""Grading integrity inside a sandboxed kernel: what student code may not change for the tests.

Student code runs in the same process as the grade cells after it. With IPython's hooks it can
see each later cell's source before it runs (input and AST transformers, `pre_run_cell` events,
a custom compiler), or forge a pass (`set_custom_exc`, `sys.excepthook`, patched builtins such
as `AssertionError`). `install` (called by grader/kernel_child.py before the kernel serves,
before any student code) takes references to all of that; the grader then asks, before each
grade cell, with a message of its own on the shell channel (`GUARD_REQUEST`):

- `check`: compare everything with the references, put back what changed, and say what it was
  (the grader then scores that cell 0, does not run it, and flags the notebook);
- `scrub`: after a cell with hidden tests, forget its source (history, `In`, `_i*`, linecache,
  the last traceback), so later student cells cannot print it.

This is in-process: code that goes through `ctypes` or `gc` to the guard's own references can
defeat it. What holds regardless is on the grader's side (grader/execute.py): a hidden-test cell
contributes only pass/fail and points, never its output text.
"""

from __future__ import annotations

import builtins
import linecache
import sys
import threading
from typing import Any

GUARD_REQUEST = "smartlab_guard_request"
GUARD_REPLY = "smartlab_guard_reply"

# Methods and attributes of the shell whose replacement changes how a cell is compiled, run, or
# how its failure is reported.
SHELL_HOOKS = (
    "run_cell",
    "run_cell_async",
    "_run_cell",
    "run_ast_nodes",
    "run_code",
    "transform_cell",
    "transform_ast",
    "should_run_async",
    "showtraceback",
    "_showtraceback",
    "showsyntaxerror",
    "set_custom_exc",
    "excepthook",
    "compile",
    "custom_exceptions",
    "CustomTB",
    "InteractiveTB",
    "SyntaxTB",
    "events",
    "input_transformer_manager",
    "ast_transformers",
    "input_transformers_post",
    "displayhook",
    "display_pub",
)
# Event callbacks libraries register on honest use (%matplotlib inline, pyplot, widgets,
# %autoreload): kept, not tampering. Everything else added is removed.
ALLOWED_CALLBACK_MODULES = (
    "matplotlib",
    "matplotlib_inline",
    "ipywidgets",
    "IPython.core.pylabtools",
    "IPython.extensions",
)
# Modules whose public callables honest code rebinds (or that the checks above cover).
UNCHECKED_MODULES = {"sys", "builtins", "__main__", "warnings", "__mp_main__"}
SYS_HOOKS = ("excepthook", "displayhook", "breakpointhook", "unraisablehook")
IGNORED_BUILTINS = {"_", "__", "___"}


def _same(a: list[Any], b: list[Any]) -> bool:
    """The same objects in the same order (identity: equality can be faked)."""
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def _callback_module(callback: Any) -> str:
    target = getattr(callback, "__func__", callback)
    module = getattr(target, "__module__", None)
    if module is None and hasattr(callback, "__self__"):
        module = type(callback.__self__).__module__
    return module or ""


def _allowed_callback(callback: Any) -> bool:
    module = _callback_module(callback)
    if type(callback).__name__ in ("builtin_function_or_method", "method-wrapper"):
        return False  # e.g. a list's append: it would keep what it is given
    return any(module == m or module.startswith(m + ".") for m in ALLOWED_CALLBACK_MODULES)


class Guard:
    """References taken before any student code ran, and the check/restore/scrub against them."""

    def __init__(self, shell: Any, kernel: Any) -> None:
        self.shell, self.kernel = shell, kernel
        self.sys_hooks = {name: getattr(sys, name, None) for name in SYS_HOOKS}
        self.builtins = dict(builtins.__dict__)
        self.modules = dict(sys.modules)
        # The public functions and classes of every module loaded so far (numpy.allclose,
        # math.isclose …): a test cell calls them and trusts their answer.
        self.module_attrs = {
            name: {
                k: v for k, v in list(vars(module).items()) if not k.startswith("_") and callable(v)
            }
            for name, module in self.modules.items()
            if module is not None and name not in UNCHECKED_MODULES and hasattr(module, "__dict__")
        }
        self.instance = {n: vars(shell)[n] for n in SHELL_HOOKS if n in vars(shell)}
        self.traits = {n: shell._trait_values[n] for n in SHELL_HOOKS if n in shell._trait_values}
        self.classes = {
            cls: dict(vars(cls))
            for cls in (*type(shell).__mro__, *type(kernel).__mro__)
            if cls is not object
        }
        self.lists = {name: list(value) for name, value in self._lists().items()}
        self.custom_exceptions = shell.custom_exceptions
        self.custom_tb = getattr(shell, "CustomTB", None)
        self.callbacks = {k: list(v) for k, v in shell.events.callbacks.items()}
        self.events = shell.events
        self.transformer_manager = shell.input_transformer_manager
        self.linecache_keys: set[str] = set()
        self.handlers = dict(kernel.shell_handlers)
        self.settrace, self.setprofile = sys.settrace, sys.setprofile
        self.gettrace, self.getprofile = sys.gettrace, sys.getprofile
        self.thread_settrace = threading.settrace
        self.thread_setprofile = threading.setprofile

    def _lists(self) -> dict[str, list[Any]]:
        shell, manager = self.shell, self.shell.input_transformer_manager
        return {
            "ast_transformers": shell.ast_transformers,
            "input_transformers_post": shell.input_transformers_post,
            "input_transformers_cleanup": manager.cleanup_transforms,
            "line_transforms": manager.line_transforms,
            "token_transformers": manager.token_transformers,
        }

    # ---- check and restore

    def check(self) -> list[str]:
        """What student code changed; everything is put back before returning."""
        changed: list[str] = []
        changed += self._restore_sys()
        changed += self._restore_builtins()
        changed += self._restore_shell()
        changed += self._restore_lists()
        changed += self._restore_events()
        for name, module in self.modules.items():
            if sys.modules.get(name, module) is not module:
                sys.modules[name] = module
                changed.append(f"sys.modules[{name!r}]")
        changed += self._restore_module_attrs()
        self.linecache_keys = set(linecache.cache)
        return changed

    def _restore_module_attrs(self) -> list[str]:
        changed = []
        for name, attrs in self.module_attrs.items():
            current = vars(self.modules[name])
            for attr, value in attrs.items():
                if current.get(attr, value) is not value:
                    current[attr] = value
                    changed.append(f"{name}.{attr}")
        return changed

    def _restore_sys(self) -> list[str]:
        changed = []
        for name, value in self.sys_hooks.items():
            if getattr(sys, name, None) is not value:
                setattr(sys, name, value)
                changed.append(f"sys.{name}")
        if self.gettrace() is not None:
            self.settrace(None)
            changed.append("sys.settrace")
        if self.getprofile() is not None:
            self.setprofile(None)
            changed.append("sys.setprofile")
        self.thread_settrace(None)
        self.thread_setprofile(None)
        return changed

    def _restore_builtins(self) -> list[str]:
        changed, current = [], builtins.__dict__
        for name, value in self.builtins.items():
            if name not in IGNORED_BUILTINS and current.get(name, value) is not value:
                current[name] = value
                changed.append(f"builtins.{name}")
            elif name not in current:
                current[name] = value
                changed.append(f"builtins.{name} (deleted)")
        return changed

    def _restore_shell(self) -> list[str]:
        changed, shell = [], self.shell
        state = vars(shell)
        for name in SHELL_HOOKS:
            if name in state and state[name] is not self.instance.get(name, state[name]):
                state[name] = self.instance[name]
                changed.append(f"shell.{name}")
            elif name in state and name not in self.instance:
                del state[name]  # an instance attribute shadowing the class's method
                changed.append(f"shell.{name}")
        for name, value in self.traits.items():
            if shell._trait_values.get(name) is not value:
                shell._trait_values[name] = value
                changed.append(f"shell.{name}")
        if shell.custom_exceptions != self.custom_exceptions:
            state["custom_exceptions"] = self.custom_exceptions
            changed.append("shell.custom_exceptions (set_custom_exc)")
        if getattr(shell, "CustomTB", None) is not self.custom_tb:
            state["CustomTB"] = self.custom_tb
            changed.append("shell.CustomTB (set_custom_exc)")
        for cls, attrs in self.classes.items():
            for name, value in list(vars(cls).items()):
                if attrs.get(name, value) is not value or name not in attrs:
                    changed.append(f"{cls.__name__}.{name}")
                    if name in attrs:
                        setattr(cls, name, attrs[name])
                    else:
                        delattr(cls, name)
        for msg_type, handler in self.handlers.items():
            if self.kernel.shell_handlers.get(msg_type) is not handler:
                self.kernel.shell_handlers[msg_type] = handler
                changed.append(f"kernel.shell_handlers[{msg_type!r}]")
        return changed

    def _restore_lists(self) -> list[str]:
        changed = []
        if self.shell.input_transformer_manager is not self.transformer_manager:
            self.shell.input_transformer_manager = self.transformer_manager
            changed.append("shell.input_transformer_manager")
        for name, current in self._lists().items():
            saved = self.lists[name]
            if not _same(current, saved):
                current[:] = saved
                changed.append(name)
        return changed

    def _restore_events(self) -> list[str]:
        changed = []
        if self.shell.events is not self.events:
            self.shell.events = self.events
            changed.append("shell.events")
        callbacks = self.events.callbacks
        for event, current in list(callbacks.items()):
            saved = self.callbacks.get(event, [])
            kept = [c for c in current if any(c is s for s in saved) or _allowed_callback(c)]
            kept += [s for s in saved if not any(s is c for c in kept)]
            if not _same(kept, current):
                changed.append(f"events[{event!r}]")
                current[:] = kept
        return changed

    # ---- scrub

    def scrub(self, count: int | None) -> None:
        """Forget the source of the cell just run (execution count `count`)."""
        hm = self.shell.history_manager
        if isinstance(count, int) and count > 0:
            for history in (hm.input_hist_parsed, hm.input_hist_raw):
                if count < len(history):
                    history[count] = ""
            with hm.db_input_cache_lock:
                hm.db_input_cache[:] = [e for e in hm.db_input_cache if e[0] != count]
            self.shell.user_ns.pop(f"_i{count}", None)
        for name in ("_i", "_ii", "_iii", "_i00"):
            if hasattr(hm, name):
                setattr(hm, name, "")
            if name in self.shell.user_ns:
                self.shell.user_ns[name] = ""
        for key in set(linecache.cache) - self.linecache_keys:
            linecache.cache.pop(key, None)
        ipython_cache = getattr(linecache, "_ipython_cache", None)
        if isinstance(ipython_cache, dict):
            for key in set(ipython_cache) - self.linecache_keys:
                ipython_cache.pop(key, None)
        for name in ("last_type", "last_value", "last_traceback", "last_exc"):
            if hasattr(sys, name):
                setattr(sys, name, None)
        self.shell.last_execution_result = None
        with_tb = getattr(self.shell, "_last_traceback", None)
        if with_tb is not None:
            self.shell._last_traceback = None

    # ---- the message

    def handle(self, stream: Any, ident: Any, parent: dict[str, Any]) -> None:
        content = parent.get("content", {})
        reply: dict[str, Any] = {"status": "ok", "nonce": content.get("nonce")}
        try:
            if content.get("op") == "scrub":
                self.scrub(content.get("count"))
                reply["changed"] = self.check()
            else:
                reply["changed"] = self.check()
        except Exception as err:  # a broken check is itself a sign of tampering
            reply = {"status": "error", "changed": [f"guard failed: {type(err).__name__}"]}
        self.kernel.session.send(stream, GUARD_REPLY, reply, parent, ident)


def _no_more_audit_hooks(event: str, _args: tuple[Any, ...]) -> None:
    # An audit hook sees every later `compile` (the source of each cell) and cannot be removed:
    # refusing new ones keeps them out (RuntimeError: the hook is silently not added).
    if event == "sys.addaudithook":
        raise RuntimeError("audit hooks are not allowed while grading")


def install(shell: Any, kernel: Any) -> Guard:
    """Take the references and register the guard's message; before any student code runs."""
    guard = Guard(shell, kernel)
    handle = guard.handle  # one bound method: checked by identity
    kernel.shell_handlers[GUARD_REQUEST] = handle
    guard.handlers[GUARD_REQUEST] = handle
    sys.addaudithook(_no_more_audit_hooks)
    return guard
